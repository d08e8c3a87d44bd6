"""Keras-style progress: a live bar during each epoch on a terminal, one line per epoch."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnnbench.train.callbacks import Callback
from cnnbench.train.history import EpochLogs


def epoch_line(logs: EpochLogs, epochs: int, steps: int) -> str:
    """``Epoch 3/12 - 469/469 - 12.3s - loss: 0.0353 - acc: 0.9892 - val_loss: ...``"""
    return (f"Epoch {logs.epoch}/{epochs} - {steps}/{steps} - {logs.seconds:.1f}s - "
            f"loss: {logs.loss:.4f} - acc: {logs.acc:.4f} - "
            f"val_loss: {logs.val_loss:.4f} - val_acc: {logs.val_acc:.4f}")


class KerasProgress(Callback):
    """Engine callback printing Keras-like epoch lines; a live bar only on a terminal."""

    def __init__(self, console: Console, model_name: str) -> None:
        self.console = console
        self.name = model_name
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.epochs = self.steps = 0

    def on_epoch_begin(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs, self.steps = epochs, steps
        if self.live:
            # The label goes in as a field, not into the format string, and is not read as
            # markup: a model called 'm{}' or 'x[/]' must print as it is, not crash the bar.
            self.progress = Progress(
                TextColumn("{task.fields[label]}", markup=False), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}", markup=False),
                console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=steps, metrics="",
                                              label=f"{self.name} epoch {epoch}/{epochs}")

    def on_step_end(self, step: int, running: dict[str, float] | None) -> None:
        if self.progress is None:
            return
        if running is None:
            self.progress.update(self.task, completed=step)
        else:
            self.progress.update(self.task, completed=step,
                                 metrics=f"loss: {running['loss']:.4f} - acc: {running['acc']:.4f}")

    def on_epoch_end(self, logs: EpochLogs) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(epoch_line(logs, self.epochs, self.steps), highlight=False)
