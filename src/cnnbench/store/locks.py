"""One exclusive lock per run, held by the process training or deleting it."""

from __future__ import annotations

import os
from pathlib import Path


class RunLock:
    """An exclusive lock on one run (``flock`` on ``locks/<id>``).

    The kernel drops it when its process dies, even by SIGKILL, so a crashed run never stays
    locked; two processes never train the same run at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, blocking: bool) -> bool:
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """True while some process holds the lock at ``path`` (trains or deletes its run)."""
    if not path.exists():
        return False
    lock = RunLock(path)
    try:
        if lock.acquire(blocking=False):
            lock.release()
            return False
    except OSError:  # a store we may read but not write: nobody we can see holds it
        return False
    return True
