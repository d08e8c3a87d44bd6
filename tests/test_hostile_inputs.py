"""Issue 12, items 6-12: hostile inputs (names, markup, YAML aliases, bombs, lying headers,
weights files, models too large) are refused in one line naming the file, never crash a run,
never write outside --out and never exhaust memory."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.cli import main
from cnnbench.data.datasets import DataError, read_idx, read_npz
from cnnbench.model.spec import SpecError, build_spec, load_spec


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def spec_dict(name: str, **extra) -> dict:
    return {"name": name, "input_shape": [28, 28, 1], **extra,
            "layers": [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}


def write_spec(path: Path, name: str, **extra) -> Path:
    path.write_text(yaml.safe_dump(spec_dict(name, **extra), sort_keys=False))
    return path


def tiny_data(folder: Path, n_train: int = 24, n_test: int = 6) -> Path:
    """A custom dataset of 28x28 images, 10 classes, as the four idx files."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        (folder / name).write_bytes(idx_bytes(a))
    return folder


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def run_args(tmp_path: Path, *specs: Path) -> list:
    return ["run", *specs, "--dataset", "custom", "--data-dir", tiny_data(tmp_path / "data"),
            "--epochs", "1", "--out", tmp_path / "out", "--store", tmp_path / "store"]


# --- 6. names become file names ------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escaped", "/tmp/elsewhere/x", "a/b", "..", ".hidden",
                                  "-rf", "m{}", "x[/]", "with space", "é", "x" * 101])
def test_a_name_outside_the_rule_is_refused_saying_the_rule(name):
    with pytest.raises(SpecError) as e:
        build_spec(spec_dict(name), source="bad.yaml")
    msg = str(e.value)
    assert msg.startswith("bad.yaml: 'name' ") and "A-Z a-z 0-9 _ . - [ ] = ," in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["CNN_MNIST_2[activation=relu,norm=none]", "a.b-c_1", "x" * 100])
def test_ablation_style_names_are_accepted(name):
    assert build_spec(spec_dict(name)).name == name


def test_a_spec_named_to_escape_out_writes_nothing_outside(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    spec = write_spec(tmp_path / "evil.yaml", f"../../{target.name}/x")
    code, out, err = cli(capsys, *run_args(tmp_path, spec))
    assert code == 2
    assert err.count("\n") == 1 and "evil.yaml: 'name' '../../elsewhere/x' is not allowed" in err
    assert not target.exists() and not (tmp_path / "x.png").exists()
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.png"))


def test_an_ablation_name_trains_and_its_plot_lands_inside_out(tmp_path, capsys):
    name = "CNN_MNIST_2[activation=relu,norm=none]"
    code, out, err = cli(capsys, *run_args(tmp_path, write_spec(tmp_path / "a.yaml", name)))
    assert code == 0, err
    assert (tmp_path / "out" / f"{name}.png").is_file()
    assert name in json.loads((tmp_path / "out" / "results.json").read_text())["models"]


def test_output_path_refuses_a_name_that_leaves_its_folder(tmp_path):
    from cnnbench.atomic import output_path
    assert output_path(tmp_path, "ok[a=1]", ".png") == tmp_path / "ok[a=1].png"
    for bad in ("../x", "a/../../x", "/etc/x", "..\\x"):
        with pytest.raises(ValueError, match="outside"):
            output_path(tmp_path, bad, ".png")


def test_import_keras_writes_only_inside_out_and_ascii_names(tmp_path, capsys):
    src = tmp_path / "nb.md"
    src.write_text("# Modèle über\n```python\nmodel = Sequential()\nmodel.add(Flatten("
                   "input_shape=(28, 28, 1)))\nmodel.add(Dense(10, activation='softmax'))\n```\n")
    code, out, err = cli(capsys, "import-keras", src, "--out", tmp_path / "specs")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "specs").iterdir())
    assert written == ["Mod_le_ber.yaml"]
    assert load_spec(tmp_path / "specs" / written[0]).name == "Mod_le_ber"


# --- 7. names and paths through Rich markup and str.format ---------------------------------

def test_markup_in_a_name_prints_as_it_is(tmp_path, capsys):
    code, out, err = cli(capsys, *run_args(tmp_path, write_spec(tmp_path / "n.yaml",
                                                                "net[red]")))
    assert code == 0, err
    assert "net[red]" in out  # Rich would have eaten '[red]' as a colour
    assert "Plot:    " + str(tmp_path / "out" / "net[red].png") in out


def test_a_data_folder_called_like_a_closing_tag_does_not_crash_the_run(tmp_path, capsys):
    data = tiny_data(tmp_path / "x[/]")
    spec = write_spec(tmp_path / "s.yaml", "tiny")
    code, out, err = cli(capsys, "run", spec, "--dataset", "custom", "--data-dir", data,
                         "--epochs", "1", "--out", tmp_path / "out", "--store", tmp_path / "st")
    assert code == 0, err
    assert f"user files in {data}: ok" in err


def test_the_progress_bar_takes_any_name():
    from rich.console import Console

    from cnnbench.train.engine import EpochLogs
    from cnnbench.train.progress import KerasProgress
    buf = io.StringIO()
    bar = KerasProgress(Console(file=buf, force_terminal=True, width=100), "m{}[/]")
    bar.on_epoch_begin(1, 1, 2)
    bar.on_step_end(1, {"loss": 1.0, "acc": 0.5})
    bar.on_epoch_end(EpochLogs(epoch=1, loss=1.0, acc=0.5, val_loss=1.0, val_acc=0.5,
                               seconds=0.1))
    assert "m{}[/] epoch 1/1" in buf.getvalue()


# --- 8. YAML aliases -----------------------------------------------------------------------

BOMB = """name: bomb
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
description: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def test_a_spec_with_aliases_is_refused_naming_the_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace("name: bomb\n", "name: bomb\ninput_shape: [28, 28, 1]\n"))
    with pytest.raises(SpecError, match=r"bomb.yaml:4:\d+: not valid YAML: the alias \*a is "
                                        r"not allowed"):
        load_spec(path)
    code, out, err = cli(capsys, "summary", path)
    assert code == 2 and err.count("\n") == 1 and "alias *a is not allowed" in err


def test_a_study_file_with_aliases_is_refused(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text("models: &m [CNN_MNIST_1]\ndescription: *m\n")
    code, out, err = cli(capsys, *run_args(tmp_path)[:1], path, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert "study.yaml:2:14: not valid YAML: the alias *m is not allowed" in err


def test_a_description_is_a_bounded_string():
    with pytest.raises(SpecError, match="'description' must be a string of at most 10,000"):
        build_spec(spec_dict("d", description={"nested": [1, 2]}), source="d.yaml")
    with pytest.raises(SpecError, match="Got 10,001 characters"):
        build_spec(spec_dict("d", description="x" * 10_001), source="d.yaml")
    assert build_spec(spec_dict("d", description="a short note")).name == "d"


def test_a_spec_file_over_a_megabyte_is_not_read(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match=r"big.yaml: over 1 MiB; not a model spec"):
        load_spec(path)


# --- 9. gzip bombs and lying headers -------------------------------------------------------

def test_a_five_byte_idx_file_is_a_data_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: the header ends after 5 "
                                        r"bytes; a 3-d idx header has 16"):
        read_idx(path)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # The header says 10 images of 28x28 (7840 bytes); the stream inflates to 64 MB.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    parts = [z.compress(struct.pack(">HBB3I", 0, 8, 3, 10, 28, 28))]
    zeros = bytes(1 << 20)
    parts += [z.compress(zeros) for _ in range(64)]
    path.write_bytes(b"".join(parts) + z.flush())
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"header says 10x28x28 = 7840 bytes of data, the "
                                            r"file holds more than 7840"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # reading it whole took 64 MB


def test_an_idx_header_declaring_terabytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBB3I", 0, 8, 3, 4_000_000_000, 1000, 1000)))
    with pytest.raises(DataError, match=r"declares a 4000000000x1000x1000 array \(3,725,290.3 "
                                        r"GiB\); cnnbench reads arrays of at most 4 GiB"):
        read_idx(path)


def test_a_corrupt_gzip_stream_is_a_data_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = gzip.compress(idx_bytes(np.zeros(100, np.uint8)))
    path.write_bytes(good[:12] + bytes(b ^ 0x5A for b in good[12:30]) + good[30:])
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def npz_with_header(path: Path, shape: tuple, data: bytes = b"", dtype: str = "|u1") -> Path:
    """An npz whose x_train member declares ``shape``; the other members are fine."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x_train.npy", member)
        for k in ("y_train", "x_test", "y_test"):
            buf = io.BytesIO()
            np.save(buf, np.zeros(3, np.uint8))
            zf.writestr(f"{k}.npy", buf.getvalue())
    return path


def test_an_npz_member_declaring_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = npz_with_header(tmp_path / "mnist.npz", (10**6, 10**5, 10**5), b"\x00" * 100)
    with pytest.raises(DataError, match=r"mnist.npz: x_train: its header declares a "
                                        r"1000000x100000x100000 array"):
        read_npz(path)


def test_an_npz_member_shorter_than_its_header_is_a_data_error(tmp_path):
    path = npz_with_header(tmp_path / "mnist.npz", (10, 28, 28), b"\x00" * 100)
    with pytest.raises(DataError, match=r"mnist.npz: x_train: its header says 10x28x28 = 7840 "
                                        r"bytes, it holds 100"):
        read_npz(path)


def test_an_npz_member_of_float64_is_refused_by_its_header(tmp_path):
    path = npz_with_header(tmp_path / "mnist.npz", (10**9,), b"", dtype="<f8")
    with pytest.raises(DataError, match=r"x_train has dtype float64, expected uint8"):
        read_npz(path)


def test_a_damaged_data_dir_is_one_line_from_run(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    (data / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    code, out, err = cli(capsys, "run", "--dataset", "custom", "--data-dir", data,
                         "--out", tmp_path / "o")
    assert code == 1 and err.count("\n") == 1  # the data failed (DataError): exit 1
    assert "train-labels-idx1-ubyte: the header ends after 5 bytes" in err


# --- 10. images in predict -----------------------------------------------------------------

def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height (its pixel data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def digit_png(path: Path) -> Path:
    from PIL import Image
    a = np.zeros((40, 40), np.uint8)
    a[8:32, 18:22] = 255  # a 1
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def untrained_weights(tmp_path) -> Path:
    """A 28x28 model's weights file, untrained: predict's output format is what is tested."""
    import torch

    from cnnbench.model.build import build_model
    from cnnbench.model.weights import save_weights
    spec = build_spec(spec_dict("tiny"))
    torch.manual_seed(0)
    return save_weights(tmp_path / "tiny.safetensors", build_model(spec), spec,
                        tuple(str(i) for i in range(10)), "mnist")


def test_a_decompression_bomb_is_reported_and_the_other_images_still_run(
        tmp_path, capsys, untrained_weights):
    bomb = png_header(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 G pixels: Pillow's error
    big = png_header(tmp_path / "big.png", 6000, 5000)  # 30 M: under Pillow's warning
    good = digit_png(tmp_path / "one.png")
    code, out, err = cli(capsys, "predict", untrained_weights, bomb, big, good)
    assert code == 2  # images that cannot be used are the user's input
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"cnnbench predict: error: {bomb}: refused as a decompression "
                               f"bomb (Image size (1600000000 pixels) exceeds limit")
    assert lines[1] == (f"cnnbench predict: error: {big}: 6000x5000 = 30 M pixels; predict "
                        f"reads images of at most 25 M pixels. Scale it down first.")
    assert out.splitlines()[-1].startswith(f"{good}: ") and out.count(" %") == 3


def test_a_damaged_image_is_one_line_naming_it(tmp_path):
    from cnnbench.model.predict import ImageError, preprocess_image
    path = digit_png(tmp_path / "d.png")
    raw = path.read_bytes()
    path.write_bytes(raw[:60] + bytes(len(raw) - 60))
    with pytest.raises(ImageError, match=f"{path}: cannot read as an image"):
        preprocess_image(path)


def test_a_large_image_is_preprocessed_without_float64_copies(tmp_path):
    from PIL import Image

    from cnnbench.model.predict import preprocess_image
    a = np.full((3000, 3000), 255, np.uint8)
    a[500:2500, 1400:1600] = 0  # a dark 1 on paper
    Image.fromarray(a).save(tmp_path / "big.png")
    tracemalloc.start()
    try:
        pre = preprocess_image(tmp_path / "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pre.inverted and pre.image.max() == 255
    # One float64 copy alone is 8 bytes a pixel; the old code held three at once.
    assert peak < 8 * a.size


# --- 11. weights files ---------------------------------------------------------------------

def weights_file(path: Path, spec_yaml: str, classes: str = '["a", "b"]', units: int = 2) -> Path:
    import torch
    from safetensors.torch import save_file
    save_file({"1.weight": torch.zeros(units, 784), "1.bias": torch.zeros(units)}, str(path),
              metadata={"format": "cnnbench-weights-1", "spec_yaml": spec_yaml,
                        "classes": classes})
    return path


def two_class_spec(units: int = 2) -> str:
    return yaml.safe_dump({"name": "w", "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": units, "activation": "softmax"}}]})


def test_a_weights_file_whose_spec_is_huge_is_refused_before_building(tmp_path):
    from cnnbench.model.weights import load_weights
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(60_000))
    with pytest.raises(SpecError, match=r"w.safetensors: the tensors do not fit the spec w: "
                                        r"1.weight is \[2, 784\], the spec needs "
                                        r"\[60000, 784\] \(2 tensors differ\)"):
        load_weights(path)
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(2_000_000_000))
    with pytest.raises(SpecError, match=r"the 'units' parameter of Dense must be at most "
                                        r"65_536 \(cnnbench's bound on it\). Got 2000000000"):
        load_weights(path)


@pytest.mark.parametrize("classes, why", [('["a"]', "\\['a'\\]"), ('{"a": 1}', "\\{'a': 1\\}"),
                                          ('[1, 2]', "\\[1, 2\\]"), ("[", "not JSON")])
def test_weights_classes_are_checked(tmp_path, classes, why):
    from cnnbench.model.weights import load_weights
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(), classes)
    with pytest.raises(SpecError, match=f"w.safetensors: its 'classes' metadata .*{why}"):
        load_weights(path)
    ok = load_weights(weights_file(tmp_path / "ok.safetensors", two_class_spec()))
    assert ok.classes == ("a", "b")


# --- 12. models too large for memory -------------------------------------------------------

def test_a_model_whose_activations_exceed_ram_is_refused_at_planning(tmp_path, capsys):
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump({"name": "wide", "input_shape": [28, 28, 1], "layers": [
        {"Conv2D": {"filters": 65_536, "kernel_size": 1}}, {"Conv2D": {"filters": 65_536,
                                                                      "kernel_size": 1}},
        {"GlobalAveragePooling2D": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}))
    code, out, err = cli(capsys, *run_args(tmp_path, path))
    assert code == 2 and err.splitlines()[-1].startswith("cnnbench run: error: ")
    assert err.count("error") == 1 and "Traceback" not in err
    # Evaluation: 500 images x a Conv2D's 51.4e6 outputs x 2 (in and out) x 4 B = 191.4 GiB
    # (a training batch: 128 x 102.8e6 elements x 12 B = 147.1 GiB); 4.3e9 params x 28 B.
    assert "wide.yaml: wide needs about 303.4 GiB of memory to train (activations of a " \
           "500-image evaluation batch 191.4 GiB; 4,295,819,274 parameters with their " \
           "gradients and optimizer state 112.0 GiB); this machine has " in err
    assert "GiB available. Use a smaller --batch-size or model." in err
    assert "Epoch" not in out


def test_the_memory_estimate_of_the_notebook_models_is_small():
    from cnnbench.model.memory import check_memory, memory_needed
    from cnnbench.model.spec import get_spec
    spec = get_spec("CNN_MNIST_2")
    # 128 x 45,478 activations x 12 B + 1,199,882 params x 28 B
    assert memory_needed(spec, 128) == 128 * 12 * 45_478 + 28 * spec.params
    check_memory([spec], 128, available=1 << 30)
    with pytest.raises(SpecError, match=r"CNN_MNIST_2 needs about 0.2 GiB .* this machine has "
                                        r"0.1 GiB available"):
        check_memory([spec], 128, available=100 << 20)


# --- found by bench/chaos_fuzz.py ----------------------------------------------------------

def test_a_nul_byte_in_a_spec_is_one_line(tmp_path, capsys):
    path = tmp_path / "nul.yaml"
    path.write_text("name: x\x00\nlayers: []\n")
    code, out, err = cli(capsys, "summary", path)
    assert code == 2
    assert err == (f"cnnbench summary: error: {path}: not valid YAML: unacceptable character "
                   f"#x0000: special characters are not allowed in \"<unicode string>\", "
                   f"position 7\n")


def test_data_log_lines_are_not_wrapped(tmp_path, capsys):
    data = tiny_data(tmp_path / ("d" * 120))
    code, out, err = cli(capsys, "run", write_spec(tmp_path / "s.yaml", "tiny"), "--dataset",
                         "custom", "--data-dir", data, "--epochs", "1", "--out", tmp_path / "o",
                         "--store", tmp_path / "st")
    assert code == 0, err
    assert f"data: user files in {data}: ok, a custom dataset of 10 classes (24 train, 6 test " \
           f"images); not pinned, SHA-256 recorded\n" in err
