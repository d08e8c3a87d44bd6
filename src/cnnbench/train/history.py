"""What one training run gives back: a line per epoch (:class:`EpochLogs`) and the run's
result (:class:`TrainResult`: Keras' History plus the final evaluation). No torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cnnbench.store.records import RunStatus, empty_history


@dataclass
class EpochLogs:
    epoch: int  # 1-based
    loss: float
    acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class TrainResult:
    """What ``fit`` returns: Keras' History plus the final evaluation."""

    history: dict[str, list[float]] = field(default_factory=empty_history)
    test_loss: float = math.nan
    test_accuracy: float = math.nan  # fraction in [0, 1]
    test_predictions: np.ndarray | None = None  # argmax class per test image
    status: RunStatus = RunStatus.FINISHED  # or DIVERGED
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based
    best_epoch: int | None = None  # early stopping's best epoch (1-based), when it ran
    stopped_epoch: int | None = None  # the epoch after which early stopping ended training

    def append(self, logs: EpochLogs) -> None:
        for k in self.history:
            self.history[k].append(getattr(logs, k))
