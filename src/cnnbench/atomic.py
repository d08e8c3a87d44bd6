"""Files written whole or not at all: temporary file, flush, fsync, rename, fsync the folder.

No torch here, so the light modules (store index, reports, data cache) can use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the folder that holds the renamed file (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode() -> int:
    """What ``open()`` would give a new file (0o666 less the umask); mkstemp gives 0o600."""
    global _MODE
    if _MODE is None:
        umask = os.umask(0o022)
        os.umask(umask)
        _MODE = 0o666 & ~umask
    return _MODE


_MODE: int | None = None


def write_temp(folder: Path, name: str, data: bytes) -> str:
    """``data`` in a new temporary file beside ``name``, flushed and fsynced; its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, flush, fsync, rename over ``path``, fsync the folder."""
    tmp = write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


# --- files that belong together -------------------------------------------------------------
# A pair written as two atomic writes (results.json + history.csv, report.html + report.md, a
# run's weights + predictions) can disagree after a kill between the two. So: every file is
# written to a temporary file first, then a commit record naming them is written (atomically,
# last of the data), then the temporaries are renamed into place and the record removed. A
# kill before the record leaves the old set untouched (its temporaries are swept later); a kill
# after it is completed by :func:`roll_forward`, which every later write_together runs first.

COMMIT_PREFIX = ".cnnbench-commit-"


def write_together(folder: Path, files: dict[str, bytes], note: dict[str, Any] | None = None
                   ) -> None:
    """Write ``files`` (name -> bytes) into ``folder`` so that a reader, after any kill, finds
    either all of the old versions or, once :func:`roll_forward` ran, all of the new ones.
    ``note`` travels in the commit record (the run store puts the index update there)."""
    import json
    folder.mkdir(parents=True, exist_ok=True)
    roll_forward(folder)
    temps = {}
    try:
        for name, data in files.items():
            try:
                temps[name] = os.path.basename(write_temp(folder, name, data))
            except OSError as e:  # name the file, as a single atomic write would
                raise OSError(e.errno, e.strerror, str(folder / name)) from e
        record = json.dumps({"files": temps, "note": note or {}}).encode()
        commit = folder / f"{COMMIT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.json"
        atomic_write_bytes(commit, record)
    except BaseException:
        for tmp in temps.values():
            (folder / tmp).unlink(missing_ok=True)
        raise
    _apply(folder, commit, temps)


def _apply(folder: Path, commit: Path, temps: dict[str, str]) -> None:
    for name, tmp in temps.items():
        try:
            os.replace(folder / tmp, folder / name)
        except FileNotFoundError:  # renamed already (by the writer or an earlier roll-forward)
            pass
    fsync_dir(folder)
    commit.unlink(missing_ok=True)
    fsync_dir(folder)


def roll_forward(folder: Path) -> list[dict[str, Any]]:
    """Complete every write_together in ``folder`` that a kill interrupted after its commit
    record; the notes of the ones completed, oldest first."""
    import json
    notes: list[dict[str, Any]] = []
    try:
        records = sorted(folder.glob(COMMIT_PREFIX + "*.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return notes
    for commit in records:
        try:
            doc = json.loads(commit.read_bytes())
        except (OSError, ValueError):  # vanished meanwhile (its writer finished it)
            continue
        _apply(folder, commit, doc["files"])
        notes.append(doc.get("note") or {})
    return notes


def sweep_temps(folder: Path) -> list[Path]:
    """Remove temporary files a kill left in ``folder`` (``NAME.<random>.tmp``, a checkpoint's
    up to 60 MB) once no commit record names them. Only for a folder nobody else writes at the
    moment (a run folder under its lock): a live writer's temporary would go too."""
    roll_forward(folder)
    removed = []
    for tmp in folder.glob("*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def output_path(folder: Path, name: str, suffix: str) -> Path:
    """``folder/NAME.suffix`` for a user-given name, refused unless it stays inside ``folder``.

    spec.check_name already keeps separators and '..' out of model names; this is the check at
    the point of writing, for names from anywhere (an old store, a weights file).
    """
    path = folder / f"{name}{suffix}"
    root = folder.resolve()
    if "/" in name or "\\" in name or path.resolve().parent != root:
        raise ValueError(f"the name {name!r} would write {path} outside {folder}; "
                         f"refusing it.")
    return path
