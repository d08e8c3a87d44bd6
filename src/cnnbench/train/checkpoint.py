"""Checkpoints on disk: atomic, checksummed, the last good one and the one before.

File format: a header line ``CNNBENCH-CKPT 1 <sha256 of payload> <payload bytes>\\n`` and then
the payload, a ``torch.save`` of the training state. A file whose payload does not match its
header (a crash mid-write on a filesystem without atomic rename, a truncated copy, bit rot)
is refused, and the previous checkpoint is tried.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnbench.atomic import fsync_dir, write_temp
from cnnbench.errors import CnnbenchError

MAGIC = b"CNNBENCH-CKPT 1"
LAST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


class CheckpointError(CnnbenchError, RuntimeError):
    """A checkpoint that cannot be trusted: truncated, corrupted, or not a checkpoint."""


def encode(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    return b"%s %s %d\n" % (MAGIC, digest.encode(), len(payload)) + payload


def decode(data: bytes, where: str) -> dict[str, Any]:
    """The state in ``data``, or CheckpointError saying what is wrong with ``where``."""
    head, sep, payload = data.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or b" ".join(parts[:2]) != MAGIC:
        raise CheckpointError(f"{where}: not a cnnbench checkpoint (bad header)")
    digest, size = parts[2].decode(errors="replace"), int(parts[3])
    if len(payload) != size:
        raise CheckpointError(f"{where}: truncated ({len(payload)} of {size} payload bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{where}: checksum mismatch (the file is corrupted)")
    # weights_only: a checkpoint holds tensors and plain values, never code to run.
    state: dict[str, Any] = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return state


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the last checkpoint; the former last one becomes the previous one.

    A crash at any point leaves at least one complete checkpoint (last or previous).
    """
    data = encode(state)
    last, prev = folder / LAST, folder / PREVIOUS
    tmp = write_temp(folder, LAST, data)
    try:
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(folder)
    return last


def load_checkpoint(folder: Path, warn: Callable[[str], None] = lambda m: None
                    ) -> dict[str, Any] | None:
    """The newest checkpoint in ``folder`` that passes its checksum, or None.

    A bad last checkpoint is reported through ``warn`` and the previous one is tried.
    """
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            return decode(path.read_bytes(), str(path))
        except CheckpointError as e:
            warn(f"{e}; trying the previous checkpoint" if name == LAST else str(e))
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:  # torch refuses
            warn(f"{path}: cannot be read ({e})")
    return None


def remove_checkpoints(folder: Path) -> None:
    for name in (LAST, PREVIOUS):
        (folder / name).unlink(missing_ok=True)
