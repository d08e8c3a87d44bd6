"""Progress hooks for ``engine.fit``: a base class whose every method does nothing.

Subclass :class:`Callback` and override only the hooks you need::

    class PrintLoss(Callback):
        def on_epoch_end(self, logs):
            print(logs.epoch, logs.loss)

Hooks, in order: ``on_train_begin(get_state)`` once, then per epoch ``on_epoch_begin``,
``on_step_end`` after every step (``running`` holds the running loss/acc every 25 steps and at
the last step, else None), ``on_epoch_end(logs)``; ``on_train_end(result)`` once when training
ends normally (finished, early-stopped or diverged; not when it raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnbench.train.history import EpochLogs, TrainResult


class Callback:
    """No-op defaults for every hook ``fit`` calls."""

    def on_train_begin(self, get_state: Callable[[], dict[str, Any]]) -> None:
        """``get_state()`` returns the full training state (``state.training_state``): called
        from ``on_epoch_end`` it is exactly the state at the start of the next epoch."""

    def on_epoch_begin(self, epoch: int, epochs: int, steps: int) -> None:
        """``epoch`` is 1-based; ``steps`` is the number of steps this epoch will take."""

    def on_step_end(self, step: int, running: dict[str, float] | None) -> None:
        """``step`` is 1-based within the epoch."""

    def on_epoch_end(self, logs: EpochLogs) -> None:
        """After the epoch's validation pass."""

    def on_train_end(self, result: TrainResult) -> None:
        """Once, with the result ``fit`` is about to return."""
