"""The training and evaluation loop: Keras 2.2's ``fit`` semantics on tensors in memory.

The engine knows nothing of files or terminals: it takes a model, tensors and a config, and
reports progress through callbacks.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from cnnbench.constraints import Constraint, check
from cnnbench.data.holdout import StopState, split_at, stop_state
from cnnbench.errors import ConstraintError
from cnnbench.model.build import clipped_categorical_crossentropy
from cnnbench.settings import DEFAULTS, SETTINGS, check_holdout
from cnnbench.store.records import RunStatus
from cnnbench.train.callbacks import Callback
from cnnbench.train.fastpath import keep_freed_memory, optimizer_step, prepare_model
from cnnbench.train.history import EpochLogs, TrainResult
from cnnbench.train.optim import (
    describe_optimizer,
    resolve_optimizer,
    torch_optimizer,
    with_learning_rate,
)
from cnnbench.train.precision import autocast, bf16_weight_copies
from cnnbench.train.state import restore_training_state, training_state


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that determines a run's result. Defaults are the notebook's.

    The optimizer is a Keras name and its Keras-named arguments, Adadelta like any other:
    ``optimizer_args`` may name some (``(("learning_rate", 0.1),)``) and always holds all of
    them once the config is made, defaults filled in, in Keras' order.
    """

    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]  # 60k images -> 469 steps, the last of 96
    seed: int = DEFAULTS["seed"]
    train_limit: int | None = DEFAULTS["train_limit"]  # the first N images; the test set stays
    precision: str = DEFAULTS["precision"]  # fp32 (faithful), bf16 (autocast)
    eval_batch_size: int = DEFAULTS["eval_batch_size"]  # does not change results, only speed
    optimizer: str = DEFAULTS["optimizer"]  # Keras 2.2 Adadelta(): lr 1.0, rho 0.95, eps 1e-7
    optimizer_args: tuple[tuple[str, Any], ...] = DEFAULTS["optimizer_args"]
    # A held-out validation set (holdout.py, Keras' semantics): the last fraction / number of
    # the training images; val_* then come from it and the test set is evaluated once, at the
    # end. 0: the notebook's protocol, the test set as validation data.
    validation_split: float = DEFAULTS["validation_split"]
    validation_size: int = DEFAULTS["validation_size"]
    # Keras EarlyStopping on the validation set: None (off) or its patience in epochs.
    early_stopping: int | None = DEFAULTS["early_stopping"]
    monitor: str = DEFAULTS["monitor"]
    min_delta: float = DEFAULTS["min_delta"]
    restore_best_weights: bool = DEFAULTS["restore_best_weights"]
    baseline: float | None = DEFAULTS["baseline"]  # Keras' EarlyStopping(baseline=)

    def __post_init__(self) -> None:
        for name, c in CHECKS.items():
            check(getattr(self, name), c, name, "TrainConfig")
        args = resolve_optimizer(self.optimizer, self.optimizer_args, "TrainConfig")
        object.__setattr__(self, "optimizer_args", tuple(args.items()))  # frozen: once, here
        check_holdout(self.to_dict(), "TrainConfig")

    def stop_state(self, history: Mapping[str, Sequence[float]]) -> StopState:
        """Early stopping's replay of a history under these settings (patience 0 if off)."""
        return stop_state(history[self.monitor], self.monitor, self.early_stopping or 0,
                          self.min_delta, self.baseline)

    @property
    def holdout(self) -> bool:
        """Whether validation data is held out of the training set (else: the test set)."""
        return bool(self.validation_split or self.validation_size)

    @property
    def learning_rate(self) -> float:
        lr: float = dict(self.optimizer_args)["learning_rate"]
        return lr

    def with_learning_rate(self, lr: float) -> TrainConfig:
        """The same settings at learning rate ``lr`` (``--lr``), whichever the optimizer."""
        return replace(self, optimizer_args=with_learning_rate(self.optimizer,
                                                               self.optimizer_args, lr))

    def optimizer_label(self) -> str:
        """E.g. ``Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-07)``, every argument."""
        return describe_optimizer(self.optimizer, dict(self.optimizer_args))

    def to_dict(self) -> dict[str, Any]:
        """Every setting, the optimizer's arguments as a mapping: what the run key hashes
        (version 2: every setting spelled out, see ``run_store.KEY_VERSION``) and
        config.json records."""
        d = asdict(self)
        d["optimizer_args"] = dict(self.optimizer_args)
        return d


# The checks of single settings; the optimizer's arguments are checked by optim.py.
CHECKS: dict[str, Constraint] = {s.name: s.constraint for s in SETTINGS
                                 if s.name not in ("optimizer", "optimizer_args")}


def resolve_device(device: str = "auto") -> torch.device:
    """auto, cpu, cuda or cuda:N as a torch device; ConstraintError for any other, or for CUDA
    where this torch sees none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:[0-9]{1,3})?", device):
        raise ConstraintError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConstraintError(f"--device {device}: this torch ({torch.__version__}) sees no "
                                  f"CUDA device; use --device cpu or auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConstraintError(f"--device {device}: there are {torch.cuda.device_count()} "
                                  f"CUDA device(s), numbered from 0")
    return resolved


class TrainStep(Protocol):
    """``step(xb, yb) -> (loss, logits)``, carrying its optimizer (for checkpoints) and
    ``wait_compiled()``: blocks until the fused optimizer step is built, and says whether it
    was (benchmarks time the steady state)."""

    optimizer: torch.optim.Optimizer
    wait_compiled: Callable[[], bool]

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...


def make_train_step(model: nn.Module, config: TrainConfig, compile_optimizer: bool = True
                    ) -> TrainStep:
    """One training step, ``step(xb, yb) -> (loss, logits)``, with the engine's fast paths.

    In bf16 the forward pass runs on bf16 copies of the Conv2d/Linear weights that the
    optimizer step writes as it updates the fp32 weights, instead of autocast casting every
    weight to bf16 and every weight gradient back, twice a step (CNN_MNIST_2's Dense(1024):
    2 x 2.3 ms of a 31 ms step). The numbers are autocast's: the same roundings, made
    elsewhere. The copies are taken from the model at the first step, so a model may be
    loaded (a checkpoint) between ``make_train_step`` and that step.

    ``fit`` uses it; so does bench/bench_engine.py, which times exactly this function.
    """
    from torch.func import functional_call

    device = next(model.parameters()).device
    keep_freed_memory()
    prepare_model(model)
    optimizer = torch_optimizer(model.parameters(), config.optimizer, config.optimizer_args)
    copies = bf16_weight_copies(model) if config.precision == "bf16" else {}
    params = dict(model.named_parameters())
    weights16: dict[torch.Tensor, torch.Tensor] = {params[n]: w for n, w in copies.items()}
    step_optimizer = optimizer_step(optimizer, compile=compile_optimizer, weights16=weights16)
    synced = False

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal synced
        if not synced:
            with torch.no_grad():
                for p, w in weights16.items():
                    w.copy_(p)
            synced = True
        with autocast(device, config.precision):
            logits = functional_call(model, copies, (xb,)) if copies else model(xb)
        loss = clipped_categorical_crossentropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        for w in copies.values():
            w.grad = None
        loss.backward()
        step_optimizer()
        return loss, logits

    train_step = cast(TrainStep, step)
    train_step.optimizer = optimizer  # for checkpoints
    # Blocks until the fused optimizer step is compiled (benchmarks time the steady state).
    train_step.wait_compiled = getattr(step_optimizer, "wait_compiled", lambda: False)
    return train_step


def _cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 500, precision: str = "fp32") -> tuple[float, float, np.ndarray]:
    """Mean clipped cross-entropy, accuracy and predicted classes, in inference mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    preds = []
    for i in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            logits = model(x[i:i + batch_size])
        loss_sum += clipped_categorical_crossentropy(logits, y[i:i + batch_size], "sum")
        preds.append(logits.argmax(1))
    model.train(was_training)
    pred = torch.cat(preds)
    acc = (pred == y).double().mean().item()
    return loss_sum.item() / len(x), acc, pred.cpu().numpy().astype(np.uint8)


def _validation_split(config: TrainConfig, x_train: torch.Tensor, y_train: torch.Tensor,
                      x_test: torch.Tensor, y_test: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The arrays trained on and validated on: the (limited) training set and the test set,
    or the training set's first and last part with a holdout (Keras' validation_split)."""
    if config.train_limit is not None:
        x_train, y_train = x_train[:config.train_limit], y_train[:config.train_limit]
    if not config.holdout:
        return x_train, y_train, x_test, y_test
    at = split_at(len(x_train), config.validation_split, config.validation_size)
    return x_train[:at], y_train[:at], x_train[at:], y_train[at:]


class _BestEpoch:
    """EarlyStopping's bookkeeping: whether to stop, and the best epoch's weights (kept only
    while they are not the model's own, and carried in checkpoints)."""

    def __init__(self, model: nn.Module, config: TrainConfig, result: TrainResult) -> None:
        self.model, self.config, self.result = model, config, result
        self.active = config.early_stopping is not None
        self.keep = self.active and config.restore_best_weights
        self.weights: dict[str, torch.Tensor] | None = None

    def state(self) -> StopState:
        return self.config.stop_state(self.result.history)

    def resume(self, state: dict[str, Any] | None, done: int) -> None:
        if self.keep and done:
            # The checkpoint holds the best epoch's weights when they are not the model's own.
            self.weights = state.get("best_model") if state is not None else None
            if self.weights is None and self.state().best_epoch == done:
                self.weights = _cpu_weights(self.model)

    def checkpoint_extra(self) -> dict[str, Any]:
        if self.weights is not None and \
                self.state().best_epoch != len(self.result.history["loss"]):
            return {"best_model": self.weights}
        return {}

    def epoch_done(self, epoch: int) -> None:
        if self.keep and self.state().best_epoch == epoch:
            self.weights = _cpu_weights(self.model)

    def should_stop(self) -> bool:
        return self.active and bool(self.state().stop)

    def finish(self) -> bool:
        """Record the best and stopped epochs; restore the best weights. True if restored."""
        s = self.state()
        self.result.best_epoch = s.best_epoch
        self.result.stopped_epoch = len(self.result.history["loss"]) if s.stop else None
        if self.keep and self.weights is not None:
            self.model.load_state_dict(self.weights)  # Keras 3.15: also when it ran to the end
            return True
        return False


def _train_epoch(step_fn: Any, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
                 batch_size: int, callbacks: Sequence[Callback]
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One epoch's steps: (loss sum, correct count, first non-finite step, 0 if none). The
    progress callbacks hear the running numbers every 25 steps, and training stops at the
    first of those looks after a non-finite loss."""
    n = len(x)
    steps = math.ceil(n / batch_size)
    # Sums stay on the device: one host sync an epoch instead of one a step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    first_bad = torch.zeros((), dtype=torch.int64, device=x.device)  # 0: all finite
    for step in range(steps):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        loss, logits = step_fn(xb, yb)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        # Remember the first non-finite step without a host sync.
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()),
                                step + 1, first_bad)
        running = None
        if step % 25 == 24 or step == steps - 1:  # an occasional sync for the progress bar
            seen = min((step + 1) * batch_size, n)
            running = {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}
            if first_bad.item():
                return loss_sum, correct, int(first_bad)
        for cb in callbacks:
            cb.on_step_end(step + 1, running)
    return loss_sum, correct, 0


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
        x_test: torch.Tensor, y_test: torch.Tensor, config: TrainConfig,
        callbacks: Sequence[Callback] = (), state: dict[str, Any] | None = None,
        compile_optimizer: bool = True) -> TrainResult:
    """Train as Keras 2.2's ``model.fit(..., validation_data=(x_test, y_test))`` does.

    Each epoch reshuffles the training set (its own generator, seeded by ``config.seed``),
    takes Adadelta steps on batches of ``batch_size``, reports the batch-size-weighted mean
    loss and accuracy in training mode, then evaluates the validation data in inference mode.
    Dropout draws from torch's global generator: seed it before building the model.
    ``state`` (from ``training_state``) continues a run after its last completed epoch, with
    the same numbers as a run never interrupted (same machine, same thread count).

    With ``validation_split`` / ``validation_size`` the validation data is the last part of
    the (limited) training arrays, as Keras' ``fit(validation_split=...)`` takes it, and the
    test set is evaluated once, after training (after restoring the best epoch's weights when
    early stopping asks for it). Otherwise the test set validates, as in the notebook.
    """
    x_train, y_train, x_val, y_val = _validation_split(config, x_train, y_train, x_test, y_test)
    n, steps = len(x_train), math.ceil(len(x_train) / config.batch_size)
    step_fn = make_train_step(model, config, compile_optimizer)
    shuffle = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    done = 0
    if state is not None:
        done, result.history = restore_training_state(state, model, step_fn.optimizer, shuffle)
    best = _BestEpoch(model, config, result)
    best.resume(state, done)

    def get_state() -> dict[str, Any]:
        return training_state(model, step_fn.optimizer, shuffle, result.history) | \
            best.checkpoint_extra()

    for cb in callbacks:
        cb.on_train_begin(get_state)
    preds = None
    for epoch in range(done + 1, config.epochs + 1):
        if done and best.should_stop():
            break  # resumed after early stopping had ended it: nothing more to train
        for cb in callbacks:
            cb.on_epoch_begin(epoch, config.epochs, steps)
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(x_train.device)
        loss_sum, correct, bad_step = _train_epoch(step_fn, x_train, y_train, perm,
                                                   config.batch_size, callbacks)
        if bad_step:
            result.status, result.diverged_at = RunStatus.DIVERGED, (epoch, bad_step)
            return _ended(result, callbacks)
        val_loss, val_acc, preds = evaluate(model, x_val, y_val, config.eval_batch_size,
                                            config.precision)
        logs = EpochLogs(epoch, loss_sum.item() / n, correct.item() / n, val_loss, val_acc,
                         time.perf_counter() - start)
        result.append(logs)
        best.epoch_done(epoch)
        for cb in callbacks:
            cb.on_epoch_end(logs)
        done = epoch
        if best.should_stop():
            break
    if best.active and best.finish():
        preds = None
    _final_evaluation(model, x_test, y_test, config, result, preds)
    return _ended(result, callbacks)


def _final_evaluation(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor,
                      config: TrainConfig, result: TrainResult, preds: np.ndarray | None
                      ) -> None:
    """The test numbers: evaluated once after training with a holdout; else Keras'
    evaluate() after fit, which gives the last epoch's val_* numbers."""
    if config.holdout:  # nothing was selected on the test set
        result.test_loss, result.test_accuracy, preds = evaluate(
            model, x_test, y_test, config.eval_batch_size, config.precision)
    else:
        if preds is None:  # resumed after the last epoch: only the predictions are missing
            _, _, preds = evaluate(model, x_test, y_test, config.eval_batch_size,
                                   config.precision)
        result.test_loss = result.history["val_loss"][-1]
        result.test_accuracy = result.history["val_acc"][-1]
    result.test_predictions = preds


def _ended(result: TrainResult, callbacks: Sequence[Callback]) -> TrainResult:
    for cb in callbacks:
        cb.on_train_end(result)
    return result
