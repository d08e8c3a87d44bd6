"""A study: several models trained under identical conditions on one dataset."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import __version__
from .data import Dataset
from .engine import Callback, TrainConfig, TrainResult, fit, images_to_tensor, labels_to_tensor
from .nn import build_model
from .spec import ModelSpec, check_classes


@dataclass
class ModelResult:
    spec: ModelSpec
    config: TrainConfig
    result: TrainResult
    wall_seconds: float
    model: torch.nn.Module | None = None  # the trained model, for saving its weights


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


def run_study(specs: Sequence[ModelSpec], dataset: Dataset, config: TrainConfig,
              device: torch.device,
              callbacks: Callable[[ModelSpec], Sequence[Callback]] = lambda s: ()
              ) -> list[ModelResult]:
    """Train each model from the same seed on the same data; return their results in order."""
    for spec in specs:
        check_classes(spec, dataset.num_classes)  # fail before any training time is spent
    x_train = images_to_tensor(dataset.x_train, device)
    y_train = labels_to_tensor(dataset.y_train, device)
    x_test = images_to_tensor(dataset.x_test, device)
    y_test = labels_to_tensor(dataset.y_test, device)
    results = []
    for spec in specs:
        torch.manual_seed(config.seed)  # the same initial draw and dropout masks for a seed
        model = build_model(spec).to(device)
        start = time.perf_counter()
        result = fit(model, x_train, y_train, x_test, y_test, config, callbacks(spec))
        results.append(ModelResult(spec, config, result, time.perf_counter() - start, model))
    return results
