"""Files written whole or not at all: temporary file, flush, fsync, rename, fsync the folder.

No torch here, so the light modules (store index, reports, data cache) can use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
