"""Fuzzed inputs through the real command (``cnnbench.cli.main``): mutated spec files,
damaged idx/npz data, damaged images, mutated Keras sources, study files with ablations and
claims, packs whose checksums are valid but whose contents are hostile, export targets, store
paths, and huge numbers wherever a number is read. Counted: tracebacks, hangs, refusals that
are not one line, and breaches of the property every command keeps: nothing is written outside
--out, --store and the current folder, and no finished run's files change except by ``rm`` or
``--force`` (every file of the case's folders and of the shared template is hashed before and
after each case).

Each case runs in a worker process (spawned, its address space capped at 6 GiB so that a
memory bomb fails there, not on the machine) with a per-case time limit; a case over it is a
hang, and the worker is replaced. The worker's peak resident memory is reset before each case
(``/proc/self/clear_refs``) and read after it. Seeded: the same --seed gives the same files.
Run from the repository root:

    python bench/chaos_fuzz.py [--specs 1000] [--data 200] [--images 100] [--sources 100]
                               [--studies 300] [--packs 100] [--exports 60] [--stores 100]
                               [--numbers 150] [--seed 0] [--timeout 30]

No training beyond a few steps: a case that trains does so on at most 32 images of 28x28 for
one epoch (a hostile epoch count that is accepted shows up as a hang).
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
import shutil
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

FAMILIES = ("spec", "data", "image", "source", "study", "pack", "export", "store", "number")
# Each family's row in the output, and the option that sets its count.
OPTIONS = {"spec": "specs", "data": "data", "image": "images", "source": "sources",
           "study": "studies", "pack": "packs", "export": "exports", "store": "stores",
           "number": "numbers"}
DEFAULT_COUNTS = {"spec": 1000, "data": 200, "image": 100, "source": 100, "study": 300,
                  "pack": 100, "export": 60, "store": 100, "number": 150}
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
        elif op == 3:  # a code cell whose source is numbers, not text
            cells[1]["source"] = rng.choice([[1, 2, 3], [1.5, None], 7, [[1]]])
        text = json.dumps(nb)
        path.write_text(text if rng.random() < 0.8 else text[:rng.randrange(len(text))])
    return path


# --- the shared template: a tiny dataset, a store holding one finished run, its pack --------

TINY_SPEC = ("name: tiny\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten\n"
             "  - Dense: {units: 10, activation: softmax}\n")
CONV_SPEC = ("name: conv\ninput_shape: [28, 28, 1]\nlayers:\n"
             "  - Conv2D: {filters: 4, kernel_size: 3, activation: relu}\n"
             "  - MaxPooling2D: {pool_size: 2}\n  - Conv2D: {filters: 4, kernel_size: 3}\n"
             "  - Activation: {activation: relu}\n  - BatchNormalization\n  - Flatten\n"
             "  - Dense: {units: 8, activation: relu}\n  - Dropout: {rate: 0.25}\n"
             "  - Dense: {units: 10, activation: softmax}\n")
# Options that make any `run` of a case train one epoch on 32 images of the template's data.
TINY_RUN = ["--dataset", "custom", "--epochs", "1", "--batch-size", "8", "--seeds", "1"]


def _quiet_main(argv: list[str]) -> int:
    from cnnbench.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def template(work: Path) -> Path:
    """``work/template`` (built once, by whichever worker needs it first): ``data/`` (idx files
    of 32 + 8 random 28x28 images), ``tiny.yaml``, ``conv.yaml``, ``store/`` with one finished
    run of tiny, ``pack.tar.gz`` of that run. Built beside and renamed, so a worker killed
    while building leaves no half template."""
    tpl = work / "template"
    if tpl.is_dir():
        return tpl
    tmp = work / f"template.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    gen = np.random.default_rng(0)
    (tmp / "data").mkdir(parents=True)
    arrays = {"x_train": gen.integers(0, 256, (32, 28, 28), np.uint8),
              "y_train": np.arange(32, dtype=np.uint8) % 10,
              "x_test": gen.integers(0, 256, (8, 28, 28), np.uint8),
              "y_test": np.arange(8, dtype=np.uint8) % 10}
    for key, stem in IDX.items():
        (tmp / "data" / stem).write_bytes(_idx(arrays[key]))
    (tmp / "tiny.yaml").write_text(TINY_SPEC)
    (tmp / "conv.yaml").write_text(CONV_SPEC)
    code = _quiet_main(["run", "--models", str(tmp / "tiny.yaml"), *TINY_RUN, "--data-dir",
                        str(tmp / "data"), "--out", str(tmp / "results"), "--store",
                        str(tmp / "store")])
    code = code or _quiet_main(["pack", "--out", str(tmp / "pack.tar.gz"), "--store",
                                str(tmp / "store")])
    if code:
        raise RuntimeError(f"the fuzz template could not be built (exit {code})")
    os.replace(tmp, tpl)
    return tpl


def template_run(tpl: Path) -> str:
    """The id of the template store's one finished run."""
    return next(p.name for p in (tpl / "store" / "runs").iterdir())


# --- huge numbers ---------------------------------------------------------------------------

HUGE = [10**23, 2**63, 2**64, -(2**63) - 1, 10**400, float("inf"), float("-inf"), float("nan"),
        1e308, -1, 0, 2**31, 10**9, 1e-320]
HUGE_TEXT = ["1e23", "100000000000000000000000", "1e400", "inf", "nan", "-1", "0",
             "9223372036854775808", "1" + "0" * 400, "0x10", "1_000", "-0", "1e-400", "+inf"]


def _huge(rng: random.Random):
    return rng.choice(HUGE)


def _yaml(data) -> str:
    """YAML of ``data``; floats too large for YAML's float (1e400 as an int, inf) written as
    YAML writes them (.inf, or the long integer)."""
    import yaml
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# --- study files with ablations and claims ---------------------------------------------------

ABLATIONS = [
    {"name": "act", "base": "conv.yaml", "design": "factorial", "factors": {
        "activation": {"set": "activation", "layers": "hidden", "levels": ["relu", "sigmoid"]},
        "width": {"scale": "hidden", "levels": [1, 2]}}},
    {"name": "norm", "base": "conv.yaml", "design": "ofat", "factors": {
        "norm": {"replace": "BatchNormalization#1", "levels": {
            "batchnorm": {"BatchNormalization": {}}, "dropout": {"Dropout": {"rate": 0.5}},
            "none": None}},
        "lr": {"training": "learning_rate", "levels": [1.0, 0.1]}}},
    {"name": "depth", "base": "conv.yaml", "design": "factorial", "factors": {
        "depth": {"repeat": [3, 4], "levels": {"one": 1, "two": 2}},
        "extra": {"insert_after": 6, "levels": {"no": None, "drop": {"Dropout": {"rate": 0.1}}}}}},
    {"name": "notebook", "base": "CNN_MNIST_2", "design": "ofat", "factors": {
        "activation": {"set": "activation", "layers": "hidden", "levels": ["relu", "sigmoid"]},
        "batch": {"training": "batch_size", "levels": [8, 16]}}},
]
CLAIMS = [
    {"name": "c1", "says": "sigmoid is worse", "ablation": "act", "factor": "activation",
     "expect": "lower", "level": "sigmoid", "than": ["relu"]},
    {"name": "c2", "says": "dropout is worst", "ablation": "norm", "factor": "norm",
     "expect": "lower", "level": "dropout", "than": ["batchnorm", "none"]},
]
SELECTORS = ["hidden", "Conv2D", "Conv2D#0", "Conv2D#1", "Conv2D#-1", "Dense#99", 0, -1, 99,
             [1, 1], [], "Flatten", "Nope", "Dense#1.5", 10**23, None, "", "*"]
TRAINING_KEYS = ["epochs", "batch_size", "seeds", "train_limit", "validation_split",
                 "early_stopping", "optimizer", "loss"]


def _study_base(rng: random.Random) -> dict:
    import copy
    ablations = copy.deepcopy(rng.sample(ABLATIONS, rng.randint(1, 2)))
    names = {a["name"] for a in ablations}
    claims = [copy.deepcopy(c) for c in CLAIMS if c["ablation"] in names]
    study = {"name": "fuzz-study", "description": "a fuzzed study",
             "training": {"epochs": 1, "seeds": [0], "batch_size": 8,
                          "validation_split": 0.25},
             "ablations": ablations}
    if claims:
        study["claims"] = claims
    return study


def _mutate_factor(rng: random.Random, factor: dict) -> None:
    kind = next((k for k in factor if k not in ("levels", "layers", "base")), None)
    op = rng.randrange(7)
    if op == 0 and kind:
        factor[kind] = rng.choice(SELECTORS)
    elif op == 1:
        factor["levels"] = rng.choice([[], [1], [1, 1], ["a", "a"], {"x": 1, "y": 1},
                                       [float("inf"), 1], [10**400, 1], "relu", None,
                                       {"a": {"Nope": {}}, "b": None}, [[1], [2]]])
    elif op == 2:
        factor["layers"] = rng.choice(SELECTORS)
    elif op == 3:
        factor["base"] = rng.choice(["nope", 0, None, "relu", 1])
    elif op == 4:
        factor.clear()
        factor.update(rng.choice([{"scale": "Flatten", "levels": [1, 2]},
                                  {"scale": "hidden", "levels": [0.5, float("inf")]},
                                  {"scale": "hidden", "levels": [1, 10**23]},
                                  {"repeat": [3, 4], "levels": {"a": 1, "b": 10**9}},
                                  {"repeat": [4, 3], "levels": [0, 1]},
                                  {"set": "filters", "layers": "Conv2D", "levels": [4, 10**23]},
                                  {"set": "padding", "layers": "Conv2D", "levels": ["valid",
                                                                                  10**30]},
                                  {"training": "epochs", "levels": [1, 10**23]},
                                  {"training": "learning_rate", "levels": [1.0, 10**400]},
                                  {"training": "optimizer", "levels": ["Adam", {"Nope": {}}]},
                                  {"layers": []}, {"set": "activation", "levels": []}]))
    elif op == 5:
        factor[rng.choice(["bogus", "levels", kind or "set"])] = _random_value(rng)
    else:
        factor.pop(rng.choice(list(factor) or ["levels"]), None)


def _mutate_claim(rng: random.Random, claim: dict) -> None:
    op = rng.randrange(5)
    if op == 0:
        claim["ablation"] = rng.choice([["act"], "nope", None, 5, {"a": 1}])
    elif op == 1:
        claim["than"] = rng.choice([[claim.get("level")], [], "relu", [None], ["x" * 300]])
    elif op == 2:
        claim[rng.choice(["expect", "factor", "level", "name", "says"])] = _random_value(rng)
    elif op == 3:
        claim["says"] = rng.choice(["<script>alert(1)</script>", "<b>bold</b> & x", "\x00",
                                    "x" * 20000, "[red]markup[/red]"])
    else:
        claim.pop(rng.choice(list(claim)), None)


def _mutate_study(rng: random.Random, study: dict) -> None:
    import copy
    ablations = [a for a in study.get("ablations") or [] if isinstance(a, dict)] \
        if isinstance(study.get("ablations"), list) else []
    claims = [c for c in study.get("claims") or [] if isinstance(c, dict)] \
        if isinstance(study.get("claims"), list) else []
    op = rng.randrange(9)
    if op <= 2 and ablations:
        factors = rng.choice(ablations).get("factors")
        factor = factors[rng.choice(list(factors))] if isinstance(factors, dict) and \
            factors else None
        if isinstance(factor, dict):
            _mutate_factor(rng, factor)
    elif op == 3 and claims:
        _mutate_claim(rng, rng.choice(claims))
    elif op == 4 and ablations:  # two architectures under one name: same names, other edits
        twin = copy.deepcopy(ablations[0])
        for f in (twin.get("factors") or {}).values() if isinstance(twin.get("factors"),
                                                                     dict) else ():
            if isinstance(f, dict) and "scale" in f:
                f["scale"] = "Conv2D"
            elif isinstance(f, dict) and "set" in f:
                f["layers"] = "Dense#-1"
        study["ablations"].append(twin)
    elif op == 5 and isinstance(study.get("training"), dict):
        study["training"][rng.choice(TRAINING_KEYS)] = _huge(rng) if rng.random() < 0.6 \
            else _random_value(rng)
    elif op == 6 and ablations:
        a = rng.choice(ablations)
        a[rng.choice(["base", "design", "factors", "name"])] = _random_value(rng)
    elif op == 7:
        study[rng.choice(["ablations", "claims", "models", "dataset", "training"])] = \
            _random_value(rng)
    elif ablations:
        study["ablations"].append(copy.deepcopy(ablations[0]))  # the same ablation twice


def make_study(rng: random.Random, folder: Path, tpl: Path) -> Path:
    """A study file with ablations and claims of ``conv.yaml`` (copied beside it), mutated."""
    shutil.copy(tpl / "conv.yaml", folder / "conv.yaml")
    study = _study_base(rng)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):  # some stay valid: the deep paths
        _mutate_study(rng, study)
    text = _yaml(study)
    if rng.random() < 0.1:  # numbers YAML reads as floats too large for one
        text = text.replace("epochs: 1", "epochs: 1.0e+400", 1).replace(
            "- 0.1", "- 1.0e+400", 1)
    if rng.random() < 0.1:
        text = _mutate_text(rng, text)
    path = folder / "study.yaml"
    path.write_text(text)
    return path


# --- packs: valid checksums, hostile contents -------------------------------------------------

def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


HISTORY = b"epoch,loss,acc,val_loss,val_acc,seconds\n"
PACK_FILES = {
    "history.csv": [b"", b"garbage\x00\xff", b"epoch,loss\n1,nan\n", b"epoch\n" * 5000,
                    HISTORY + b"1,1e400,inf,-1,2,1\n",
                    HISTORY + b"99999999999999999999,1,1,1,1,1\n",
                    HISTORY + b"1,0.5,0.5,0.5,0.5\n", HISTORY + b"2,1,1,1,1,1\n1,1,1,1,1,1\n",
                    HISTORY + b"1,x,1,1,1,1\n", HISTORY, HISTORY + b"1,1,1,1,1,1,1,1\n"],
    "predictions.npy": [_npy(np.zeros(3, np.int64)), _npy(np.full(8, 200, np.uint8)),
                        _npy(np.zeros((8, 2), np.uint8)), b"not npy", _npy(np.zeros(8, "<f8")),
                        _npy(np.array(["a"] * 8))],
    "probabilities.npy": [_npy(np.full((8, 10), np.nan, np.float32)), _npy(np.zeros(8)),
                          b"\x93NUMPY\x01\x00\xff\xff" + b" " * 60],
    "grad_norms.json": [b"not json", b'["a", "b"]', b"1e999", b"[" * 5000, b'{"a": {"b": []}}',
                        b"[Infinity, NaN]"],
    "weights.safetensors": [b"", b"PK\x03\x04 a zip", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"],
}
ROW_VALUES = [-1, 0, 10**23, 2**64, float("inf"), float("nan"), None, "x", [], {}, True, -(10**30)]


def _mutate_pack(rng: random.Random, manifest: dict, members: dict[str, bytes]) -> None:
    """One hostile change of a pack's manifest or files; checksums are fixed afterwards."""
    entry = manifest["runs"][0]
    rid = entry["id"]
    op = rng.randrange(7)
    if op <= 1:
        name = rng.choice(list(PACK_FILES))
        members[f"runs/{rid}/{name}"] = rng.choice(PACK_FILES[name])
        entry["files"].setdefault(name, {"sha256": "", "bytes": 0})
    elif op == 2:
        entry["row"][rng.choice(list(entry["row"]))] = rng.choice(ROW_VALUES)
    elif op == 3:
        entry["files"] = rng.choice([list(entry["files"]), {k: "x" for k in entry["files"]},
                                     None, {}])
    elif op == 4:
        manifest[rng.choice(["runs", "version", "format"])] = _random_value(rng)
    elif op == 5:
        _mutate_config(rng, manifest, members)
    else:  # a second run, trained the same but for a seed SQLite cannot hold
        _second_run(rng, manifest, members)


def _rekey(manifest: dict, members: dict[str, bytes], entry: dict, config: dict) -> None:
    """Store ``config`` in ``entry``'s run under the id its run key hashes to, so the pack
    passes the key check and what is inside it is what gets tested."""
    from cnnbench.store.run_store import run_id
    old = entry["id"]
    try:
        new = run_id(config["key"])
    except Exception:  # noqa: BLE001 - a key that cannot hash keeps its old id
        new = old
    for name in list(members):
        if name.startswith(f"runs/{old}/"):
            members[f"runs/{new}/" + name.split("/", 2)[2]] = members.pop(name)
    members[f"runs/{new}/config.json"] = json.dumps(config).encode()
    entry["id"] = new


def _mutate_config(rng: random.Random, manifest: dict, members: dict[str, bytes]) -> None:
    entry = manifest["runs"][0]
    config = json.loads(members[f"runs/{entry['id']}/config.json"])
    key = config.get("key", {})
    where = rng.choice(["key.seed", "key.training", "key.spec", "model", "top", "key"])
    if where == "key.seed":
        key["seed"] = rng.choice(HUGE)
    elif where == "key.training" and isinstance(key.get("training"), dict):
        t = key["training"]
        t[rng.choice(list(t) or ["epochs"])] = rng.choice(HUGE + ROW_VALUES)
    elif where == "key.spec" and isinstance(key.get("spec"), dict):
        key["spec"] = _mutate_tree(rng, key["spec"])
    elif where == "model":
        config.pop(rng.choice([k for k in config if k != "key"] or ["key"]), None)
    elif where == "top":
        config[rng.choice(list(config))] = _random_value(rng)
    else:
        config["key"] = _random_value(rng)
    _rekey(manifest, members, entry, config)


def _second_run(rng: random.Random, manifest: dict, members: dict[str, bytes]) -> None:
    import copy
    first = manifest["runs"][0]
    entry = copy.deepcopy(first)
    for name in [n for n in members if n.startswith(f"runs/{first['id']}/")]:
        members[name.replace(first["id"], "0" * 12, 1)] = members[name]
    entry["id"] = "0" * 12
    config = json.loads(members[f"runs/{first['id']}/config.json"])
    seed = rng.choice([2**63, 2**64, 10**23, -(2**63) - 1])
    config["key"]["seed"] = seed
    entry["row"]["seed"] = seed
    manifest["runs"].append(entry)
    _rekey(manifest, members, entry, config)


def make_pack(rng: random.Random, path: Path, tpl: Path) -> Path:
    """The template's pack with one hostile change, every listed file's checksum valid."""
    import hashlib
    import tarfile
    with tarfile.open(tpl / "pack.tar.gz", "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    manifest = json.loads(members.pop("pack.json"))
    for _ in range(rng.choice([0, 1, 1, 1, 2])):  # some stay whole: they must be accepted
        if isinstance(manifest.get("runs"), list) and manifest["runs"] and isinstance(
                manifest["runs"][0], dict) and isinstance(manifest["runs"][0].get("files"),
                                                          dict):
            _mutate_pack(rng, manifest, members)
    for entry in manifest.get("runs") or [] if isinstance(manifest.get("runs"), list) else []:
        files = entry.get("files") if isinstance(entry, dict) else None
        for name, meta in (files.items() if isinstance(files, dict) else ()):
            data = members.get(f"runs/{entry['id']}/{name}")
            if isinstance(meta, dict) and data is not None:
                meta.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in [("pack.json", json.dumps(manifest).encode()),
                           *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


# --- export targets ---------------------------------------------------------------------------

def _export_case(rng: random.Random, d: Path, tpl: Path) -> list[str]:
    """``export SOURCE --format F [--out TARGET]`` with hostile sources and targets."""
    rid = template_run(tpl)
    stored = d / "store" / "runs" / rid / "weights.safetensors"
    own = d / "in" / "w.safetensors"
    shutil.copy(tpl / "store" / "runs" / rid / "weights.safetensors", own)
    (d / "in" / "file.txt").write_text("a file, not a folder")
    source = rng.choice([str(own), rid, rid[:4], str(stored), str(d / "in"),
                         str(d / "in" / "file.txt"), str(d / "in" / "gone.safetensors")])
    fifo = d / "out" / "fifo"
    os.mkfifo(fifo)
    (d / "out" / "old.pt").write_bytes(b"an earlier export")
    os.symlink(own, d / "out" / "link.safetensors")
    target = rng.choice([None, str(own), str(d / "in" / ".." / "in" / "w.safetensors"),
                         str(d / "out" / "link.safetensors"), str(stored),
                         str(stored.parent / "model.pt"), str(d / "store"),
                         str(d / "store" / "index.sqlite"), str(d / "out"),
                         str(d / "out" / "new" / "deep" / "m.pt"), str(d / "out" / "old.pt"),
                         str(d / "in" / "file.txt" / "m.pt"), str(fifo), "",
                         str(d / "out" / ("x" * 300 + ".pt")), "m.pt"])
    fmt = rng.choices(["torchscript", "safetensors", "onnx"], [45, 45, 10])[0]
    return ["export", source, "--format", fmt, "--store", str(d / "store"),
            *(["--out", target] if target is not None else [])]


# --- store paths ------------------------------------------------------------------------------

def _hostile_store(rng: random.Random, d: Path, rid: str) -> Path:
    """The case's store (a copy of the template's), damaged in one way, or another path."""
    store = d / "store"
    op = rng.randrange(9)
    if op == 1:
        (store / "index.sqlite").unlink()
        (store / "index.sqlite").mkdir()
    elif op == 2:
        (store / "index.sqlite").unlink()
        os.symlink(d / "elsewhere" / "index.sqlite", store / "index.sqlite")
    elif op == 3:
        (store / "index.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(200))
    elif op == 4:
        (store / "runs" / rid / "config.json").write_text("{not json")
    elif op == 5:
        shutil.rmtree(store / "runs")
    elif op == 6:
        return d / "in" / "a-file"
    elif op == 7:
        return d / "nostore"
    return store


def _store_case(rng: random.Random, d: Path, tpl: Path) -> list[str]:
    """A store command with a hostile store path, run id or output place."""
    rid = template_run(tpl)
    (d / "in" / "a-file").write_text("not a store")
    store = _hostile_store(rng, d, rid)
    run_dir = d / "store" / "runs" / rid
    ref = rng.choice([rid, rid[:4], "", "%", "_", "*", "0", "zz", rid + "0", "../" + rid])
    s = ["--store", str(store)]
    return rng.choice([
        ["runs", *s], ["show", ref, *s], ["rm", ref, "--yes", *s],
        ["report", rid, rid, rid, "--out", str(d / "out" / "rep"), "--data-dir",
         str(tpl / "data"), *s],
        ["report", ref, "--out", str(run_dir), "--data-dir", str(tpl / "data"), *s],
        ["run", "--models", str(tpl / "tiny.yaml"), *TINY_RUN, "--data-dir", str(tpl / "data"),
         "--out", str(rng.choice([run_dir, d / "store", d / "out" / "res"])), *s],
        ["pack", ref, "--out", str(rng.choice([run_dir / "p.tar.gz", d / "out" / "p.tar.gz",
                                              d / "store" / "index.sqlite"])), *s],
        ["predict", ref, str(tpl / "tiny.yaml"), *s],
        ["unpack", str(tpl / "pack.tar.gz"), *s]])


# --- huge numbers wherever a number is read ------------------------------------------------

SPEC_NUMBERS = [("Conv2D", "filters"), ("Conv2D", "kernel_size"), ("Conv2D", "padding"),
                ("Conv2D", "strides"), ("Dense", "units"), ("Dropout", "rate"),
                ("MaxPooling2D", "pool_size"), ("MaxPooling2D", "strides"), ("ReLU", "threshold"),
                ("ReLU", "max_value"), ("ReLU", "negative_slope"), ("LeakyReLU", "negative_slope"),
                ("AveragePooling2D", "pool_size")]
LAYER_ARGS = {"Conv2D": {"filters": 4, "kernel_size": 3}, "Dense": {"units": 8},
              "MaxPooling2D": {"pool_size": 2}, "AveragePooling2D": {"pool_size": 2},
              "Dropout": {"rate": 0.5}}
# Values of --epochs and --seeds within their bounds train for minutes (a false hang): only
# values that must be refused go there.
REFUSED_TEXT = ["1e23", "100000000000000000000000", "inf", "nan", "-1", "0", "100001", "1e400",
                "1" + "0" * 400, "+inf"]
RUN_OPTIONS = ["--epochs", "--batch-size", "--train-limit", "--seed", "--seeds",
               "--validation-split", "--early-stopping", "--lr"]


def _number_case(rng: random.Random, d: Path, tpl: Path) -> tuple[list[str], list[str]]:
    """One huge (or otherwise hostile) number in a spec, a study file or an option."""
    where = rng.choice(["spec", "spec", "study", "option", "option", "vary", "top"])
    value = _huge(rng)
    data_args = ["--data-dir", str(tpl / "data"), "--out", str(d / "out"), "--store",
                 str(d / "store")]
    if where == "spec":
        kind, arg = rng.choice(SPEC_NUMBERS)
        path = d / "in" / "spec.yaml"
        layers = [{"Conv2D": {"filters": 4, "kernel_size": 3}},
                  {kind: {**LAYER_ARGS.get(kind, {}), arg: value}},
                  "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
        path.write_text(_yaml({"name": "big", "input_shape": [28, 28, 1], "layers": layers}))
        return ["summary", str(path)], [str(path)]
    if where == "study":
        path = d / "in" / "study.yaml"
        shutil.copy(tpl / "tiny.yaml", d / "in" / "tiny.yaml")
        key = rng.choice(["epochs", "batch_size", "seeds", "train_limit", "validation_split",
                          "early_stopping"])
        path.write_text(_yaml({"models": ["tiny.yaml"], "training": {key: value, "epochs": 1}
                               if key != "epochs" else {key: value}}))
        return (["run", str(path), "--dataset", "custom", *data_args]
                if rng.random() < 0.5 else ["summary", str(path)]), [str(path)]
    text = rng.choice(HUGE_TEXT)
    if where == "option":
        option = rng.choice(RUN_OPTIONS)
        if option in ("--epochs", "--seeds"):
            text = rng.choice(REFUSED_TEXT)
        argv = ["run", "--models", str(tpl / "tiny.yaml"), *TINY_RUN, *data_args]
        if option in argv:
            argv[argv.index(option) + 1] = text
        else:
            argv += [option, text]
        return argv, [option]
    if where == "vary":
        vary = rng.choice([f"width=1,{text}", f"lr=1.0,{text}", f"batch_size=8,{text}",
                           f"Conv2D#1.filters=4,{text}", f"Dropout#1.rate=0.25,{text}"])
        return ["ablate", str(tpl / "conv.yaml"), "--vary", vary, *TINY_RUN, *data_args], []
    from PIL import Image
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (12, 4, 16, 24))  # a "1"
    image.save(d / "in" / "x.png")
    return (["predict", str(tpl / "store" / "runs" / template_run(tpl) / "weights.safetensors"),
             str(d / "in" / "x.png"), "--top", text], ["--top"])


# --- running one case ------------------------------------------------------------------------

KINDS = ("accepted", "refused", "bad-refusal", "traceback", "hang", "stray-write",
         "run-changed", "breaks-later")
FAILURES = ("bad-refusal", "traceback", "hang", "stray-write", "run-changed", "breaks-later")
# The families whose refusals must be exactly one line naming the input (the older, settled
# ones); the others may print progress before refusing, so only their error lines count.
STRICT = ("spec", "data", "image", "source")


@dataclass
class Outcome:
    family: str
    case: int
    kind: str  # one of KINDS
    detail: str = ""
    peak_mib: float = 0.0  # peak resident memory during the case above that before it
    argv: tuple[str, ...] = ()


@dataclass
class Table:
    rows: dict[str, Counter] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    worst_refusal: dict[str, Outcome] = field(default_factory=dict)  # family -> most memory

    def add(self, o: Outcome) -> None:
        self.rows.setdefault(o.family, Counter())[o.kind] += 1
        argv = " ".join(o.argv)
        self.samples.setdefault(o.kind, []).append(
            f"{o.family} #{o.case}: {o.detail}" + (f"  [cnnbench {argv[:300]}]" if argv else ""))
        worst = self.worst_refusal.get(o.family)
        if o.kind == "refused" and (worst is None or o.peak_mib > worst.peak_mib):
            self.worst_refusal[o.family] = o

    def total(self, kind: str) -> int:
        return sum(c[kind] for c in self.rows.values())


@dataclass
class Case:
    """One command line, the names its refusal must mention (any; none: no check), and the
    places it may write."""

    argv: list[str]
    names: list[str] = field(default_factory=list)
    cwd: Path | None = None


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


def _prepare_old(family: str, rng: random.Random, d: Path, work: Path) -> Case:
    if family == "spec":
        path = d / "spec.yaml"
        make_spec(rng, path)
        return Case(["summary", str(path)], [str(path)])
    if family == "data":
        victim = make_data(rng, d / "data")
        spec = d / "tiny.yaml"
        spec.write_text(TINY_SPEC)
        return Case(["run", "--models", str(spec), "--dataset", "custom", "--data-dir",
                     str(d / "data"), "--epochs", "1", "--batch-size", "8", "--train-limit",
                     "8", "--out", str(d / "out"), "--store", str(d / "store")],
                    # Damaged labels can make a dataset of 245 classes: the spec is refused.
                    [victim, str(d / "data"), str(spec)])
    if family == "image":
        weights = work / "tiny.safetensors"
        if not weights.exists():
            _tiny_weights(work)
        path = make_image(rng, d / "image")
        show = ["--show"] if rng.random() < 0.3 else []
        return Case(["predict", str(weights), str(path), *show], [str(path)])
    path = make_source(rng, d / "model")
    return Case(["import-keras", str(path), "--out", str(d / "specs")], [str(path)])


def _prepare(family: str, case: int, seed: int, work: Path) -> Case:
    """The case's folder (``in/`` inputs, ``cwd/`` its current folder, ``out/``, ``store/``: a
    copy of the template's store) and its command line."""
    rng = random.Random(f"{seed}-{family}-{case}")
    d = work / "cases" / f"{family}-{case}"
    for sub in ("in", "cwd", "out"):
        (d / sub).mkdir(parents=True)
    if family in STRICT:
        c = _prepare_old(family, rng, d, work)
    else:
        tpl = template(work)
        shutil.copytree(tpl / "store", d / "store")
        if family == "study":
            path = make_study(rng, d / "in", tpl)
            argv = ["summary", str(path)] if rng.random() < 0.85 else [
                "run", str(path), *TINY_RUN, "--data-dir", str(tpl / "data"), "--out",
                str(d / "out"), "--store", str(d / "store")]
            c = Case(argv, [str(path)])
        elif family == "pack":
            path = make_pack(rng, d / "in" / "p.tar.gz", tpl)
            if rng.random() < 0.7:  # an empty store takes the pack's runs in
                shutil.rmtree(d / "store")
            c = Case(["unpack", str(path), "--store", str(d / "store")], [str(path)])
        elif family == "export":
            c = Case(_export_case(rng, d, tpl))
        elif family == "store":
            c = Case(_store_case(rng, d, tpl))
        else:
            c = Case(*_number_case(rng, d, tpl))
    c.cwd = d / "cwd"
    return c


def _classify(family: str, case: int, code: int, err: str, names: list[str]) -> Outcome:
    if code == 0:
        return Outcome(family, case, "accepted")
    lines = err.splitlines()
    errors = [ln for ln in lines if ": error: " in ln]
    if family in STRICT:
        other = [ln for ln in lines if ln and ": error: " not in ln
                 and not ln.startswith("data: ")]
    else:  # progress lines may come first; a traceback's lines may not
        other = [ln for ln in lines if ln.startswith(("Traceback", "  File \""))]
    ok = (len(errors) == 1 and not other
          and (not names or any(n in errors[0] for n in names)))
    if family == "source" and code == 1 and not errors:
        ok = True  # import-keras: models found, some not translated; each problem on stdout
    if ok:
        return Outcome(family, case, "refused", errors[0] if errors else "")
    return Outcome(family, case, "bad-refusal", f"exit {code}: {err.strip()[-300:]!r}")


# --- the write property -----------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` -> its SHA-256 (or link target), links not followed."""
    import hashlib
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                out[path] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[path] = h.hexdigest()
    return out


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _under(path: str, root: str | None) -> bool:
    if not root:
        return False
    root = os.path.abspath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def breaches(argv: list[str], cwd: Path, before: dict[str, str],
             after: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files written outside --out, --store, the current folder and ``predict --show``'s
    previews beside their images; files of a run that was finished before the command, changed
    by something other than ``rm`` or ``--force``)."""
    store = _option(argv, "--store") or os.environ.get("CNNBENCH_STORE")
    out = _option(argv, "--out")
    out = os.path.join(cwd, out) if out and not os.path.isabs(out) else out
    finished = {os.path.dirname(p) for p in before
                if os.path.basename(p) == "weights.safetensors"
                and os.path.basename(os.path.dirname(os.path.dirname(p))) == "runs"}
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    named = set()
    if argv[0] == "predict" and "--show" in argv:  # documented: NAME.cnnbench.png beside NAME
        named = {str(Path(a).with_name(Path(a).stem + ".cnnbench.png")) for a in argv[2:]}
    stray = [p for p in changed if not (_under(p, str(cwd)) or _under(p, store)
                                        or _under(p, out) or p in named)]
    allowed = argv[0] == "rm" or "--force" in argv
    runs = [p for p in changed if not allowed and any(_under(p, f) for f in finished)]
    return stray, runs


def _reset_peak() -> bool:
    """Reset the peak resident memory (VmHWM) of this process; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float:
    """VmHWM (peak resident) or VmRSS (resident now) of this process, in MiB."""
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith(field + ":"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(family: str, case: int, seed: int, work: Path, conn=None) -> Outcome:
    """Prepare one case, run it in this process from its own current folder, classify it.
    ``conn`` hears the command line before it runs (a hang is then reported with it)."""
    from cnnbench.cli import main
    c = _prepare(family, case, seed, work)
    if conn is not None:
        conn.send(("argv", c.argv))
    os.environ["CNNBENCH_STORE"] = str(c.cwd.parent / "store")
    before = snapshot(work)
    out, err = io.StringIO(), io.StringIO()
    home = os.getcwd()
    os.chdir(c.cwd)
    resident = _status_mib("VmRSS")
    _reset_peak()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(c.argv)
        o = _classify(family, case, code, err.getvalue(), c.names)
    except SystemExit as e:  # argparse
        o = _classify(family, case, e.code if isinstance(e.code, int) else 1, err.getvalue(),
                      c.names)
    except BaseException as e:  # noqa: BLE001 - the very thing counted
        tb = traceback.format_exception(e)
        o = Outcome(family, case, "traceback", f"{type(e).__name__}: {str(e)[:200]} at "
                    f"{tb[-2].strip().splitlines()[0] if len(tb) > 1 else '?'}")
    finally:
        os.chdir(home)
    # What the case added to the worker's resident memory at its peak (torch and the modules
    # already imported are not counted again).
    o.peak_mib, o.argv = max(0.0, _status_mib("VmHWM") - resident), tuple(c.argv)
    if o.kind == "accepted" and family in ("pack", "export"):
        o = (_read_back if family == "pack" else _load_export)(o, c, out.getvalue())
        o.argv = tuple(c.argv)
    stray, runs = breaches(c.argv, c.cwd, before, snapshot(work))
    if stray or runs:
        o.kind = "stray-write" if stray else "run-changed"
        o.detail = f"{o.detail} | changed: {', '.join((stray or runs)[:3])}".strip(" |")
    shutil.rmtree(c.cwd.parent, ignore_errors=True)
    return o


def _read_back(o: Outcome, c: Case, said: str) -> Outcome:
    """An accepted pack's runs must be usable afterwards: ``show`` of each run it added (as
    ``said`` on stdout), an ``export`` of the weights it carried, and for every fourth case a
    ``report`` of them exit 0; anything else is a pack accepted that breaks a later command."""
    import re

    from cnnbench.cli import main
    store = Path(_option(c.argv, "--store"))
    added = re.findall(r"^(?:added|replaced) ([0-9a-f]{12}) ", said, re.MULTILINE)
    commands = [["show", rid, "--store", str(store)] for rid in added]
    commands += [["export", rid, "--format", "safetensors", "--store", str(store), "--out",
                  str(c.cwd / f"{rid}.safetensors")] for rid in added
                 if (store / "runs" / rid / "weights.safetensors").is_file()]
    if added and o.case % 4 == 0:
        commands.append(["report", *added, "--store", str(store), "--data-dir",
                         str(store.parent.parent.parent / "template" / "data"), "--out",
                         str(c.cwd / "report")])
    for argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
        except BaseException as e:  # noqa: BLE001 - the very thing counted
            code, err = 1, io.StringIO(f"{type(e).__name__}: {str(e)[:200]}")
        if code != 0:
            return Outcome(o.family, o.case, "breaks-later",
                           f"then `{argv[0]} {argv[1]}` exits {code}: {err.getvalue()[-300:]!r}")
    return o


def _load_export(o: Outcome, c: Case, said: str) -> Outcome:
    """An accepted export must load back: its file (as ``said``: 'FORMAT: PATH') read by
    cnnbench (safetensors), torch.jit (TorchScript) or onnx."""
    fmt, _, path = " ".join(said.split()).partition(": ")
    target = c.cwd / path if not os.path.isabs(path) else Path(path)
    try:
        if fmt == "safetensors":
            from cnnbench.model.weights import load_weights
            load_weights(target)
        elif fmt == "torchscript":
            import torch
            torch.jit.load(str(target))
        else:
            import onnx
            onnx.checker.check_model(onnx.load(str(target)))
    except Exception as e:  # noqa: BLE001 - the very thing counted
        return Outcome(o.family, o.case, "breaks-later",
                       f"its {fmt} file {target} does not load: {type(e).__name__}: "
                       f"{str(e)[:200]}")
    return o


def _worker(conn, seed: int, work: str) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    os.environ.pop("CNNBENCH_DATA_DIR", None)
    os.environ["CNNBENCH_CACHE"] = str(Path(work).parent / "cache")  # outside the hashed tree
    while True:
        msg = conn.recv()
        if msg is None:
            return
        family, case = msg
        conn.send(run_case(family, case, seed, Path(work), conn))


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
        argv: tuple[str, ...] = ()
        deadline = time.monotonic() + self.timeout
        # The template is built inside the first case that needs it: its time is not the case's.
        while self.conn.poll(max(0.0, deadline - time.monotonic())):
            try:
                msg = self.conn.recv()
            except EOFError:
                break
            if isinstance(msg, Outcome):
                return msg
            if msg[0] == "argv":  # the case is prepared: its time starts now
                argv, deadline = tuple(msg[1]), time.monotonic() + self.timeout
        else:
            self.close()
            self._clean()
            return Outcome(family, case, "hang", f"over {self.timeout:g} s", argv=argv)
        code = self.proc.exitcode
        self.proc = None
        self._clean()
        return Outcome(family, case, "traceback", f"the worker died (exit code {code})",
                       argv=argv)

    def _clean(self) -> None:
        shutil.rmtree(self.work / "cases", ignore_errors=True)

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
        (Path(tmp) / "work").mkdir()
        runner = Runner(seed, Path(tmp) / "work", timeout)
        try:
            for family in FAMILIES:
                start = time.perf_counter()
                for case in range(counts.get(family, 0)):
                    table.add(runner.run(family, case))
                if counts.get(family, 0):
                    log(f"{family}: {counts[family]} cases in "
                        f"{time.perf_counter() - start:.1f} s")
        finally:
            runner.close()
    return table


def format_table(table: Table, show: tuple[str, ...] = FAILURES, per_kind: int = 10) -> str:
    """Outcomes per family, the peak memory of each family's worst refusal, then samples of
    the kinds in ``show``."""
    head = f"{'inputs':<8}{'cases':>6}" + "".join(f"{k:>13}" for k in KINDS) + \
        f"{'worst refusal +MiB':>19}"
    lines = [head, "-" * len(head)]
    for family in FAMILIES:
        c = table.rows.get(family)
        if c:
            worst = table.worst_refusal.get(family)
            lines.append(f"{family:<8}{sum(c.values()):>6}" + "".join(
                f"{c[k]:>13}" for k in KINDS) + f"{worst.peak_mib if worst else 0:>19.0f}")
    if table.worst_refusal:
        worst = max(table.worst_refusal.values(), key=lambda o: o.peak_mib)
        lines.append(f"\nworst refusal: +{worst.peak_mib:.0f} MiB peak resident memory over the "
                     f"worker's before the case, {worst.family} #{worst.case}: "
                     f"{worst.detail[:200]}")
    for kind, samples in table.samples.items():
        if kind in show:
            lines.append(f"\n{kind} ({len(samples)}):")
            lines += [f"  {s[:600]}" for s in samples[:per_kind]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for family, option in OPTIONS.items():
        p.add_argument(f"--{option}", type=int, default=DEFAULT_COUNTS[family],
                       help=f"{family} cases (default {DEFAULT_COUNTS[family]})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take")
    p.add_argument("--show-refusals", type=int, default=0, metavar="N",
                   help="also print N refusal lines, to read what users would see")
    a = p.parse_args(argv)
    counts = {family: getattr(a, option) for family, option in OPTIONS.items()}
    table = fuzz(counts, a.seed, a.timeout, log=lambda m: print(m, file=sys.stderr))
    shown = FAILURES + (("refused",) if a.show_refusals else ())
    print(format_table(table, shown, max(10, a.show_refusals)))
    return 1 if any(table.total(k) for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
