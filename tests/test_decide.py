"""study/decide.py: reuse, resume or fresh, from the index row, the checkpoint and --force.
No store, no executor, no training: the decision alone, for every case the driver meets."""

from __future__ import annotations

import dataclasses

import pytest

from cnnbench.store.records import DONE, HISTORY_KEYS, RunStatus
from cnnbench.store.run_store import STATUSES
from cnnbench.study.decide import Action, Decision, Start, belongs, decide, start_from

RID, EPOCHS = "0123456789ab", 3


def state(epoch: int, rid: str = RID) -> dict:
    return {"run_id": rid, "epoch": epoch, "history": {k: [0.0] * epoch for k in HISTORY_KEYS}}


# --- decide: reuse, or train where ----------------------------------------------------------

@pytest.mark.parametrize("status", ["finished", "diverged"])
def test_a_done_run_with_its_files_is_reused(status):
    assert decide(status, force=False, files_complete=True) == Decision(reuse=True)


@pytest.mark.parametrize("status", ["finished", "diverged"])
def test_force_retrains_a_done_run_in_attempt_keeping_its_checkpoints(status):
    d = decide(status, force=True, files_complete=True)
    assert (d.reuse, d.attempt, d.clear) == (False, True, False)


def test_a_finished_run_with_missing_files_is_trained_again_from_scratch():
    d = decide("finished", force=False, files_complete=False)
    assert (d.reuse, d.attempt, d.clear) == (False, False, True)
    assert d.reason == "is marked finished but its files are incomplete; training it again"


@pytest.mark.parametrize("status", [None, "running", "interrupted", RunStatus.FAILED])
def test_an_unfinished_run_trains_in_its_folder_and_force_clears_its_checkpoints(status):
    assert decide(status, force=False, files_complete=False) == Decision(reuse=False)
    forced = decide(status, force=True, files_complete=False)
    assert (forced.reuse, forced.attempt, forced.clear) == (False, False, True)


# --- start_from: resume or fresh ------------------------------------------------------------

@pytest.mark.parametrize("status", ["interrupted", "running"])  # running: killed mid-epoch
def test_an_unfinished_run_with_its_checkpoint_resumes_after_that_epoch(status):
    assert start_from(state(2), rid=RID, epochs=EPOCHS, row_status=status,
                      epochs_done=2) == Start(Action.RESUME, 2)


def test_a_checkpoint_of_another_run_is_not_resumed_and_the_lost_epochs_are_said():
    s = start_from(state(1, rid="ffffffffffff"), rid=RID, epochs=EPOCHS,
                   row_status="interrupted", epochs_done=1)
    assert s == Start(Action.FRESH, 0, foreign=True, lost=True)


def test_a_checkpoint_of_more_epochs_than_planned_is_not_resumed():
    s = start_from(state(EPOCHS + 1), rid=RID, epochs=EPOCHS, row_status=None, epochs_done=0)
    assert (s.action, s.epoch, s.foreign, s.lost) == (Action.FRESH, 0, True, False)
    assert not belongs(state(EPOCHS + 1), RID, EPOCHS) and belongs(state(EPOCHS), RID, EPOCHS)


def test_no_usable_checkpoint_for_epochs_the_index_counts_restarts_from_epoch_1():
    """A corrupt or deleted checkpoint loads as None (load_checkpoint tries the previous one
    first): the run starts over, and says why when the index counted epochs."""
    assert start_from(None, rid=RID, epochs=EPOCHS, row_status="interrupted",
                      epochs_done=2) == Start(Action.FRESH, lost=True)
    assert start_from(None, rid=RID, epochs=EPOCHS, row_status="interrupted",
                      epochs_done=0) == Start(Action.FRESH)
    assert start_from(None, rid=RID, epochs=EPOCHS, row_status=None,
                      epochs_done=0) == Start(Action.FRESH)


def test_a_forced_retrain_resumes_its_attempt_and_a_fresh_one_loses_nothing():
    """In attempt/ the row is the finished run's: its epochs are not lost by a fresh start."""
    assert start_from(state(1), rid=RID, epochs=EPOCHS, row_status="finished",
                      epochs_done=EPOCHS) == Start(Action.RESUME, 1)
    assert start_from(None, rid=RID, epochs=EPOCHS, row_status="finished",
                      epochs_done=EPOCHS) == Start(Action.FRESH)


# --- the shared facts -------------------------------------------------------------------------

def test_run_status_is_the_index_strings_and_done_is_finished_or_diverged():
    assert STATUSES == ("running", "finished", "diverged", "interrupted")
    assert RunStatus("finished") is RunStatus.FINISHED and RunStatus.FINISHED == "finished"
    assert f"{RunStatus.DIVERGED}" == "diverged"  # as the index, the logs and JSON write it
    assert {s for s in RunStatus if s.done} == set(DONE) == {"finished", "diverged"}
    assert repr([RunStatus.FINISHED]) == "['finished']"  # a row or a list prints as before
    with pytest.raises(ValueError):
        RunStatus("stuck")


def test_history_keys_are_the_engines_epoch_fields():
    from cnnbench.train.engine import EpochLogs, TrainResult
    assert tuple(f.name for f in dataclasses.fields(EpochLogs))[1:] == HISTORY_KEYS
    assert tuple(TrainResult().history) == HISTORY_KEYS
