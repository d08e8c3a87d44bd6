"""One trained run as the analysis and the report see it: plain data, no torch.

The run store (or ``cnnbench run`` directly) turns whatever it keeps into a list of
:class:`RunRecord`; :mod:`cnnbench.analysis`, :mod:`cnnbench.diagnosis` and
:mod:`cnnbench.report.html` read nothing else, so a report can be regenerated without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnbench.model.spec import ModelSpec

HISTORY_KEYS = ("loss", "acc", "val_loss", "val_acc", "seconds")


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
    status: str = "finished"  # or "diverged"
    train_seconds: float = math.nan
    grad_norms: dict[str, float] | None = None
    environment: dict[str, Any] = field(default_factory=dict)  # study.environment()
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based
    run_id: str | None = None

    def __post_init__(self) -> None:
        missing = [k for k in ("loss", "acc", "val_loss", "val_acc") if k not in self.history]
        if missing:
            raise ValueError(f"RunRecord {self.model} seed {self.seed}: history lacks "
                             f"{missing}; expected the keys {list(HISTORY_KEYS)}.")
        if self.test_predictions is not None:
            self.test_predictions = np.asarray(self.test_predictions, dtype=np.uint8)

    @property
    def epochs(self) -> int:
        return len(self.history["val_acc"])

    @property
    def finished(self) -> bool:
        return self.status == "finished" and math.isfinite(self.test_accuracy)
