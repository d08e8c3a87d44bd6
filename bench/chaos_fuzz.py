"""Fuzzed inputs (issue 12): mutated spec files, damaged idx/npz data, damaged images and
mutated Keras sources, each fed to the real command (``cnnbench.cli.main``), counting
tracebacks, hangs, and refusals that are not one line naming the file.

Each case runs in a worker process (spawned, its address space capped at 6 GiB so that a
memory bomb fails there, not on the machine) with a per-case time limit; a case over it is a
hang, and the worker is replaced. Seeded: the same --seed gives the same files. Run from the
repository root:

    python bench/chaos_fuzz.py [--specs 1000] [--data 200] [--images 100] [--sources 100]
                               [--seed 0] [--timeout 30]

No training beyond a few steps: a data case that survives damage trains a 7,850-parameter
model on 8 images for one epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FAMILIES = ("spec", "data", "image", "source")
MEMORY_CAP = 6 << 30

# --- hostile values and text -----------------------------------------------------------------

HOSTILE = [
    0, -1, 1, 2**31, 2**63, 10**20, 2_000_000_000, 1e308, 1e-308, -0.0, float("inf"),
    float("nan"), True, False, None, "", "x" * 5000, "relu", "same", "../../x", "/tmp/x", "m{}",
    "[/]", "[bold]x", "{0}", "%s", "é", "\x00", "\u202e", [], [1], [1, 2, 3], [[1, 2]], {},
    {"a": 1}, [None], [-1, 2], [0, 0], "1e-7", "0x10", ".nan",
]
YAML_JUNK = ["&a", "*a", "!!python/object:os.system", "!!binary x", "[[[[[[", "]]", "{", "}",
             ": :", "\t", "- - -", "? ", "%YAML 1.1\n", "---\n", "...\n", "|\n", ">-\n", "\x00",
             "\ufeff", "\u2028", "'", '"', "#", "@", "`", "!", "\\", "2001-13-45", "0o777",
             "1_000", "~", "<<: *a", "&a [*a]", "99999999999999999999999", "1e999", "-.inf"]
NAMES = ["CNN_MNIST_2[activation=relu,norm=none]", "../../escape", "/abs/path", "m{}", "x[/]",
         "net[red]", "True", "null", ".hidden", "-rf", "a b", "é", "x" * 101, "ok_name"]


def _base_specs() -> list[str]:
    from importlib import resources
    root = resources.files("cnnbench") / "specs"
    texts = [p.read_text() for p in sorted(root.iterdir(), key=lambda p: p.name)
             if p.name.endswith(".yaml")]
    texts.append("name: small\ninput_shape: [28, 28, 1]\ndescription: a tiny one\nlayers:\n"
                 "  - Conv2D: {filters: 4, kernel_size: 3, padding: same}\n"
                 "  - AveragePooling2D: {pool_size: 2}\n  - GlobalAveragePooling2D\n"
                 "  - Dropout: {rate: 0.25}\n  - Dense: {units: 10, activation: softmax}\n")
    return texts


def _random_value(rng: random.Random):
    v = rng.choice(HOSTILE)
    if rng.random() < 0.1:
        return [v] * rng.randint(2, 50)
    return v


def _mutate_tree(rng: random.Random, data):
    """One structural change of a parsed spec."""
    if not isinstance(data, dict):
        return _random_value(rng)
    data = json.loads(json.dumps(data, default=str))
    layers = data.get("layers") if isinstance(data.get("layers"), list) else []
    op = rng.randrange(9)
    if op == 0:
        data["name"] = rng.choice(NAMES)
    elif op == 1 and layers:
        layer = rng.choice(layers)
        if isinstance(layer, dict) and layer:
            kind = next(iter(layer))
            args = layer[kind] if isinstance(layer[kind], dict) else {}
            key = rng.choice([*args, "units", "filters", "kernel_size", "strides", "rate",
                              "pool_size", "padding", "activation", "use_bias", "bogus"])
            args[key] = _random_value(rng)
            layer[kind] = args
    elif op == 2 and layers:
        layers.insert(rng.randrange(len(layers) + 1), rng.choice(
            ["Flatten", {"Dense": {"units": 10}}, {"BatchNormalization": None},
             {"Conv2D": {"filters": 1_000_000, "kernel_size": 1}}, {"Nope": {}}, "Dropout",
             {"MaxPooling2D": {"pool_size": 50}}, {"Dense": {"units": 2_000_000_000,
                                                             "activation": "softmax"}}]))
    elif op == 3 and layers:
        del layers[rng.randrange(len(layers))]
    elif op == 4:
        data["input_shape"] = _random_value(rng)
    elif op == 5:
        data[rng.choice(["description", "extra", "layers", "name"])] = _random_value(rng)
    elif op == 6 and layers:
        data["layers"] = layers * rng.choice([2, 50, 500])
    elif op == 7:
        data.pop(rng.choice(["name", "input_shape", "layers"]), None)
    else:
        data["description"] = {"deep": [[[[["x"] * 3] * 3] * 3] * 3]}
    return data


def _mutate_text(rng: random.Random, text: str) -> str:
    """One textual change: characters, lines, YAML junk, truncation."""
    op = rng.randrange(6)
    i = rng.randrange(len(text) + 1)
    if op == 0:
        return text[:i] + rng.choice(YAML_JUNK) + text[i:]
    if op == 1:
        return text[:i]
    if op == 2:
        j = min(len(text), i + rng.randint(1, 20))
        return text[:i] + text[j:]
    if op == 3:
        lines = text.splitlines(keepends=True)
        k = rng.randrange(len(lines))
        return "".join(lines[:k] + [lines[k]] * rng.randint(2, 5) + lines[k:])
    if op == 4:
        return text[:i] + chr(rng.randrange(0x20, 0x2FFF)) + text[i:]
    return "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 8)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)
    ) + text.replace("layers:", "description: *g\nlayers:", 1)


def make_spec(rng: random.Random, path: Path) -> None:
    import yaml

    from cnnbench.model.spec import SpecError, parse_yaml
    text = rng.choice(_base_specs())
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            try:  # cnnbench's loader: plain safe_load would expand an alias bomb made earlier
                data = parse_yaml(text, "fuzz")
            except SpecError:
                data = None
            text = yaml.safe_dump(_mutate_tree(rng, data), sort_keys=False,
                                  allow_unicode=True)
        else:
            text = _mutate_text(rng, text)
    path.write_bytes(text.encode("utf-8", "surrogatepass")
                     if rng.random() < 0.95 else b"\xff\xfe" + rng.randbytes(40))


# --- data files ------------------------------------------------------------------------------

IDX = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
       "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _idx(a: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _damage(rng: random.Random, raw: bytes) -> bytes:
    op = rng.randrange(7)
    if op == 0:
        return raw[:rng.randrange(len(raw))]
    if op == 1:
        b = bytearray(raw)
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if op == 2:
        return raw + rng.randbytes(rng.randint(1, 300))
    if op == 3:
        return b""
    if op == 4:
        return rng.randbytes(rng.randint(1, 64))
    if op == 5:
        i = rng.randrange(len(raw))
        return raw[:i] + bytes(rng.randint(1, 50)) + raw[i:]
    b = bytearray(raw)
    i = rng.randrange(min(len(b), 64))
    b[i:i + 4] = rng.randbytes(4)
    return bytes(b)


def make_data(rng: random.Random, folder: Path) -> str:
    """A tiny 28x28 dataset, one file of which is damaged; returns the damaged file's name."""
    gen = np.random.default_rng(rng.randrange(2**32))
    arrays = {"x_train": gen.integers(0, 256, (16, 28, 28), np.uint8),
              "y_train": np.arange(16, dtype=np.uint8) % 10,
              "x_test": gen.integers(0, 256, (6, 28, 28), np.uint8),
              "y_test": np.arange(6, dtype=np.uint8) % 10}
    folder.mkdir(parents=True)
    kind = rng.choice(["idx", "gz", "npz"])
    victim = rng.choice(list(IDX))
    if kind == "npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays) if rng.random() < 0.5 else np.savez(buf, **arrays)
        raw = buf.getvalue()
        op = rng.randrange(4)
        if op == 0:
            raw = _damage(rng, raw)
        else:  # a member with a lying or hostile npy header
            out = io.BytesIO()
            with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(out, "w") as zout:
                for name in zin.namelist():
                    data = zin.read(name)
                    if name.startswith(victim):
                        shape = rng.choice([(10**6, 10**5, 10**5), (2**40,), (-1, 28, 28),
                                            (16, 28), (0, 28, 28), (16, 28, 28, 1)])
                        descr = rng.choice(["|u1", "<f8", "|O", "<i8", "|u1"])
                        header = repr({"descr": descr, "fortran_order": rng.random() < 0.2,
                                       "shape": shape}).encode()
                        header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
                        data = (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                                + (data[128:] if op == 1 else bytes(rng.randint(0, 4000))))
                    if op == 3 and name.startswith(victim):
                        continue  # a missing member
                    zout.writestr(name, data)
            raw = out.getvalue()
        (folder / "data.npz").write_bytes(raw)
        return "data.npz"
    for key, stem in IDX.items():
        raw = _idx(arrays[key])
        if key == victim:
            op = rng.randrange(3)
            if op == 0:
                raw = _damage(rng, raw)
            elif op == 1:  # a lying header
                ndim = 3 if key.startswith("x") else 1
                dims = [rng.choice([0, 1, 16, 28, 2**31, 2**32 - 1]) for _ in range(ndim)]
                raw = struct.pack(">HBB", 0, 8, ndim) + struct.pack(f">{ndim}I", *dims) + raw[
                    4 + 4 * ndim:]
            else:
                raw = raw[:rng.randrange(20)]
        name = stem
        if kind == "gz":
            if key == victim and rng.random() < 0.3:  # a gzip bomb: zeros past the header
                z = zlib.compressobj(9, zlib.DEFLATED, 31)
                raw = z.compress(raw) + z.compress(bytes(64 << 20)) + z.flush()
            else:
                raw = gzip.compress(raw)
                if key == victim and rng.random() < 0.5:
                    raw = _damage(rng, raw)
            name += ".gz"
        (folder / name).write_bytes(raw)
        if key == victim:
            victim_name = name
    return victim_name


# --- images ----------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def make_image(rng: random.Random, path: Path) -> Path:
    from PIL import Image
    side = rng.choice([1, 2, 28, 40, 300])
    a = np.zeros((side, side), np.uint8)
    a[side // 4: 3 * side // 4 + 1, side // 2: side // 2 + max(1, side // 8)] = 255
    if rng.random() < 0.3:
        a = 255 - a
    mode = rng.choice(["L", "RGB", "RGBA", "P", "1", "I;16", "CMYK", "LA", "F"])
    fmt = rng.choice(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
    im = Image.fromarray(a)
    try:
        im = im.convert(mode)
        buf = io.BytesIO()
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        fmt = "PNG"
    raw = buf.getvalue()
    op = rng.randrange(5)
    if op in (0, 1):
        raw = _damage(rng, raw)
    elif op == 2:
        raw = _png_header(rng.choice([0, 1, 40_000, 100_000, 6000, 2**31 - 1]),
                          rng.choice([0, 1, 40_000, 5000, 2**31 - 1]))
    path = path.with_suffix("." + fmt.lower())
    path.write_bytes(raw)
    return path


# --- Keras sources ---------------------------------------------------------------------------

SOURCES = [
    "from keras.models import Sequential\nfrom keras.layers import Dense, Conv2D, Flatten, "
    "MaxPooling2D, Dropout\nnum_classes = 10\ninput_shape = (28, 28, 1)\n"
    "model = Sequential()\nmodel.add(Conv2D(32, kernel_size=(3, 3), activation='relu', "
    "input_shape=input_shape))\nmodel.add(Conv2D(64, (3, 3), activation='relu'))\n"
    "model.add(MaxPooling2D(pool_size=(2, 2)))\nmodel.add(Dropout(0.25))\nmodel.add(Flatten())\n"
    "model.add(Dense(128, activation='relu'))\nmodel.add(Dense(num_classes, "
    "activation='softmax'))\n",
    "import keras\nmodel = keras.Sequential([keras.Input(shape=(28, 28, 1)), "
    "keras.layers.Conv2D(8, 3, padding='same'), keras.layers.BatchNormalization(), "
    "keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation='softmax')])\n",
]
SNIPPETS = ["x = 1.5 * 1" + "0" * 400, "n0 = 3\n" + "".join(
    f"n{k} = n{k - 1} * n{k - 1}\n" for k in range(1, 40)), "Input(5)", "Dense(**kw)",
    "model.add(Dense(10 ** 10))", "z = " + "+".join(["1"] * 1500), "z = " + "-" * 50_000 + "1",
    "z = " + "(" * 300 + "1" + ")" * 300, "model = Sequential(layers)", "for i in range(3):\n"
    "    model.add(Dense(i))", "%matplotlib inline", "!pip install x", "def f(:", "\x00",
    "y = 1" + "0" * 5000, "model.add(Conv2D(filters=1e400, kernel_size=3))", "Sequential = 3",
    "model.add(Dense(num_classes, activation=tf.nn.softmax))", "model.add('Dense')",
    "model.add(Dense(10), Dense(3))", "other.add(Dense(3))", "num_classes = -10"]


def make_source(rng: random.Random, path: Path) -> Path:
    code = rng.choice(SOURCES)
    lines = code.splitlines()
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        i = rng.randrange(len(lines) + 1)
        if op == 0:
            lines.insert(i, rng.choice(SNIPPETS))
        elif op == 1 and lines:
            del lines[rng.randrange(len(lines))]
        elif op == 2 and lines:
            k = rng.randrange(len(lines))
            line = lines[k]
            j = rng.randrange(len(line) + 1)
            lines[k] = line[:j] + rng.choice(["(", ")", ",", "10**", " * 1e308", "'", "\\"]) \
                + line[j:]
        else:
            lines = [ln.replace("10", rng.choice(["1" + "0" * 30, "num", "-1", "0", "2.5"]))
                     for ln in lines]
    code = "\n".join(lines) + "\n"
    kind = rng.choice(["py", "ipynb", "md"])
    if kind == "py":
        path = path.with_suffix(".py")
        path.write_text(code)
    elif kind == "md":
        path = path.with_suffix(".md")
        heading = rng.choice(["# True", "# null", "# Modèle", "# on", "Model_A", "# ../x"])
        path.write_text(f"{heading}\n\n```python\n{code}```\n")
    else:
        path = path.with_suffix(".ipynb")
        cells = [{"cell_type": "markdown", "source": [rng.choice(["# True", "# A b"])]},
                 {"cell_type": "code", "source": code.splitlines(keepends=True)}]
        nb: object = {"cells": cells}
        op = rng.randrange(6)
        if op == 0:
            cells.append(rng.choice(["text", 5, None, [1]]))
        elif op == 1:
            nb = {"cells": rng.choice([5, "x", None, {"a": 1}])}
        elif op == 2:
            nb = rng.choice([[], "x", 3])
        text = json.dumps(nb)
        path.write_text(text if rng.random() < 0.8 else text[:rng.randrange(len(text))])
    return path


# --- running one case ------------------------------------------------------------------------

@dataclass
class Outcome:
    family: str
    case: int
    kind: str  # accepted | refused | bad-refusal | traceback | hang
    detail: str = ""


@dataclass
class Table:
    rows: dict[str, Counter] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        self.rows.setdefault(o.family, Counter())[o.kind] += 1
        self.samples.setdefault(o.kind, []).append(f"{o.family} #{o.case}: {o.detail}")

    def total(self, kind: str) -> int:
        return sum(c[kind] for c in self.rows.values())


def _tiny_weights(folder: Path) -> Path:
    import torch

    from cnnbench.model.build import build_model
    from cnnbench.model.spec import build_spec
    from cnnbench.model.weights import save_weights
    spec = build_spec({"name": "tiny", "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]})
    torch.manual_seed(0)
    return save_weights(folder / "tiny.safetensors", build_model(spec), spec,
                        tuple(str(i) for i in range(10)), "mnist")


def _prepare(family: str, case: int, seed: int, work: Path) -> tuple[list[str], list[str]]:
    """The command line of one case and the names its refusal must mention (any of them)."""
    rng = random.Random(f"{seed}-{family}-{case}")
    d = work / f"{family}-{case}"
    d.mkdir()
    if family == "spec":
        path = d / "spec.yaml"
        make_spec(rng, path)
        return ["summary", str(path)], [str(path)]
    if family == "data":
        victim = make_data(rng, d / "data")
        spec = d / "tiny.yaml"
        spec.write_text("name: tiny\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten\n"
                        "  - Dense: {units: 10, activation: softmax}\n")
        return (["run", str(spec), "--dataset", "custom", "--data-dir", str(d / "data"),
                 "--epochs", "1", "--batch-size", "8", "--train-limit", "8", "--out",
                 str(d / "out"), "--store", str(d / "store")],
                # Damaged labels can make a dataset of 245 classes: then the spec is refused.
                [victim, str(d / "data"), str(spec)])
    if family == "image":
        weights = work / "tiny.safetensors"
        if not weights.exists():
            _tiny_weights(work)
        path = make_image(rng, d / "image")
        return ["predict", str(weights), str(path)], [str(path)]
    path = make_source(rng, d / "model")
    return ["import-keras", str(path), "--out", str(d / "specs")], [str(path)]


def _classify(family: str, case: int, code: int, err: str, names: list[str]) -> Outcome:
    if code == 0:
        return Outcome(family, case, "accepted")
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    other = [ln for ln in err.splitlines() if ln and ": error: " not in ln
             and not ln.startswith("data: ")]
    ok = (len(errors) == 1 and not other and "\n" not in errors[0]
          and any(n in errors[0] for n in names))
    if family == "source" and code == 1 and not errors:
        ok = True  # import-keras: models found, some not translated; each problem on stdout
    if ok:
        return Outcome(family, case, "refused", errors[0] if errors else "")
    return Outcome(family, case, "bad-refusal", f"exit {code}: {err.strip()[:300]!r}")


def _worker(conn, seed: int, work: str) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    os.environ.pop("CNNBENCH_DATA_DIR", None)
    from cnnbench.cli import main
    while True:
        msg = conn.recv()
        if msg is None:
            return
        family, case = msg
        argv, names = _prepare(family, case, seed, Path(work))
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - the very thing counted
            tb = traceback.format_exception(e)
            conn.send(Outcome(family, case, "traceback",
                              f"{type(e).__name__}: {str(e)[:200]} at "
                              f"{tb[-2].strip().splitlines()[0] if len(tb) > 1 else '?'}"))
            continue
        conn.send(_classify(family, case, code, err.getvalue(), names))


class Runner:
    """A spawned worker with a per-case time limit; replaced after a hang or a crash."""

    def __init__(self, seed: int, work: Path, timeout: float) -> None:
        self.seed, self.work, self.timeout = seed, work, timeout
        self.ctx = mp.get_context("spawn")
        self.proc = None

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.seed, str(self.work)),
                                     daemon=True)
        self.proc.start()

    def run(self, family: str, case: int) -> Outcome:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((family, case))
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        else:
            self.close()
            return Outcome(family, case, "hang", f"over {self.timeout:g} s")
        code = self.proc.exitcode
        self.proc = None
        return Outcome(family, case, "traceback", f"the worker died (exit code {code})")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None


def fuzz(counts: dict[str, int], seed: int = 0, timeout: float = 30.0,
         log=print) -> Table:
    """Run every case; the table of outcomes per family."""
    table = Table()
    with tempfile.TemporaryDirectory(prefix="cnnbench-fuzz-") as tmp:
        runner = Runner(seed, Path(tmp), timeout)
        try:
            for family in FAMILIES:
                start = time.perf_counter()
                for case in range(counts.get(family, 0)):
                    table.add(runner.run(family, case))
                log(f"{family}: {counts.get(family, 0)} cases in "
                    f"{time.perf_counter() - start:.1f} s")
        finally:
            runner.close()
    return table


def format_table(table: Table, show: tuple[str, ...] = ("bad-refusal", "traceback", "hang"),
                 per_kind: int = 10) -> str:
    kinds = ("accepted", "refused", "bad-refusal", "traceback", "hang")
    head = f"{'inputs':<8}{'cases':>7}" + "".join(f"{k:>13}" for k in kinds)
    lines = [head, "-" * len(head)]
    for family in FAMILIES:
        c = table.rows.get(family)
        if c:
            lines.append(f"{family:<8}{sum(c.values()):>7}" + "".join(f"{c[k]:>13}"
                                                                  for k in kinds))
    for kind, samples in table.samples.items():
        if kind in show:
            lines.append(f"\n{kind} ({len(samples)}):")
            lines += [f"  {s[:300]}" for s in samples[:per_kind]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", type=int, default=1000)
    p.add_argument("--data", type=int, default=200)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--sources", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take")
    p.add_argument("--show-refusals", type=int, default=0, metavar="N",
                   help="also print N refusal lines, to read what users would see")
    a = p.parse_args(argv)
    counts = {"spec": a.specs, "data": a.data, "image": a.images, "source": a.sources}
    table = fuzz(counts, a.seed, a.timeout, log=lambda m: print(m, file=sys.stderr))
    shown = ("bad-refusal", "traceback", "hang") + (("refused",) if a.show_refusals else ())
    print(format_table(table, shown, max(10, a.show_refusals)))
    bad = table.total("traceback") + table.total("hang") + table.total("bad-refusal")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
