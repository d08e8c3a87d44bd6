"""A held-out validation set and early stopping, with Keras' semantics. No torch here.

* ``validation_split=f`` (Keras ``fit``): the validation data is the **last** fraction f of the
  training arrays given, split at ``floor(n * (1 - f))``, taken before any shuffling; the
  shuffle then applies to the rest each epoch. ``validation_size=k`` holds out the last k
  images instead (cnnbench's addition: a fixed holdout whatever ``train_limit`` is).
* ``EarlyStopping(monitor, patience, min_delta, restore_best_weights)`` (Keras 3): after each
  epoch ``wait`` grows by one and resets to 0 on an improvement (``value + min_delta < best``
  for a loss, ``value - min_delta > best`` for an accuracy); training stops after the epoch
  where ``wait >= patience`` (never after the first, nor after an improvement). With a
  ``baseline``, an improvement resets ``wait`` only if it also beats the baseline. With
  ``restore_best_weights`` the best
  epoch's weights are put back at the end, also when training ran to its last epoch
  (Keras 3.15).

Both are functions of the sizes and of the history alone, so a resumed run decides exactly as
an uninterrupted one: a run that stopped early, resumed, trains no further epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnbench.errors import ConstraintError
from cnnbench.settings import MONITORS


def split_at(n: int, validation_split: float = 0.0, validation_size: int = 0) -> int:
    """How many of ``n`` training images are trained on; the rest, the last ones, validate.

    >>> split_at(60000, validation_split=0.1), split_at(1001, validation_split=0.1)
    (54000, 900)
    >>> split_at(60000, validation_size=5000)
    55000
    """
    if validation_split and validation_size:
        raise ConstraintError(f"give validation_split or validation_size, not both. Got "
                              f"validation_split={validation_split!r}, "
                              f"validation_size={validation_size!r}.")
    if validation_size:
        at = n - validation_size
    else:
        at = int(math.floor(n * (1.0 - validation_split)))  # Keras' own rounding
    if validation_split or validation_size:
        if at < 1 or at >= n:
            raise ConstraintError(f"a validation set of {n - at} of {n} training images leaves "
                                  f"{'nothing to train on' if at < 1 else 'no validation image'}; "
                                  f"choose a smaller validation_size or a larger train_limit.")
    return at


def improved(value: float, best: float, monitor: str, min_delta: float = 0.0) -> bool:
    """Keras' ``_is_improvement``: a loss must fall, an accuracy rise, by more than min_delta.
    NaN never improves."""
    if math.isnan(value):
        return False
    if monitor.endswith("loss"):
        return value + min_delta < best
    return value - min_delta > best


@dataclass(frozen=True)
class StopState:
    """Early stopping's view of a history: the best epoch so far and whether to stop."""

    best_epoch: int  # 1-based; 0 when no epoch has a usable value yet
    best: float
    wait: int
    stop: bool  # training stops after the last epoch of the history
    epochs: int  # the epochs read: up to the one it stops after, else all


def stop_state(values: Sequence[float], monitor: str = "val_loss", patience: int = 0,
               min_delta: float = 0.0, baseline: float | None = None) -> StopState:
    """Replay Keras' EarlyStopping over a monitored history (one value an epoch). With a
    ``baseline``, an improvement resets the patience only if it also beats the baseline, so
    a run that never does (one stuck at chance) stops after ``patience`` epochs.

    >>> stop_state([2.31, 2.305, 2.303, 2.302], patience=2, baseline=2.0).stop
    False
    >>> stop_state([2.31, 2.305, 2.303, 2.304, 2.2], patience=2, baseline=2.0).epochs
    4
    """
    if monitor not in MONITORS:
        raise ConstraintError(f"the early-stopping monitor must be one of {', '.join(MONITORS)}. "
                              f"Got {monitor!r}.")
    best = math.inf if monitor.endswith("loss") else -math.inf
    best_epoch, wait, stop, i = 0, 0, False, -1
    for i, v in enumerate(values):
        stop = False
        wait += 1
        if improved(float(v), best, monitor, min_delta):
            best, best_epoch = float(v), i + 1
            if baseline is None or improved(float(v), baseline, monitor, min_delta):
                wait = 0
            continue
        if wait >= patience and i > 0:
            stop = True
            break
    return StopState(best_epoch, best, wait, stop, i + 1)


def best_epoch(values: Sequence[float], monitor: str = "val_loss") -> int:
    """The 1-based epoch with the best monitored value (the first of ties); 0 if none."""
    return stop_state(values, monitor, patience=len(values) + 1).best_epoch
