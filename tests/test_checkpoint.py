"""Checkpoints: atomic and checksummed files, and a bit-exact resume of ``fit``."""

from __future__ import annotations

import math

import pytest
import torch

from cnnbench.model.build import build_model
from cnnbench.model.spec import build_spec
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import (
    LAST,
    PREVIOUS,
    decode,
    encode,
    load_checkpoint,
    save_checkpoint,
)
from cnnbench.train.engine import TrainConfig, TrainResult, fit
from cnnbench.train.optim import make_optimizer
from cnnbench.train.state import training_state

TINY = {"name": "TINY", "input_shape": [8, 8, 1], "layers": [
    {"Conv2D": {"filters": 3, "kernel_size": 3, "activation": "relu"}},
    {"BatchNormalization": {}},
    {"Flatten": {}},
    {"Dense": {"units": 16, "activation": "relu"}},
    {"Dropout": {"rate": 0.5}},
    {"Dense": {"units": 4, "activation": "softmax"}}]}


def small_data(n: int = 300, n_test: int = 100):
    g = torch.Generator().manual_seed(123)
    x = torch.rand(n + n_test, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (n + n_test,), generator=g)
    x[torch.arange(len(y)), 0, y, y] += 2.0  # a learnable signal: a bright pixel per class
    return x[:n], y[:n], x[n:], y[n:]


def new_model():
    torch.manual_seed(7)
    return build_model(build_spec(TINY))


def a_state(epoch: int) -> dict:
    model = new_model()
    opt = make_optimizer(model)
    result = TrainResult()
    for _ in range(epoch):
        result.history["loss"].append(1.0 / (epoch + 1))
        for k in ("acc", "val_loss", "val_acc", "seconds"):
            result.history[k].append(0.5)
    return training_state(model, opt, torch.Generator().manual_seed(1), result.history)


class Snapshot(Callback):
    """Engine callback keeping the training state after each epoch, as the store does."""

    def __init__(self):
        self.states = []

    def on_train_begin(self, get_state):
        self.get_state = get_state

    def on_epoch_end(self, logs):
        # Through the file format: what is resumed is what was on disk.
        self.states.append(decode(encode(self.get_state()), "memory"))


@pytest.mark.slow
def test_checkpoint_round_trip_keeps_every_tensor_and_value(tmp_path):
    state = a_state(2)
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)
    assert loaded["epoch"] == 2 and loaded["history"] == state["history"]
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v), k
    assert torch.equal(loaded["rng"]["shuffle"], state["rng"]["shuffle"])
    assert loaded["rng"]["python"] == state["rng"]["python"]
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"


def test_second_save_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, a_state(1))
    save_checkpoint(tmp_path, a_state(2))
    assert decode((tmp_path / LAST).read_bytes(), "last")["epoch"] == 2
    assert decode((tmp_path / PREVIOUS).read_bytes(), "prev")["epoch"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty"])
def test_damaged_last_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    save_checkpoint(tmp_path, a_state(1))
    save_checkpoint(tmp_path, a_state(2))
    path = tmp_path / LAST
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        i = len(data) - 100
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        path.write_bytes(b"")
    warnings = []
    loaded = load_checkpoint(tmp_path, warn=warnings.append)
    assert loaded["epoch"] == 1
    assert len(warnings) == 1 and str(path) in warnings[0]
    expected = {"truncate": "truncated", "flip_byte": "checksum mismatch", "empty": "bad header"}
    assert expected[damage] in warnings[0]


def test_no_good_checkpoint_gives_none_and_says_why(tmp_path):
    save_checkpoint(tmp_path, a_state(1))
    save_checkpoint(tmp_path, a_state(2))
    for name in (LAST, PREVIOUS):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-1])
    warnings = []
    assert load_checkpoint(tmp_path, warn=warnings.append) is None
    assert len(warnings) == 2


@pytest.mark.slow
def test_fit_resumed_from_a_checkpoint_matches_an_uninterrupted_fit_bit_for_bit():
    x, y, xt, yt = small_data()
    config = TrainConfig(epochs=3, batch_size=64, seed=5)
    snap = Snapshot()
    full = fit(new_model(), x, y, xt, yt, config, [snap])

    torch.manual_seed(999)  # another process: its global generator is anywhere
    resumed = fit(new_model(), x, y, xt, yt, config, state=snap.states[0])
    for k in ("loss", "acc", "val_loss", "val_acc"):
        assert resumed.history[k] == full.history[k], k
    assert resumed.test_accuracy == full.test_accuracy
    assert (resumed.test_predictions == full.test_predictions).all()
    assert all(math.isfinite(v) for v in full.history["loss"])


def test_fit_resumed_after_its_last_epoch_only_evaluates():
    x, y, xt, yt = small_data()
    config = TrainConfig(epochs=2, batch_size=64, seed=5)
    snap = Snapshot()
    full = fit(new_model(), x, y, xt, yt, config, [snap])
    resumed = fit(new_model(), x, y, xt, yt, config, state=snap.states[-1])
    assert resumed.history == full.history  # seconds included: nothing was trained again
    assert resumed.test_loss == full.test_loss
    assert (resumed.test_predictions == full.test_predictions).all()


@pytest.mark.slow
def test_resume_without_the_dropout_generator_state_would_differ():
    """The parity above is not luck: losing torch's global RNG state changes the numbers."""
    x, y, xt, yt = small_data()
    config = TrainConfig(epochs=2, batch_size=64, seed=5)
    snap = Snapshot()
    full = fit(new_model(), x, y, xt, yt, config, [snap])
    state = snap.states[0]
    state["rng"]["torch"] = torch.manual_seed(12345).get_state()
    resumed = fit(new_model(), x, y, xt, yt, config, state=state)
    assert resumed.history["loss"][1] != full.history["loss"][1]
