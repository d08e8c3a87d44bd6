"""What a run leaves in the store when it ends: finished, diverged, interrupted or failed.

A :class:`Session` is one run this process has begun in the store (locked, its row
"running", handed to an executor). :class:`WriteBack` checks what the executor handed back
and writes it: a finished or diverged run's files and row as one set, an interrupted or
failed one recorded resumable. The driver (``driver.py``) decides when; this module, what.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sqlite3
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.data.datasets import Dataset
from cnnbench.errors import CnnbenchError
from cnnbench.model.spec import ModelSpec
from cnnbench.store.records import HISTORY_KEYS, RunRecord, RunStatus
from cnnbench.store.run_store import ATTEMPT, FINAL_FILES, RunRow, RunStore
from cnnbench.study.environment import bit_exact_under
from cnnbench.study.executors import Done
from cnnbench.study.jobs import JobCheckpoint, JobOutput, TrainJob, usable_checkpoint
from cnnbench.study.loggers import RunLogger, make_loggers
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import remove_checkpoints
from cnnbench.train.engine import TrainConfig
from cnnbench.train.history import EpochLogs, TrainResult

Log = Callable[[str], None]


@dataclass(frozen=True)
class PlannedRun:
    """One job of a study: its spec, its key and the id its result is stored under."""

    spec: ModelSpec
    key: dict[str, Any]
    id: str


@dataclass(frozen=True)
class Outcome:
    """A run of a study as the store holds it now, and how this command came by it:
    ``origin`` 'trained', 'resumed' or 'reused'; ``retries``: times an executor ran the job
    again after its worker died."""

    record: RunRecord
    origin: str
    retries: int = 0

    @property
    def run_id(self) -> str:
        assert self.record.run_id is not None
        return self.record.run_id


class InvalidOutput(CnnbenchError, RuntimeError):
    """A job's output that does not fit its job: refused before it enters the store."""


class SafeLogger(Callback):
    """A logger whose failure (a tracking server down, a full disk elsewhere) is reported once
    and switches it off: the store is the source of truth, a logger never costs a run."""

    def __init__(self, logger: RunLogger, model: str, log: Log) -> None:
        self.logger, self.model, self.log, self.ok = logger, model, log, True

    def _call(self, method: str, *args: Any) -> None:
        if not self.ok:
            return
        try:
            getattr(self.logger, method)(*args)
        except Exception as e:
            self.ok = False
            self.log(f"warning: {self.model}: {type(self.logger).__name__} failed and is off "
                     f"for this run ({type(e).__name__}: {str(e).splitlines()[0][:200]})")

    def start(self, *args: Any) -> None:
        self._call("start", *args)

    def on_epoch_begin(self, epoch: int, epochs: int, steps: int) -> None:
        self._call("on_epoch_begin", epoch, epochs, steps)

    def on_epoch_end(self, logs: EpochLogs) -> None:
        self._call("on_epoch_end", logs)

    def end(self, status: RunStatus, result: TrainResult | None) -> None:
        self._call("end", status, result)


def epochs_expected(config: TrainConfig, result: TrainResult) -> int:
    """A finished run's epochs: all of them, or where early stopping's replay of its own
    history stops (a worker cannot claim an early stop its numbers do not show)."""
    if config.early_stopping is None:
        return config.epochs
    state = config.stop_state(result.history)
    return state.epochs if state.stop else config.epochs


@dataclass
class Session:
    """A run this process has begun: locked, its row running, submitted to the executor."""

    planned: PlannedRun
    job: TrainJob
    state: dict[str, Any] | None  # the checkpoint it resumes from, as the driver found it
    config_doc: dict[str, Any]
    history: dict[str, list[float]]  # when it was submitted
    folder: Path  # where it trains: the run folder, or attempt/ under --force
    saver: JobCheckpoint | None = None  # in-process runs: updated every epoch
    loggers: list[SafeLogger] = field(default_factory=list)
    checkpoint_mtime: int = 0  # remote runs: the last checkpoint the driver has seen
    shown: int = 0  # remote runs: epochs whose line the driver has printed

    @property
    def attempt(self) -> bool:
        """A --force retrain of a finished run, in the run folder's attempt/ subfolder."""
        return self.folder.name == ATTEMPT

    @property
    def rid(self) -> str:
        return self.planned.id

    def epoch_lines(self, h: dict[str, list[float]], epochs: int) -> list[str]:
        """Keras-like lines for a remote run's epochs in ``h`` not shown yet (now shown)."""
        lines = [f"{self.job.label}: epoch {e + 1}/{epochs} - {h['seconds'][e]:.1f}s - loss: "
                 f"{h['loss'][e]:.4f} - acc: {h['acc'][e]:.4f} - val_loss: "
                 f"{h['val_loss'][e]:.4f} - val_acc: {h['val_acc'][e]:.4f}"
                 for e in range(max(self.shown, len(self.history["loss"])), len(h["loss"]))]
        self.shown = max(self.shown, len(h["loss"]))
        return lines


class WriteBack:
    """Writes the runs of one study (``config`` on ``dataset``) into ``store``; ``study``
    (:func:`cnnbench.study.studydoc.study_document`), when given, goes into each finished or
    diverged run's config.json."""

    def __init__(self, store: RunStore, dataset: Dataset, config: TrainConfig, log: Log,
                 loggers: tuple[str, ...], executor: str, remote: bool,
                 study: Mapping[str, Any] | None = None) -> None:
        self.store, self.dataset, self.config, self.log = store, dataset, config, log
        self.loggers, self.executor, self.remote = loggers, executor, remote
        self.study = study

    # --- runs that ended with a result -------------------------------------------------

    def reused(self, planned: PlannedRun, row: RunRow) -> Outcome:
        """A finished or diverged run the store holds whole: nothing is trained."""
        rid, name = planned.id, planned.spec.name
        record = self.store.record(rid)
        if row.status == RunStatus.DIVERGED:
            self.log(f"{name}: reused run {rid} (diverged at epoch {row.diverged_epoch},"
                     f" step {row.diverged_step}); --force trains it again")
        else:
            self.log(f"{name}: reused run {rid} (finished {row.finished}, test accuracy "
                     f"{100 * record.test_accuracy:.2f} %); --force trains it again")
        return Outcome(record, "reused")

    def finished(self, s: Session, done: Done) -> Outcome:
        """Write a job's output to the store: weights, predictions, history, the index, as one
        set (a forced retrain's set replaces the finished run's only now)."""
        out, store, rid, name = done.output, self.store, s.rid, s.planned.spec.name
        assert out is not None
        result = out.result
        if self.remote:
            self._record_remote(s, done)
        files: dict[str, bytes] = {}
        if s.attempt:  # what the retrain wrote beside its checkpoints travels with the set
            for extra in ("config.json", "grad_norms.json"):
                if (s.folder / extra).is_file():
                    files[extra] = (s.folder / extra).read_bytes()
        if self.study is not None:  # with the run's result, as one set
            doc = json.loads((s.folder / "config.json").read_bytes())
            doc["study"] = self.study
            files["config.json"] = (json.dumps(doc, indent=1) + "\n").encode()
        if result.status == RunStatus.DIVERGED:
            epoch, step = result.diverged_at or (0, 0)
            store.end(rid, RunStatus.DIVERGED, result.history, diverged_at=result.diverged_at,
                      files=files)
            if s.attempt:  # the finished run's final files do not belong to a diverged one
                for stale in FINAL_FILES:
                    (store.folder(rid) / stale).unlink(missing_ok=True)
            self.log(f"{name}: run {rid} diverged (non-finite loss) at epoch {epoch}, "
                     f"step {step}; going on with the next model")
        else:
            assert out.weights is not None
            files |= {"weights.safetensors": out.weights,
                      "predictions.npy": _npy(result.test_predictions),
                      "probabilities.npy": _npy(out.probabilities)}
            store.end(rid, RunStatus.FINISHED, result.history, result.test_loss,
                      result.test_accuracy, files=files)
        # the weights file holds the final model; a forced retrain's folder has done its job
        if s.attempt:
            shutil.rmtree(s.folder, ignore_errors=True)
        elif result.status == RunStatus.FINISHED:
            remove_checkpoints(store.folder(rid))
        for lg in s.loggers:
            lg.end(result.status, result)
        first = done.attempts[0]["resumed_from"] if done.attempts else out.resumed_from
        return Outcome(store.record(rid), "resumed" if first > 0 else "trained",
                       len(done.attempts) - 1 if done.attempts else 0)

    def check(self, s: Session, out: JobOutput) -> str | None:
        """What is wrong with a job's output before it enters the store, or None. A worker
        is trusted not to be malicious (its output is unpickled), but a bug, a stale worker
        or a mixed-up result must not become a finished run."""
        rid, ds, res = s.rid, self.dataset, out.result
        where = f"the output of run {rid} ({s.job.label}) from {out.host} pid {out.pid}"
        n_test, classes, epochs = len(ds.x_test), ds.num_classes, s.job.config.epochs
        if out.run_id != rid:
            return f"{where} names run {out.run_id}"
        if res.status not in (RunStatus.FINISHED, RunStatus.DIVERGED):
            return f"{where} has status {str(res.status)!r}, expected finished or diverged"
        lengths = {k: len(res.history.get(k, ())) for k in HISTORY_KEYS}
        n = lengths["loss"]
        if len(set(lengths.values())) != 1:
            return f"{where} has history columns of different lengths {lengths}"
        if n < len(s.history["loss"]) or n > epochs or (
                res.status == RunStatus.FINISHED and n != epochs_expected(s.job.config, res)):
            return (f"{where} has {n} epochs of history; expected {epochs}"
                    + (f" (it resumed after {len(s.history['loss'])})" if s.history["loss"]
                       else ""))
        if res.status == RunStatus.DIVERGED:
            return None
        if not (math.isfinite(res.test_loss) and 0 <= res.test_accuracy <= 1):
            return f"{where} has test loss {res.test_loss} and accuracy {res.test_accuracy}"
        preds, proba = np.asarray(res.test_predictions), np.asarray(out.probabilities)
        if preds.shape != (n_test,) or preds.dtype.kind not in "iu" or \
                (n_test and not 0 <= int(preds.min()) <= int(preds.max()) < classes):
            return (f"{where} has predictions of shape {preds.shape} ({preds.dtype}); "
                    f"expected ({n_test},) classes in 0..{classes - 1}")
        if proba.shape != (n_test, classes) or proba.dtype.kind != "f" or \
                not np.isfinite(proba).all():
            return (f"{where} has probabilities of shape {proba.shape} ({proba.dtype}); "
                    f"expected ({n_test}, {classes}), finite")
        return check_weights(out.weights, s.planned.spec, rid, where)

    def _record_remote(self, s: Session, done: Done) -> None:
        """A remote job's environment, attempts and progress, as the driver writes them."""
        out, rid, store = done.output, s.rid, self.store
        assert out is not None
        doc = s.config_doc
        doc["environment"] = out.environment
        doc["bit_exact_under"] = bit_exact_under(out.environment)
        doc["sessions"][-1] |= {"environment": out.environment, "attempts": done.attempts}
        store.write_json(s.folder / "config.json", doc)
        if out.grad_norms is not None:
            store.write_json(s.folder / "grad_norms.json", out.grad_norms)
        # Loggers see the epochs this command trained, as if they had followed them.
        s.loggers = self.start_loggers(s)
        h, start = out.result.history, len(s.history["loss"])
        for e in range(start, len(h["loss"])):
            for lg in s.loggers:
                lg.on_epoch_end(EpochLogs(e + 1, *(h[k][e] for k in HISTORY_KEYS)))
        for line in s.epoch_lines(h, self.config.epochs):  # those between two looks
            self.log(line)
        label = s.job.label
        if len(done.attempts) > 1:
            died = ", ".join(f"{a['host']} pid {a['pid']}" for a in done.attempts[:-1])
            last = done.attempts[-1]
            how = (f"resumed after epoch {last['resumed_from']}" if last["resumed_from"]
                   else "from epoch 1")
            why = ("was stopped when another run's worker died" if all(
                a.get("stopped") for a in done.attempts[:-1]) else f"its worker died ({died})")
            who = "Ray" if self.executor == "ray" else "the worker pool"
            self.log(f"{label}: run {rid}: {why}; {who} ran it again "
                     f"({len(done.attempts) - 1} retry, {how})")
        where = f"{out.host} pid {out.pid}, {out.environment.get('threads')} thread(s)"
        if out.result.status == RunStatus.FINISHED:
            self.log(f"{label}: run {rid} finished on {where} in {out.seconds:.1f} s: test "
                     f"accuracy {100 * out.result.test_accuracy:.2f} %")

    def start_loggers(self, s: Session) -> list[SafeLogger]:
        """The study's loggers for run ``s``, started (each failure reported once)."""
        loggers = [SafeLogger(lg, s.planned.spec.name, self.log)
                   for lg in make_loggers(self.loggers)]
        for lg in loggers:
            lg.start(s.rid, self.store.folder(s.rid), s.config_doc, s.history)
        return loggers

    # --- runs that ended without one -----------------------------------------------------

    def failed(self, s: Session, done: Done) -> str:
        """A job the executor could not complete: recorded resumable, the study goes on.
        What failed, for the study's closing error."""
        e = done.error
        cause = getattr(e, "cause", None) or e
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}" \
            if str(cause).strip() else type(cause).__name__
        history = self._mark_interrupted(s, self.history_now(s))
        for lg in s.loggers:
            lg.end(RunStatus.FAILED, None)
        self.log(f"{s.job.label}: run {s.rid} failed after {max(1, len(done.attempts))} "
                 f"attempt(s) ({text}); its last epoch ({len(history['loss'])}) is kept: run the "
                 f"same command again to resume" + _kept(s))
        return f"{s.job.label} ({text})"

    def stopped(self, s: Session, e: BaseException) -> None:
        """Ctrl-C, a failed write or any other exception while the run is in flight: leave it
        recorded resumable (never "running"). The caller releases its lock."""
        rid, name = s.rid, s.planned.spec.name
        history = self._mark_interrupted(s, self.history_now(s))
        after = f"after epoch {len(history['loss'])}/{self.config.epochs}"
        if isinstance(e, KeyboardInterrupt):
            self.log(f"{name}: run {rid} interrupted {after}; its last epoch is "
                     f"checkpointed" + _kept(s))
        elif isinstance(e, OSError):  # a full disk, a store gone read-only
            self.log(f"{name}: run {rid} stopped {after} because a file could not be "
                     f"written ({e}); fix that and run the same command again to resume"
                     + _kept(s))
        else:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            self.log(f"{name}: run {rid} stopped {after} ({type(e).__name__}: {first}); "
                     f"recorded interrupted, the same command resumes it" + _kept(s))
        for lg in s.loggers:
            lg.end(RunStatus.INTERRUPTED if isinstance(e, KeyboardInterrupt)
                   else RunStatus.FAILED, None)

    def history_now(self, s: Session) -> dict[str, list[float]]:
        """The history of a run in flight: what its newest checkpoint says. The saver's copy
        is one epoch behind when Ctrl-C lands after the checkpoint is renamed into place but
        before ``save_checkpoint`` returns, so the file on disk decides."""
        known = (s.saver.history if s.saver is not None else None) or s.history
        state = usable_checkpoint(s.folder, s.rid, self.config.epochs)
        if state is not None and len(state["history"]["loss"]) > len(known["loss"]):
            newer: dict[str, list[float]] = state["history"]
            return newer
        return known

    def _mark_interrupted(self, s: Session, history: dict[str, list[float]]
                          ) -> dict[str, list[float]]:
        """Record an interrupted run, as far as the disk still allows; its history so far.
        A forced retrain's finished run stays as it is: only the retrain was interrupted."""
        if s.attempt:
            return history
        try:
            self.store.end(s.rid, RunStatus.INTERRUPTED, history)
        except (OSError, sqlite3.Error) as e:  # a full disk refuses this too: say so, go on
            self.log(f"warning: could not mark run {s.rid} interrupted in {self.store.root}: "
                     f"{e}")
        return history


def _kept(s: Session) -> str:
    return ("; the finished run is kept as it was (--force again resumes the retrain)"
            if s.attempt else "")


def check_weights(data: bytes | None, spec: ModelSpec, rid: str, where: str) -> str | None:
    """A safetensors weights file's header against the spec's tensors (names, shapes) and
    its run id; what is wrong, or None. The tensors themselves are not decoded."""
    if not isinstance(data, bytes) or len(data) < 8:
        return f"{where} has no weights"
    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + size]) if size <= len(data) - 8 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        return f"{where} has weights that are not a safetensors file"
    meta = header.pop("__metadata__", {}) or {}
    if meta.get("run_id") != rid:
        return f"{where} has the weights of run {meta.get('run_id')}"
    from cnnbench.model.build import build_model
    with torch.device("meta"):  # shapes only: nothing allocated
        expected = {k: list(v.shape) for k, v in build_model(spec).state_dict().items()}
    got = {k: v.get("shape") for k, v in header.items() if isinstance(v, dict)}
    if got != expected:
        wrong = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
        return f"{where} has weights that do not fit {spec.name} ({', '.join(wrong[:3])})"
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + size + end != len(data):
        return f"{where} has a truncated weights file ({len(data)} bytes)"
    return None


def _npy(a: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()
