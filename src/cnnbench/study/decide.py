"""What to do with one planned run, decided from what the store holds: pure, no I/O.

Two questions, asked in order by the driver (which holds the run's lock and reads the files):

1. :func:`decide` (the index row, ``--force``, whether the finished files are there): **reuse**
   the run, or train it, in the run folder or (a ``--force`` retrain of a finished run) in
   its ``attempt/`` subfolder, with its old checkpoints cleared or kept;
2. :func:`start_from` (the checkpoint found where it trains): **resume** after the
   checkpoint's epoch, or train it **fresh**, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cnnbench.store.records import RunStatus


class Action(StrEnum):
    RESUME = "resume"  # from the last good checkpoint
    FRESH = "fresh"  # from epoch 1


@dataclass(frozen=True)
class Decision:
    """The answer to :func:`decide`: reuse, or train (where, and from which checkpoints)."""

    reuse: bool
    attempt: bool = False  # train in attempt/, the finished run left whole until replaced
    clear: bool = False  # remove the run folder's checkpoints first: they must not be resumed
    reason: str = ""  # said in the log when it is not the ordinary course


@dataclass(frozen=True)
class Start:
    """The answer to :func:`start_from`: resume after ``epoch``, or fresh (``epoch`` 0)."""

    action: Action
    epoch: int = 0
    foreign: bool = False  # the checkpoint found is another run's (or has more epochs)
    lost: bool = False  # the index counts epochs done that no checkpoint can resume


def decide(row_status: RunStatus | str | None, *, force: bool, files_complete: bool) -> Decision:
    """Reuse or train a run whose index row has ``row_status`` (None: no row).

    ``force``: ``--force`` applies to this run (for a finished or diverged run: it was so
    when the command started; one another process finished meanwhile is reused).
    ``files_complete``: a finished run's weights, predictions and history are all there.
    """
    status = RunStatus(row_status) if row_status is not None else None
    if status is not None and status.done:
        if force:
            return Decision(reuse=False, attempt=True)
        if files_complete:
            return Decision(reuse=True)
        return Decision(reuse=False, clear=True,
                        reason=f"is marked {status} but its files are incomplete; "
                               f"training it again")
    return Decision(reuse=False, clear=force)  # --force: an unfinished run starts over too


def belongs(state: dict[str, Any], rid: str, epochs: int) -> bool:
    """Whether a loaded checkpoint can resume run ``rid`` of ``epochs`` epochs."""
    return state.get("run_id") == rid and state["epoch"] <= epochs


def start_from(state: dict[str, Any] | None, *, rid: str, epochs: int,
               row_status: RunStatus | str | None, epochs_done: int) -> Start:
    """Resume from ``state`` (the checkpoint that loads where the run trains, or None) or
    start fresh. ``row_status``, ``epochs_done``: the run's index row (None, 0: no row)."""
    if state is not None and belongs(state, rid, epochs):
        return Start(Action.RESUME, int(state["epoch"]))
    status = RunStatus(row_status) if row_status is not None else None
    return Start(Action.FRESH, foreign=state is not None,
                 lost=status is not None and not status.done and epochs_done > 0)
