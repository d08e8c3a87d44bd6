"""One trained run as the analysis and the report see it: plain data, no torch.

Also the two facts every stage shares about a run: the names of its history columns
(:data:`HISTORY_KEYS`) and its status (:class:`RunStatus`).

The run store turns what it keeps into :class:`RunRecord` s (``RunStore.record``);
:mod:`cnnbench.analysis`, the report and ``results.json`` read nothing else, so a report can
be regenerated without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from cnnbench.model.spec import ModelSpec

# The per-epoch history, in the order of history.csv's columns (Keras' History names).
HISTORY_KEYS = ("loss", "acc", "val_loss", "val_acc", "seconds")
METRIC_KEYS = HISTORY_KEYS[:4]  # the history without the timing


def empty_history() -> dict[str, list[float]]:
    """A history with every column and no epoch."""
    return {k: [] for k in HISTORY_KEYS}


class RunStatus(StrEnum):
    """How a run stands. A ``str``: the index and the JSON files hold the bare value."""

    RUNNING = "running"  # a process trains it (or was killed doing so: see effective_status)
    FINISHED = "finished"
    DIVERGED = "diverged"  # a non-finite loss ended it: a result too, reused as one
    INTERRUPTED = "interrupted"  # Ctrl-C, a failed write, a dead worker: resumable
    FAILED = "failed"  # how a logger hears of a run its executor could not complete; stored
    # as INTERRUPTED (the same command resumes it)

    def __repr__(self) -> str:  # as the bare string it stands for, in rows, lists and logs
        return repr(self.value)

    @property
    def done(self) -> bool:
        """Finished or diverged: a result, reused rather than trained again."""
        return self in DONE


DONE = frozenset({RunStatus.FINISHED, RunStatus.DIVERGED})
STORED = (RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.INTERRUPTED)


@dataclass
class RunRecord:
    """One model trained from one seed, evaluated on the test set.

    ``test_predictions`` holds the predicted class of every test image (uint8, in test-set
    order); it may be ``None`` for a run that diverged before its final evaluation.
    ``grad_norms`` maps Keras layer names (``conv2d``, ``dense_1``, ...) to the gradient norm
    measured early in training (see :func:`cnnbench.diagnosis.gradient_norms`).
    """

    model: str
    spec: ModelSpec
    seed: int
    history: dict[str, list[float]]
    test_loss: float
    test_accuracy: float  # fraction in [0, 1]
    test_predictions: np.ndarray | None = None
    status: RunStatus = RunStatus.FINISHED  # or DIVERGED
    train_seconds: float = math.nan
    grad_norms: dict[str, float] | None = None
    environment: dict[str, Any] = field(default_factory=dict)  # study.environment()
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based
    run_id: str | None = None

    def __post_init__(self) -> None:
        missing = [k for k in METRIC_KEYS if k not in self.history]
        if missing:
            raise ValueError(f"RunRecord {self.model} seed {self.seed}: history lacks "
                             f"{missing}; expected the keys {list(HISTORY_KEYS)}.")
        self.status = RunStatus(self.status)
        if self.test_predictions is not None:
            self.test_predictions = np.asarray(self.test_predictions, dtype=np.uint8)

    @property
    def epochs(self) -> int:
        return len(self.history["val_acc"])

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.FINISHED and math.isfinite(self.test_accuracy)
