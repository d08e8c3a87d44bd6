"""holdout.py and fit(): Keras' validation_split, EarlyStopping and restore_best_weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnbench.data.holdout import best_epoch, split_at, stop_state
from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.model.build import build_model
from cnnbench.model.spec import build_spec, get_spec
from cnnbench.store.run_store import resolved_spec, run_id, run_key
from cnnbench.train.callbacks import Callback
from cnnbench.train.engine import TrainConfig, evaluate, fit

PLAIN = {"name": "plain", "input_shape": [8, 8, 1], "layers": [
    "Flatten", {"Dense": {"units": 32, "activation": "tanh"}},
    {"Dense": {"units": 3, "activation": "softmax"}}]}


def data(n_train=120, n_test=40, noisy=False, seed=0):
    """Images whose index is written in pixel 0 (to see which ones are held out); labels by
    which third is bright, or random ones (noisy), which a model can only overfit."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_train + n_test)
    x = rng.integers(0, 60, (n_train + n_test, 8, 8))
    for i, c in enumerate(y):
        x[i, :, c * 2:c * 2 + 3] += 150
    if noisy:
        y = rng.integers(0, 3, n_train + n_test)
    x = x.astype(np.uint8)
    return (images_to_tensor(x[:n_train]), labels_to_tensor(y[:n_train]),
            images_to_tensor(x[n_train:]), labels_to_tensor(y[n_train:]))


# --- the split -----------------------------------------------------------------------------

def test_split_at_is_keras_floor_of_n_times_one_minus_f():
    # Keras: split_at = int(floor(num_samples * (1.0 - validation_split)))
    assert split_at(60000, validation_split=0.1) == 54000
    assert split_at(1001, validation_split=0.1) == 900  # floor(900.9)
    assert split_at(10, validation_split=0.25) == 7  # floor(7.5): 3 validate, not 2
    assert split_at(3000, validation_size=500) == 2500
    assert split_at(100) == 100


@pytest.mark.parametrize("kw", [{"validation_split": 0.999}, {"validation_size": 10},
                                {"validation_split": 0.1, "validation_size": 3}])
def test_split_at_refuses_an_empty_side_or_both_settings(kw):
    with pytest.raises(ValueError, match="validation"):
        split_at(10, **kw)


def test_fit_validates_on_exactly_the_last_images_and_trains_on_the_rest():
    """Which images: the last 25 of the first 100 (train_limit first, as the arrays given to
    Keras' fit), never shuffled into training, and the test set only at the end."""
    x, y, xt, yt = data()
    seen: set[int] = set()
    model = build_model(build_spec(PLAIN))
    real_forward = model.forward

    def spy(inp):
        if model.training:  # a training batch: record which images it holds
            seen.update(int(round(v)) for v in (inp[:, 0, 0, 0] * 255).tolist())
        return real_forward(inp)

    model.forward = spy
    x_marked = x.clone()
    x_marked[:, 0, 0, 0] = torch.arange(len(x), dtype=torch.float32) / 255
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=16, train_limit=100, validation_split=0.25)
    result = fit(model, x_marked, y, xt, yt, cfg, compile_optimizer=False)
    assert seen == set(range(75))  # images 75..99 validate, 100..119 are past train_limit
    model.forward = real_forward
    val_loss, val_acc, _ = evaluate(model, x_marked[75:100], y[75:100])
    assert result.history["val_loss"][-1] == pytest.approx(val_loss, abs=1e-6)
    assert result.history["val_acc"][-1] == pytest.approx(val_acc)
    test_loss, test_acc, preds = evaluate(model, xt, yt)
    assert result.test_loss == pytest.approx(test_loss, abs=1e-6)
    assert result.test_accuracy == pytest.approx(test_acc)
    assert np.array_equal(result.test_predictions, preds)


def test_without_holdout_the_test_set_still_validates_as_in_the_notebook():
    x, y, xt, yt = data()
    torch.manual_seed(0)
    model = build_model(build_spec(PLAIN))
    result = fit(model, x, y, xt, yt, TrainConfig(epochs=2, batch_size=32),
                 compile_optimizer=False)
    loss, acc, _ = evaluate(model, xt, yt)
    assert result.history["val_loss"][-1] == pytest.approx(loss, abs=1e-6)
    assert result.test_accuracy == result.history["val_acc"][-1]


# --- early stopping, replayed --------------------------------------------------------------

def test_stop_state_follows_keras_wait_and_patience():
    # Keras with patience=2: wait 0,0,1,2 -> stops after epoch 4; best epoch 2.
    s = stop_state([0.9, 0.5, 0.6, 0.7, 0.4], "val_loss", patience=2)
    assert (s.best_epoch, s.best, s.stop, s.epochs) == (2, 0.5, True, 4)
    # min_delta: 0.45 is not below 0.5 - 0.1, so it does not count as an improvement.
    assert stop_state([0.5, 0.45, 0.44], "val_loss", 1, min_delta=0.1).best_epoch == 1
    # An accuracy must rise; patience 0 stops at the first epoch that does not improve.
    s = stop_state([0.8, 0.9, 0.9, 0.95], "val_acc", patience=0)
    assert (s.best_epoch, s.stop, s.epochs) == (2, True, 3)
    assert stop_state([math.nan, 0.3], "val_loss", patience=5).best_epoch == 2
    assert not stop_state([0.9, 0.8, 0.7], "val_loss", patience=0).stop
    assert best_epoch([0.3, 0.2, 0.2, 0.25]) == 2


def test_a_baseline_keeps_the_patience_running_until_it_is_beaten():
    # Keras 3: every value improves, but none beats 2.0, so wait is never reset; and an
    # improving epoch never stops training, so it stops at the first that does not improve.
    stuck = [2.33, 2.32, 2.31, 2.305, 2.306, 2.30]
    s = stop_state(stuck, "val_loss", patience=3, baseline=2.0)
    assert (s.stop, s.epochs, s.best_epoch) == (True, 5, 4)
    assert not stop_state(stuck, "val_loss", patience=3).stop  # without it: wait 1 at most
    # Once beaten, the baseline changes nothing: patience counts from the best as before.
    learning = [2.2, 1.5, 0.4, 0.3, 0.31, 0.32, 0.33]
    assert stop_state(learning, "val_loss", 3, baseline=2.0) == stop_state(learning, "val_loss", 3)
    assert stop_state([0.05, 0.08, 0.07, 0.1], "val_acc", 2, baseline=0.5).epochs == 3


def test_a_baseline_needs_early_stopping():
    with pytest.raises(ValueError, match="baseline is early stopping's"):
        TrainConfig(validation_split=0.1, baseline=2.0)


def test_early_stopping_needs_a_holdout():
    with pytest.raises(ValueError, match="held-out validation set"):
        TrainConfig(early_stopping=2)


class Snapshots(Callback):
    """A callback keeping the whole training state after every epoch (a checkpoint each)."""

    def __init__(self):
        self.states = []

    def on_train_begin(self, get_state):
        self.get_state = get_state

    def on_epoch_end(self, logs):
        self.states.append(self.get_state())


ES = dict(epochs=12, batch_size=16, validation_split=0.3, early_stopping=2, train_limit=120)


def _fit_noisy(state=None, **extra):
    x, y, xt, yt = data(noisy=True)
    torch.manual_seed(0)
    model = build_model(build_spec(PLAIN))
    snaps = Snapshots()
    result = fit(model, x, y, xt, yt, TrainConfig(**(ES | extra)), [snaps], state=state,
                 compile_optimizer=False)
    return model, result, snaps, (xt, yt)


def test_early_stopping_stops_as_keras_and_restores_the_best_epochs_weights():
    model, result, snaps, (xt, yt) = _fit_noisy()
    h = result.history
    replay = stop_state(h["val_loss"], "val_loss", patience=2)
    assert replay.stop and len(h["loss"]) < 12  # random labels: the holdout loss rises
    assert result.stopped_epoch == len(h["loss"]) == replay.best_epoch + 2  # patience 2
    assert result.best_epoch == replay.best_epoch == int(np.argmin(h["val_loss"])) + 1
    best = snaps.states[result.best_epoch - 1]["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k
    last = snaps.states[-1]["model"]
    assert any(not torch.equal(last[k], best[k]) for k in best)  # it did move on, then back
    loss, acc, _ = evaluate(model, xt, yt)
    assert (result.test_loss, result.test_accuracy) == (pytest.approx(loss, abs=1e-9), acc)


def test_without_restore_the_last_epochs_weights_stay():
    model, result, snaps, _ = _fit_noisy(restore_best_weights=False)
    last = snaps.states[-1]["model"]
    assert all(torch.equal(v, last[k]) for k, v in model.state_dict().items())


def test_resuming_after_the_stop_trains_no_further_epoch_and_restores_the_same_weights():
    model, result, snaps, _ = _fit_noisy()
    stop = snaps.states[-1]
    model2, result2, snaps2, _ = _fit_noisy(state=stop)
    assert snaps2.states == []  # no epoch trained
    assert result2.history == result.history and result2.best_epoch == result.best_epoch
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in model2.state_dict().items())
    assert result2.test_loss == result.test_loss


def test_resuming_mid_run_stops_at_the_same_epoch_with_the_same_weights():
    model, result, snaps, _ = _fit_noisy()
    middle = snaps.states[result.best_epoch]  # one epoch after the best: best_model saved
    assert "best_model" in middle
    model2, result2, _, _ = _fit_noisy(state=middle)
    assert result2.history["val_loss"] == result.history["val_loss"]
    assert result2.stopped_epoch == result.stopped_epoch
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in model2.state_dict().items())


# --- run ids ------------------------------------------------------------------------------

def test_the_seed_models_run_ids_are_pinned_under_key_version_2():
    """Another hashing of the same settings would orphan every run in a store. KEY_VERSION 2
    (one optimizer description) changed every id once; version 1's ids (main from
    0cf9873 to 28d908a) are never given again."""
    version_1 = {"CNN_MNIST_1": ("852f055398d7", "c881e54b5f60"),
                 "CNN_MNIST_2": ("51a4334f4ecd", "e4a81cf6ec5f"),
                 "CNN_MNIST_3": ("d453ad7c6fa5", "eb5fc12a3cde"),
                 "CNN_MNIST_4": ("c2b6f9e59b44", "0884daf69258")}
    version_2 = {"CNN_MNIST_1": ("f8abc8ccf71a", "6e402dafa138"),
                 "CNN_MNIST_2": ("2070369e8361", "e76346d10843"),
                 "CNN_MNIST_3": ("d96872ae02b2", "fca8ee28bfa0"),
                 "CNN_MNIST_4": ("79c4119ed6ab", "7c7ddb79c124")}
    other = TrainConfig(seed=3, epochs=2, train_limit=3000, precision="bf16")
    for name, ids in version_2.items():
        spec = resolved_spec(get_spec(name))
        got = (run_id(run_key(spec, TrainConfig().to_dict(), "fp")),
               run_id(run_key(spec, other.to_dict(), "fp")))
        assert got == ids and not set(got) & set(version_1[name])


def test_a_holdout_changes_the_run_id_and_is_recorded():
    spec = resolved_spec(get_spec("CNN_MNIST_2"))
    held = TrainConfig(validation_split=0.1)
    assert held.to_dict()["validation_split"] == 0.1 and held.to_dict()["early_stopping"] is None
    assert run_id(run_key(spec, held.to_dict(), "fp")) != "2070369e8361"
