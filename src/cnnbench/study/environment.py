"""What one trained model leaves for the reports, and the environment recorded with it.

Studies run through :class:`cnnbench.runner.StudyRunner`, which keeps every run in the store.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import torch

from cnnbench import __version__
from cnnbench.model.spec import ModelSpec
from cnnbench.train.engine import TrainConfig, TrainResult


@dataclass
class ModelResult:
    spec: ModelSpec
    config: TrainConfig
    result: TrainResult
    wall_seconds: float


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and settings recorded with every result."""
    return {
        "cnnbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
