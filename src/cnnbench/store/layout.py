"""Where a run store keeps what, and the one refusal every writing command shares.

Layout under the store root (default ``./cnnbench-runs``, or ``--store``, or
``$CNNBENCH_STORE``)::

    index.sqlite              one row per run (WAL mode: readers never block the writer)
    runs/<id>/config.json     resolved spec, settings, dataset, seed, environment
    runs/<id>/history.csv     per-epoch metrics, rewritten atomically after every epoch
    runs/<id>/checkpoint.pt   the last completed epoch (and checkpoint.prev.pt, the one before)
    runs/<id>/weights.safetensors, predictions.npy, probabilities.npy   once finished
    runs/<id>/attempt/        a --force retrain of a finished run, until it replaces it
    locks/<id>                held (flock) by the process training or deleting the run; never
                              deleted, so a lock file is never swapped under a waiting process
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnbench.errors import UsageError
from cnnbench.store.records import HISTORY_KEYS

ENV_VAR = "CNNBENCH_STORE"
DEFAULT_ROOT = "cnnbench-runs"
ATTEMPT = "attempt"  # a run folder's subfolder where a forced retrain trains
FINAL_FILES = ("weights.safetensors", "predictions.npy", "probabilities.npy")  # once finished
# In the folder of a run that `cnnbench unpack` brought from another store (store/pack.py):
# where it came from, and whether its weights (and probabilities) came along.
IMPORTED = "imported.json"


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


@dataclass(frozen=True)
class StoreLayout:
    """The paths of one store's index, run folders and locks."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def folder(self, rid: str) -> Path:
        return self.runs_dir / rid

    def attempt_folder(self, rid: str) -> Path:
        """Where a --force retrain of finished run ``rid`` trains, the finished files intact."""
        return self.folder(rid) / ATTEMPT

    def lock_path(self, rid: str) -> Path:
        return self.root / "locks" / rid


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (existing or not, links resolved) lies inside the store at ``root``."""
    base, target = Path(root).resolve(), Path(path).resolve()
    return target == base or base in target.parents


def store_holding(path: str | Path) -> Path | None:
    """The run store (any store, not only the configured one) whose folder holds ``path`` or is
    ``path``: the nearest folder with a store's index and ``runs/``; None if there is none."""
    target = Path(path).resolve()
    for folder in (target, *target.parents):
        layout = StoreLayout(folder)
        if layout.db_path.exists() and layout.runs_dir.is_dir():
            return folder
    return None


def refuse_inside_store(root: str | Path | None, out: str | Path | None, option: str) -> None:
    """Refuse an output path (``option``, e.g. ``--out``) inside the run store at ``root``
    (the default store when None), or inside any other run store (:func:`store_holding`):
    only the store writes its files, and a command's output
    there could overwrite a run's history, weights or config. Every command that writes
    calls this before it writes anything."""
    if out is None:
        return
    base = Path(root) if root is not None else default_root()
    if not is_inside(base, out):
        # Another store than the configured one is just as much the store's to write.
        base = store_holding(out) or base
    if is_inside(base, out):
        raise UsageError(f"{option} {out} is inside the run store {base}, whose files only "
                         f"cnnbench writes (it could overwrite a run's files); give a path "
                         f"outside it")


def history_csv(history: Mapping[str, Sequence[float]]) -> bytes:
    """history.csv's bytes: ``epoch,loss,acc,val_loss,val_acc,seconds``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("epoch",) + HISTORY_KEYS)
    for i in range(len(history["loss"])):
        # repr() round-trips a float exactly: the file holds the very numbers trained.
        w.writerow([i + 1] + [repr(float(history[k][i])) for k in HISTORY_KEYS])
    return buf.getvalue().encode()
