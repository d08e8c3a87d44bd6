"""The training and evaluation loop: Keras 2.2's ``fit`` semantics on tensors in memory.

The engine knows nothing of files or terminals: it takes a model, tensors and a config, and
reports progress through callbacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .nn import clipped_categorical_crossentropy, make_optimizer
from .trainstate import restore_training_state, training_state


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that determines a run's result. Defaults are the notebook's."""

    epochs: int = 12
    batch_size: int = 128  # images per step; 60k images -> 469 steps, the last of 96
    lr: float = 1.0  # Keras 2.2 Adadelta(): lr 1.0, rho 0.95, epsilon 1e-7
    rho: float = 0.95
    epsilon: float = 1e-7
    seed: int = 0
    train_limit: int | None = None  # train on the first N images; the test set stays whole
    eval_batch_size: int = 500  # does not change results, only speed

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"'{name}' must be a positive integer. Got {v!r}.")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"'train_limit' must be a positive integer. Got {self.train_limit!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    history: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("loss", "acc", "val_loss", "val_acc", "seconds")})
    test_loss: float = math.nan
    test_accuracy: float = math.nan  # fraction in [0, 1]
    test_predictions: np.ndarray | None = None  # argmax class per test image
    status: str = "finished"  # or "diverged"
    diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based

    def append(self, logs: EpochLogs) -> None:
        for k in self.history:
            self.history[k].append(getattr(logs, k))


class Callback(Protocol):
    """Progress hooks. A callback may also define ``on_train_begin(get_state)``: ``fit`` then
    hands it a function returning the full training state (see ``training_state``), which is
    exactly the state at the start of the next epoch when called from ``on_epoch_end``."""

    def on_epoch_begin(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_step_end(self, step: int, running: dict[str, float] | None) -> None: ...
    def on_epoch_end(self, logs: EpochLogs) -> None: ...


def images_to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x H x W -> float32 N x 1 x H x W in [0, 1], as the notebook's ``x / 255``."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return (t.to(torch.float32) / 255.0).unsqueeze(1)


def labels_to_tensor(y: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 500) -> tuple[float, float, np.ndarray]:
    """Mean clipped cross-entropy, accuracy and predicted classes, in inference mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    preds = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        loss_sum += clipped_categorical_crossentropy(logits, y[i:i + batch_size], "sum")
        preds.append(logits.argmax(1))
    model.train(was_training)
    pred = torch.cat(preds)
    acc = (pred == y).double().mean().item()
    return loss_sum.item() / len(x), acc, pred.cpu().numpy().astype(np.uint8)


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
        x_test: torch.Tensor, y_test: torch.Tensor, config: TrainConfig,
        callbacks: Sequence[Callback] = (), state: dict[str, Any] | None = None) -> TrainResult:
    """Train as Keras 2.2's ``model.fit(..., validation_data=(x_test, y_test))`` does.

    Each epoch reshuffles the training set (its own generator, seeded by ``config.seed``),
    takes Adadelta steps on batches of ``batch_size``, reports the batch-size-weighted mean
    loss and accuracy in training mode, then evaluates the test set in inference mode.
    Dropout draws from torch's global generator: seed it before building the model.
    ``state`` (from ``training_state``) continues a run after its last completed epoch, with
    the same numbers as a run never interrupted (same machine, same thread count).
    """
    if config.train_limit is not None:
        x_train, y_train = x_train[:config.train_limit], y_train[:config.train_limit]
    n = len(x_train)
    bs = config.batch_size
    steps = math.ceil(n / bs)
    optimizer = make_optimizer(model, config.lr, config.rho, config.epsilon)
    shuffle = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    done = 0
    if state is not None:
        done, result.history = restore_training_state(state, model, optimizer, shuffle)
    get_state: Callable[[], dict[str, Any]] = lambda: training_state(  # noqa: E731
        model, optimizer, shuffle, result.history)
    for cb in callbacks:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin(get_state)
    preds = None

    for epoch in range(done + 1, config.epochs + 1):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, config.epochs, steps)
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(x_train.device)
        # Sums stay on the device: one host sync an epoch instead of one a step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=x_train.device)
        correct = torch.zeros((), dtype=torch.int64, device=x_train.device)
        for step in range(steps):
            idx = perm[step * bs:(step + 1) * bs]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = clipped_categorical_crossentropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            running = None
            if step % 25 == 24 or step == steps - 1:  # an occasional sync for the progress bar
                seen = min((step + 1) * bs, n)
                running = {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}
                if not math.isfinite(running["loss"]):
                    result.status, result.diverged_at = "diverged", (epoch, step + 1)
                    return result
            for cb in callbacks:
                cb.on_step_end(step + 1, running)
        val_loss, val_acc, preds = evaluate(model, x_test, y_test, config.eval_batch_size)
        logs = EpochLogs(epoch, loss_sum.item() / n, correct.item() / n, val_loss, val_acc,
                         time.perf_counter() - start)
        result.append(logs)
        for cb in callbacks:
            cb.on_epoch_end(logs)
    if preds is None:  # resumed after the last epoch: only the predictions are missing
        _, _, preds = evaluate(model, x_test, y_test, config.eval_batch_size)
    # Keras' evaluate() after fit gives the last epoch's val_* numbers: reuse them.
    result.test_loss, result.test_accuracy = result.history["val_loss"][-1], result.history[
        "val_acc"][-1]
    result.test_predictions = preds
    return result
