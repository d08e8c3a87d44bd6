"""study.py: several models, identical conditions, results in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnbench.data import Dataset, DatasetInfo
from cnnbench.engine import TrainConfig
from cnnbench.spec import SpecError, build_spec
from cnnbench.study import environment, run_study


def tiny_dataset(n_classes: int = 3) -> Dataset:
    rng = np.random.default_rng(0)
    info = DatasetInfo(name="tiny", sha256={}, classes=tuple(str(i) for i in range(n_classes)))
    return Dataset(info, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
                   y_train=rng.integers(0, n_classes, 40, dtype=np.uint8),
                   x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
                   y_test=rng.integers(0, n_classes, 10, dtype=np.uint8), source="memory")


def spec(name: str, units: int = 3):
    return build_spec({"name": name, "input_shape": [8, 8, 1], "layers": [
        "Flatten", {"Dense": {"units": 6, "activation": "relu"}},
        {"Dense": {"units": units, "activation": "softmax"}}]})


def test_run_study_trains_each_model_from_the_same_seed_in_order():
    config = TrainConfig(epochs=2, batch_size=16, seed=5)
    results = run_study([spec("a"), spec("b")], tiny_dataset(), config, torch.device("cpu"))
    assert [r.spec.name for r in results] == ["a", "b"]
    # Same architecture, same seed: same initial weights, same shuffles, same numbers.
    assert results[0].result.history["loss"] == results[1].result.history["loss"]
    assert all(r.config == config and r.wall_seconds > 0 for r in results)


def test_run_study_checks_classes_before_training_anything():
    calls = []
    with pytest.raises(SpecError, match="has 10 units but the dataset has 3 classes"):
        run_study([spec("ok"), spec("wrong", units=10)], tiny_dataset(),
                  TrainConfig(epochs=1), torch.device("cpu"),
                  callbacks=lambda s: calls.append(s.name) or ())
    assert calls == []  # no model was trained


def test_environment_records_versions():
    env = environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["threads"] >= 1
