"""Input files are read within bounds: YAML aliases, oversized spec files, gzip bombs, idx and
npz headers that lie about their size, damaged archives and images too large to decode are
refused in one line naming the file, before the memory they claim is spent."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cnnbench_main, idx_bytes, run_args, spec_dict, tiny_data

from cnnbench.data.datasets import DataError, read_idx, read_npz
from cnnbench.model.spec import SpecError, build_spec, load_spec

# --- YAML aliases and oversized spec files -------------------------------------------------

BOMB = """name: bomb
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
description: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def test_a_spec_with_aliases_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB.replace("name: bomb\n", "name: bomb\ninput_shape: [28, 28, 1]\n"))
    with pytest.raises(SpecError, match=r"bomb.yaml:4:\d+: not valid YAML: the alias \*a is "
                                        r"not allowed"):
        load_spec(path)
    code, out, err = cnnbench_main("summary", path)
    assert code == 2 and err.count("\n") == 1 and "alias *a is not allowed" in err


def test_a_study_file_with_aliases_is_refused(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("models: &m [CNN_MNIST_1]\ndescription: *m\n")
    code, out, err = cnnbench_main(*run_args(tmp_path)[:1], path, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert "study.yaml:2:14: not valid YAML: the alias *m is not allowed" in err


def test_a_spec_file_over_a_megabyte_is_not_read(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match=r"big.yaml: over 1 MiB; not a model spec"):
        load_spec(path)


# --- gzip bombs and lying headers in data files ---------------------------------------------

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


def test_a_damaged_data_dir_is_one_line_from_run(tmp_path):
    data = tiny_data(tmp_path / "data")
    (data / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    code, out, err = cnnbench_main("run", "--dataset", "custom", "--data-dir", data,
                                   "--out", tmp_path / "o")
    assert code == 1 and err.count("\n") == 1  # the data failed (DataError): exit 1
    assert "train-labels-idx1-ubyte: the header ends after 5 bytes" in err


# --- images given to predict --------------------------------------------------------------

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
        tmp_path, untrained_weights):
    bomb = png_header(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 G pixels: Pillow's error
    big = png_header(tmp_path / "big.png", 6000, 5000)  # 30 M: under Pillow's warning
    good = digit_png(tmp_path / "one.png")
    code, out, err = cnnbench_main("predict", untrained_weights, bomb, big, good)
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
