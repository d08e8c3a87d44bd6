"""A study run through the store: every run checkpointed, resumed, or reused.

Each (model, settings, data, seed) is an independent job with an idempotent id
(``store.run_id``). For each job the runner takes the run's lock, then:

- a finished (or diverged) run with the same id is **reused**: nothing is trained;
  ``force`` retrains runs that finished before this command started, in the run folder's
  ``attempt/`` subfolder: the finished run stays whole (index row, files, served by predict
  and report) until the retrain's files and row replace it as one set;
- an unfinished run (interrupted, killed, crashed) **resumes** from its last good checkpoint;
- otherwise the run is trained from scratch, checkpointed after every epoch.

A run another process holds is left for last, then waited for (and usually reused), so two
``cnnbench run`` processes on one store share the work instead of repeating it.

Where the training itself happens is the executor's business (``executors.py``): in this
process, one job at a time (the default), or on a Ray cluster, every job at once. Either way
this runner is the driver: it alone writes the index and the run files; a remote job hands
back its history, predictions, probabilities and weights.

Bit-exactness of a resumed run holds on the same machine with the same torch build, device
and thread count: the checkpoint holds every generator's state, but a different thread count
or device changes the order of floating-point sums. Those settings are recorded with the run
(``environment``) and a resume under different ones is reported.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.data.datasets import Dataset
from cnnbench.errors import CnnbenchError
from cnnbench.model.memory import check_memory, gpu_memory
from cnnbench.model.spec import ModelSpec, check_classes
from cnnbench.store.run_store import (
    ATTEMPT,
    HISTORY_KEYS,
    RunLock,
    RunStore,
    git_commit,
    resolved_spec,
    run_id,
    run_key,
)
from cnnbench.study.environment import ModelResult, environment
from cnnbench.study.executors import Done, Executor, ExecutorError, InProcess, LocalExecutor
from cnnbench.study.jobs import DataRef, JobCheckpoint, JobOutput, TrainJob, usable_checkpoint
from cnnbench.study.loggers import RunLogger, check_loggers, make_loggers
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import LAST, remove_checkpoints
from cnnbench.train.engine import EpochLogs, TrainConfig, TrainResult

Log = Callable[[str], None]
# Settings that change the last bits of a run's numbers: a resume under other values than the
# run started with cannot be bit-identical to an uninterrupted run.
EXACTNESS_SETTINGS = ("torch", "device", "threads", "machine")


@dataclass
class PlannedRun:
    spec: ModelSpec
    key: dict[str, Any]
    id: str


@dataclass
class StoredResult:
    """A study result and where it came from: 'trained', 'resumed' or 'reused'."""

    model: ModelResult
    run_id: str
    origin: str
    retries: int = 0  # times an executor ran the job again after its worker died


def plan(specs: Sequence[ModelSpec], dataset: Dataset, config: TrainConfig) -> list[PlannedRun]:
    """The study's jobs, each with the id its result is stored under."""
    fp = dataset.fingerprint()
    out = []
    for spec in specs:
        key = run_key(resolved_spec(spec), config.to_dict(), fp)
        out.append(PlannedRun(spec, key, run_id(key)))
    return out


def bytes_needed(specs: Sequence[ModelSpec], test_images: int, classes: int) -> int:
    """Disk a study needs: per run, final weights and predictions; at most one run's
    checkpoints (weights + Adadelta's two accumulators, last + previous + one being written)
    at a time. float32 throughout."""
    finals = sum(4 * s.params + 4 * test_images * (classes + 1) for s in specs)
    checkpoints = max((3 * 3 * 4 * s.params for s in specs), default=0)
    return finals + checkpoints + 16 * 2**20  # and some room for the index and the CSVs


class StoreCheckpoint(JobCheckpoint):
    """Engine callback: after each epoch, checkpoint, then update history.csv and the index."""

    def __init__(self, store: RunStore, rid: str, extra: dict[str, Any]) -> None:
        super().__init__(store.folder(rid), extra)  # a forced retrain uses a JobCheckpoint
        self.store, self.rid = store, rid

    def on_epoch_end(self, logs: EpochLogs) -> None:
        super().on_epoch_end(logs)
        assert self.history is not None
        self.store.epoch_done(self.rid, self.history)


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

    def end(self, status: str, result: TrainResult | None) -> None:
        self._call("end", status, result)


@dataclass
class _Pending:
    """A run this process started: locked, begun in the store, submitted to the executor."""

    planned: PlannedRun
    job: TrainJob
    state: dict[str, Any] | None  # the checkpoint it resumes from, as the driver found it
    config_doc: dict[str, Any]
    history: dict[str, list[float]]  # when it was submitted
    folder: Path | None = None  # where it trains: the run folder, or attempt/ under --force
    saver: JobCheckpoint | None = None  # in-process runs: updated every epoch
    loggers: list[SafeLogger] = field(default_factory=list)
    checkpoint_mtime: int = 0  # remote runs: the last checkpoint the driver has seen
    shown: int = 0  # remote runs: epochs whose line the driver has printed
    runner: StudyRunner | None = None  # the study it belongs to, once submitted
    index: tuple[int, int] = (0, 0)  # (study, job) in the driver's work
    lock: RunLock | None = None

    @property
    def attempt(self) -> bool:
        """A --force retrain of a finished run, in the run folder's attempt/ subfolder."""
        return self.folder is not None and self.folder.name == ATTEMPT


class InvalidOutput(CnnbenchError, RuntimeError):
    """A job's output that does not fit its job: refused before it enters the store."""


def run_studies(runners: Sequence[StudyRunner], specs: Sequence[ModelSpec]
                ) -> list[list[StoredResult]]:
    """Several studies of the same models (one a seed), sharing one executor: a remote one
    gets every seed's jobs at once. Each study's results, in order."""
    executors = {id(r.executor) for r in runners}
    if len(executors) != 1:
        raise ValueError(f"run_studies: the runners have {len(executors)} executors; "
                         f"give them one")
    return _Driver(runners[0].executor).run([(r, r.plan(specs)) for r in runners])


class _Driver:
    """Hands studies' jobs to an executor, at most ``capacity`` locked and in flight at once,
    and has each study write what comes back. Locally (capacity 1): lock, train, write,
    unlock, one run after the other."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.inflight: dict[str, _Pending] = {}
        self.results: list[list[StoredResult | None]] = []

    def run(self, work: Sequence[tuple[StudyRunner, list[PlannedRun]]]
            ) -> list[list[StoredResult]]:
        self.results = [[None] * len(jobs) for _, jobs in work]
        deferred = []
        try:
            for k, (runner, jobs) in enumerate(work):
                for i, job in enumerate(jobs):
                    lock = runner.store.lock(job.id)
                    if not lock.acquire(blocking=False):
                        runner.log(f"{job.spec.name}: run {job.id} is being trained by another "
                                   f"process; coming back to it at the end")
                        deferred.append((k, i))
                        continue
                    self._submit(runner, k, i, job, lock)
            self._drain()
            for k, i in deferred:
                runner, job = work[k][0], work[k][1][i]
                runner.log(f"{job.spec.name}: waiting for the other process to finish run "
                           f"{job.id}")
                lock = runner.store.lock(job.id)
                lock.acquire(blocking=True)
                self._submit(runner, k, i, job, lock)
            self._drain()
        except BaseException as e:
            if self.executor.remote:
                self.executor.cancel_all()
            for p in self.inflight.values():
                p.runner._stop(p, e)
            raise
        failures = [f for runner, _ in work for f in runner.failures]
        if failures:
            raise ExecutorError(f"{len(failures)} run(s) failed on the {self.executor.name} "
                                f"executor: " + "; ".join(failures))
        return [[r for r in rs if r is not None] for rs in self.results]

    def _submit(self, runner: StudyRunner, k: int, i: int, planned: PlannedRun,
                lock: RunLock) -> None:
        """Reuse the locked run, or begin it and hand it to the executor."""
        try:
            prepared = runner._prepare(planned)
        except BaseException:
            lock.release()
            raise
        if isinstance(prepared, StoredResult):
            self.results[k][i] = prepared
            lock.release()
            return
        prepared.runner, prepared.index, prepared.lock = runner, (k, i), lock
        self.inflight[planned.id] = prepared
        here = InProcess()
        if not self.executor.remote:
            folder = prepared.folder
            assert folder is not None
            here = InProcess(prepared.state, [*runner.callbacks(planned.spec), prepared.saver,
                                              *prepared.loggers],
                             lambda n: runner.store.write_json(folder / "grad_norms.json", n))
        self.executor.submit(prepared.job, here)
        self._drain(keep=self.executor.capacity - 1)

    def _drain(self, keep: int = 0) -> None:
        """Collect finished jobs until at most ``keep`` are in flight."""
        while len(self.inflight) > keep:
            remote = self.executor.remote
            done = self.executor.next_done(StudyRunner.POLL_SECONDS if remote else None)
            if done is None:
                for p in self.inflight.values():
                    p.runner._follow_checkpoint(p)
                continue
            p = self.inflight[done.job.run_id]
            k, i = p.index
            problem = p.runner._check_output(p, done.output) if done.output is not None else None
            if problem:  # never stored: the run is recorded resumable, as if its worker failed
                done = Done(done.job, None, InvalidOutput(problem), done.attempts)
            if done.output is None:
                p.runner._failed(p, done)
            else:
                self.results[k][i] = p.runner._finish(p, done)
            del self.inflight[done.job.run_id]
            p.lock.release()


class StudyRunner:
    """Runs a study's jobs through a store; see the module docstring.

    ``executor`` says where the jobs train (default: in this process, one at a time); the
    runner alone writes the store, whichever executor trains.
    """

    POLL_SECONDS = 2.0  # how often a remote study looks at its runs' checkpoints

    def __init__(self, store: RunStore, dataset: Dataset, config: TrainConfig,
                 device: torch.device, force: bool = False, log: Log = print,
                 callbacks: Callable[[ModelSpec], Sequence[Callback]] = lambda s: (),
                 loggers: Sequence[str] = (), executor: Executor | None = None) -> None:
        self.store, self.dataset, self.config, self.device = store, dataset, config, device
        self.force, self.log, self.callbacks = force, log, callbacks
        check_loggers(loggers)
        self.loggers = tuple(loggers)
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self._force_ids: set[str] = set()
        # Plain JSON values (torch.__version__ is a str subclass torch.load refuses to unpickle).
        self.env = json.loads(json.dumps(environment(device) | {"git_commit": git_commit()}))
        if self.executor.remote:  # what the jobs are expected to run under, until they report
            self.env |= {"threads": self.executor.threads, "executor": self.executor.name}
        self.failures: list[str] = []

    # --- the study ----------------------------------------------------------------------

    def run(self, specs: Sequence[ModelSpec]) -> list[StoredResult]:
        return _Driver(self.executor).run([(self, self.plan(specs))])[0]

    def plan(self, specs: Sequence[ModelSpec]) -> list[PlannedRun]:
        """Check the study can run, and ready the executor; its jobs."""
        for spec in specs:
            check_classes(spec, self.dataset.num_classes)  # fail before any training
        ds = self.dataset
        check_memory(specs, self.config.batch_size, self.config.eval_batch_size,
                     *gpu_memory(self.device))  # as the disk below: refused before training
        self.store.check_free_space(bytes_needed(specs, len(ds.x_test), ds.num_classes))
        jobs = plan(specs, ds, self.config)
        # --force retrains what was finished when this command started, not what another
        # process finishes meanwhile (that is reused, as if this process had waited for it).
        self._force_ids = {r.id for r in self.store.runs()
                           if r.status in ("finished", "diverged")} if self.force else set()
        self.executor.start(ds, self.device)
        self.failures = []
        return jobs

    # --- one run ------------------------------------------------------------------------

    def _prepare(self, job: PlannedRun) -> StoredResult | _Pending:
        """A finished run reused, or the run begun in the store and made a TrainJob."""
        rid, name, store = job.id, job.spec.name, self.store
        store.recover(rid)  # under the lock: complete a set of files a kill cut, sweep *.tmp
        row = store.get(rid)
        folder = store.folder(rid)
        if row is not None and row.status in ("finished", "diverged"):
            if rid not in self._force_ids:
                reused = self._load_finished(job)
                if reused is not None:
                    return reused
                self.log(f"{name}: run {rid} is marked {row.status} but its files are "
                         f"incomplete; training it again")
                remove_checkpoints(folder)
            else:  # --force: train beside the finished run, which stays whole until replaced
                folder = store.attempt_folder(rid)
            self._force_ids.discard(rid)
        elif self.force:
            remove_checkpoints(folder)
        attempt = folder != store.folder(rid)

        state = usable_checkpoint(folder, rid, self.config.epochs,
                                  warn=lambda m: self.log(f"warning: {m}"))
        if state is None and row is not None and row.status not in ("finished", "diverged") \
                and row.epochs_done > 0:
            self.log(f"warning: {name}: no usable checkpoint for run {rid}; "
                     f"restarting it from epoch 1")
        done = int(state["epoch"]) if state is not None else 0
        if state is not None:
            self.log(f"{name}: resuming run {rid} after epoch {done}/{self.config.epochs}"
                     + (" (a --force retrain; the finished run is kept until it ends)"
                        if attempt else ""))
            self._warn_environment(name, state.get("environment", {}))

        config_doc = self._config_doc(job)
        history_so_far = state["history"] if state is not None else _empty_history()
        if attempt:  # the row and the finished files stay as they are until the retrain ends
            folder.mkdir(parents=True, exist_ok=True)
            store.write_json(folder / "config.json", config_doc)  # workers look for it there
        else:
            store.begin(rid, config_doc, epochs_done=done)
            store.write_history(rid, history_so_far)
        train = TrainJob(rid, job.spec, self.config, DataRef.of(self.dataset), str(self.device),
                         self.executor.threads, str(folder), self.env)
        p = _Pending(job, train, state, config_doc, history_so_far, folder=folder)
        if self.executor.remote:
            p.checkpoint_mtime = _mtime(folder / LAST)
            return p
        extra = {"run_id": rid, "environment": self.env}
        p.saver = JobCheckpoint(folder, extra) if attempt else StoreCheckpoint(store, rid, extra)
        p.saver.history = state["history"] if state is not None else None
        p.loggers = self._start_loggers(p)
        return p

    def _start_loggers(self, p: _Pending) -> list[SafeLogger]:
        rid = p.planned.id
        loggers = [SafeLogger(lg, p.planned.spec.name, self.log)
                   for lg in make_loggers(self.loggers)]
        for lg in loggers:
            lg.start(rid, self.store.folder(rid), p.config_doc, p.history)
        return loggers

    def _finish(self, p: _Pending, done: Done) -> StoredResult:
        """Write a job's output to the store: weights, predictions, history, the index, as one
        set (a forced retrain's set replaces the finished run's only now)."""
        out, job, store = done.output, p.planned, self.store
        assert out is not None and p.folder is not None
        rid, name, result = job.id, job.spec.name, out.result
        if self.executor.remote:
            self._record_remote(p, done)
        files: dict[str, bytes] = {}
        if p.attempt:  # what the retrain wrote beside its checkpoints travels with the set
            for extra in ("config.json", "grad_norms.json"):
                if (p.folder / extra).is_file():
                    files[extra] = (p.folder / extra).read_bytes()
        if result.status == "diverged":
            epoch, step = result.diverged_at or (0, 0)
            store.end(rid, "diverged", result.history, diverged_at=result.diverged_at,
                      files=files)
            if p.attempt:  # the finished run's final files do not belong to a diverged one
                for stale in ("weights.safetensors", "predictions.npy", "probabilities.npy"):
                    (store.folder(rid) / stale).unlink(missing_ok=True)
            self.log(f"{name}: run {rid} diverged (non-finite loss) at epoch {epoch}, "
                     f"step {step}; going on with the next model")
        else:
            assert out.weights is not None
            files |= {"weights.safetensors": out.weights,
                      "predictions.npy": _npy(result.test_predictions),
                      "probabilities.npy": _npy(out.probabilities)}
            store.end(rid, "finished", result.history, result.test_loss, result.test_accuracy,
                      files=files)
        # the weights file holds the final model; a forced retrain's folder has done its job
        if p.attempt:
            shutil.rmtree(p.folder, ignore_errors=True)
        elif result.status == "finished":
            remove_checkpoints(store.folder(rid))
        for lg in p.loggers:
            lg.end(result.status, result)
        first = done.attempts[0]["resumed_from"] if done.attempts else out.resumed_from
        return StoredResult(ModelResult(job.spec, self.config, result, out.seconds), rid,
                            "resumed" if first > 0 else "trained", len(done.attempts) - 1
                            if done.attempts else 0)

    def _check_output(self, p: _Pending, out: JobOutput) -> str | None:
        """What is wrong with a job's output before it enters the store, or None. A worker
        is trusted not to be malicious (its output is unpickled), but a bug, a stale worker
        or a mixed-up result must not become a finished run."""
        rid, ds, res = p.planned.id, self.dataset, out.result
        where = f"the output of run {rid} ({p.job.label}) from {out.host} pid {out.pid}"
        n_test, classes, epochs = len(ds.x_test), ds.num_classes, self.config.epochs
        if out.run_id != rid:
            return f"{where} names run {out.run_id}"
        if res.status not in ("finished", "diverged"):
            return f"{where} has status {res.status!r}, expected finished or diverged"
        lengths = {k: len(res.history.get(k, ())) for k in HISTORY_KEYS}
        n = lengths["loss"]
        if len(set(lengths.values())) != 1:
            return f"{where} has history columns of different lengths {lengths}"
        if n < len(p.history["loss"]) or n > epochs or (res.status == "finished" and n != epochs):
            return (f"{where} has {n} epochs of history; expected {epochs}"
                    + (f" (it resumed after {len(p.history['loss'])})" if p.history["loss"]
                       else ""))
        if res.status == "diverged":
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
        return _check_weights(out.weights, p.planned.spec, rid, where)

    def _record_remote(self, p: _Pending, done: Done) -> None:
        """A remote job's environment, attempts and progress, as the driver writes them."""
        out, rid, store = done.output, p.planned.id, self.store
        assert out is not None
        doc = p.config_doc
        doc["environment"] = out.environment
        doc["bit_exact_under"] = {k: out.environment.get(k) for k in EXACTNESS_SETTINGS}
        doc["sessions"][-1] |= {"environment": out.environment, "attempts": done.attempts}
        assert p.folder is not None
        store.write_json(p.folder / "config.json", doc)
        if out.grad_norms is not None:
            store.write_json(p.folder / "grad_norms.json", out.grad_norms)
        # Loggers see the epochs this command trained, as if they had followed them.
        p.loggers = self._start_loggers(p)
        h, start = out.result.history, len(p.history["loss"])
        for e in range(start, len(h["loss"])):
            for lg in p.loggers:
                lg.on_epoch_end(EpochLogs(e + 1, *(h[k][e] for k in HISTORY_KEYS)))
        self._log_epochs(p, h)  # those that ended between two looks at the checkpoints
        label = p.job.label
        if len(done.attempts) > 1:
            died = ", ".join(f"{a['host']} pid {a['pid']}" for a in done.attempts[:-1])
            last = done.attempts[-1]
            how = (f"resumed after epoch {last['resumed_from']}" if last["resumed_from"]
                   else "from epoch 1")
            why = ("was stopped when another run's worker died" if all(
                a.get("stopped") for a in done.attempts[:-1]) else f"its worker died ({died})")
            who = "Ray" if self.executor.name == "ray" else "the worker pool"
            self.log(f"{label}: run {rid}: {why}; {who} ran it again "
                     f"({len(done.attempts) - 1} retry, {how})")
        where = f"{out.host} pid {out.pid}, {out.environment.get('threads')} thread(s)"
        if out.result.status == "finished":
            self.log(f"{label}: run {rid} finished on {where} in {out.seconds:.1f} s: test "
                     f"accuracy {100 * out.result.test_accuracy:.2f} %")

    def _failed(self, p: _Pending, done: Done) -> None:
        """A job the executor could not complete: recorded resumable, the study goes on."""
        rid, e = p.planned.id, done.error
        cause = getattr(e, "cause", None) or e
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}" \
            if str(cause).strip() else type(cause).__name__
        history = self._mark_interrupted(p, self._history_now(p))
        for lg in p.loggers:
            lg.end("failed", None)
        self.log(f"{p.job.label}: run {rid} failed after {max(1, len(done.attempts))} "
                 f"attempt(s) ({text}); its last epoch ({len(history['loss'])}) is kept: run the "
                 f"same command again to resume" + self._kept(p))
        self.failures.append(f"{p.job.label} ({text})")

    def _follow_checkpoint(self, p: _Pending) -> None:
        """A remote run's new checkpoint: its epoch goes to history.csv, the index, the log."""
        folder = p.folder
        assert folder is not None
        mtime = _mtime(folder / LAST)
        if mtime == p.checkpoint_mtime:
            return
        p.checkpoint_mtime = mtime
        state = usable_checkpoint(folder, p.planned.id, self.config.epochs)
        if state is None or state["epoch"] <= p.shown:
            return
        if not p.attempt:  # a forced retrain leaves the finished run's row alone until it ends
            row = self.store.get(p.planned.id)
            if row is None or state["epoch"] <= row.epochs_done:
                return
            self.store.epoch_done(p.planned.id, state["history"])
        self._log_epochs(p, state["history"])

    def _log_epochs(self, p: _Pending, h: dict[str, list[float]]) -> None:
        """Keras-like lines for a remote run's epochs not shown yet."""
        for e in range(max(p.shown, len(p.history["loss"])), len(h["loss"])):
            self.log(f"{p.job.label}: epoch {e + 1}/{self.config.epochs} - "
                     f"{h['seconds'][e]:.1f}s - loss: "
                     f"{h['loss'][e]:.4f} - acc: {h['acc'][e]:.4f} - val_loss: "
                     f"{h['val_loss'][e]:.4f} - val_acc: {h['val_acc'][e]:.4f}")
        p.shown = max(p.shown, len(h["loss"]))

    def _history_now(self, p: _Pending) -> dict[str, list[float]]:
        """The history of a run in flight: what its checkpoints say."""
        if p.saver is not None:
            return p.saver.history or _empty_history()
        assert p.folder is not None
        state = usable_checkpoint(p.folder, p.planned.id, self.config.epochs)
        return state["history"] if state is not None else p.history

    def _stop(self, p: _Pending, e: BaseException) -> None:
        """Ctrl-C, a failed write or any other exception while the run is in flight: leave it
        recorded resumable (never "running"), and unlocked."""
        rid, name = p.planned.id, p.planned.spec.name
        try:
            history = self._mark_interrupted(p, self._history_now(p))
            after = f"after epoch {len(history['loss'])}/{self.config.epochs}"
            if isinstance(e, KeyboardInterrupt):
                self.log(f"{name}: run {rid} interrupted {after}; its last epoch is "
                         f"checkpointed" + self._kept(p))
            elif isinstance(e, OSError):  # a full disk, a store gone read-only
                self.log(f"{name}: run {rid} stopped {after} because a file could not be "
                         f"written ({e}); fix that and run the same command again to resume"
                         + self._kept(p))
            else:
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                self.log(f"{name}: run {rid} stopped {after} ({type(e).__name__}: {first}); "
                         f"recorded interrupted, the same command resumes it" + self._kept(p))
            for lg in p.loggers:
                lg.end("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", None)
        finally:
            if p.lock is not None:
                p.lock.release()

    @staticmethod
    def _kept(p: _Pending) -> str:
        return ("; the finished run is kept as it was (--force again resumes the retrain)"
                if p.attempt else "")

    def _mark_interrupted(self, p: _Pending, history: dict[str, list[float]]
                          ) -> dict[str, list[float]]:
        """Record an interrupted run, as far as the disk still allows; its history so far.
        A forced retrain's finished run stays as it is: only the retrain was interrupted."""
        rid = p.planned.id
        if p.attempt:
            return history
        try:
            self.store.end(rid, "interrupted", history)
        except (OSError, sqlite3.Error) as e:  # a full disk refuses this too: say so, go on
            self.log(f"warning: could not mark run {rid} interrupted in {self.store.root}: {e}")
        return history

    def _load_finished(self, job: PlannedRun) -> StoredResult | None:
        """A finished or diverged run as a study result, or None if its files are missing."""
        rid, folder = job.id, self.store.folder(job.id)
        row = self.store.get(rid)
        assert row is not None
        history = self.store.read_history(rid)
        result = TrainResult(history=history, status=row.status)
        if row.status == "diverged":
            result.diverged_at = (row.diverged_epoch or 0, row.diverged_step or 0)
            self.log(f"{job.spec.name}: reused run {rid} (diverged at epoch {row.diverged_epoch},"
                     f" step {row.diverged_step}); --force trains it again")
        else:
            try:
                result.test_predictions = np.load(folder / "predictions.npy")
            except OSError:
                return None
            if not (folder / "weights.safetensors").exists() or len(history["loss"]) == 0:
                return None
            result.test_loss = row.test_loss if row.test_loss is not None else math.nan
            result.test_accuracy = row.test_accuracy if row.test_accuracy is not None else math.nan
            self.log(f"{job.spec.name}: reused run {rid} (finished {row.finished}, test accuracy "
                     f"{100 * result.test_accuracy:.2f} %); --force trains it again")
        return StoredResult(ModelResult(job.spec, self.config, result, row.train_seconds), rid,
                            "reused")

    # --- helpers ------------------------------------------------------------------------

    def _config_doc(self, job: PlannedRun) -> dict[str, Any]:
        """config.json: the key, readable; the dataset; every session that trained the run."""
        ds, cfg = self.dataset, self.config
        folder = self.store.folder(job.id)
        sessions: list[dict[str, Any]] = []
        if (folder / "config.json").exists():
            try:
                sessions = self.store.read_config(job.id).get("sessions", [])
            except ValueError:
                sessions = []
        sessions.append({"started": _iso(time.time()), "pid": os.getpid(),
                         "environment": self.env})
        n_train = min(len(ds.x_train), cfg.train_limit or len(ds.x_train))
        return {
            "run_id": job.id,
            "model": {"name": job.spec.name, "source": job.spec.source,
                      "parameters": job.spec.params, "spec": job.key["spec"],
                      "spec_raw": job.spec.raw},
            "training": cfg.to_dict(),
            "seed": cfg.seed,
            "dataset": {"name": ds.info.name, "fingerprint": ds.fingerprint(),
                        "source": ds.source, "train_images": n_train,
                        "test_images": len(ds.x_test),
                        "class_counts": {  # of the images this run trains on
                            "train": np.bincount(ds.y_train[:n_train],
                                                 minlength=ds.num_classes).tolist(),
                            "test": ds.class_counts()["test"]}},
            "environment": self.env,
            "bit_exact_under": {k: self.env.get(k) for k in EXACTNESS_SETTINGS},
            "key": job.key,
            "sessions": sessions,
        }

    def _warn_environment(self, name: str, before: dict[str, Any]) -> None:
        changed = [f"{k} {before.get(k)} -> {self.env.get(k)}" for k in EXACTNESS_SETTINGS
                   if k in before and before.get(k) != self.env.get(k)]
        if changed:
            self.log(f"warning: {name}: resuming with {', '.join(changed)}; the numbers may "
                     f"differ in the last bits from an uninterrupted run")


def _check_weights(data: bytes | None, spec: ModelSpec, rid: str, where: str) -> str | None:
    """A safetensors weights file's header against the spec's tensors (names, shapes) and
    its run id; what is wrong, or None. The tensors themselves are not decoded."""
    import struct
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


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _npy(a: np.ndarray | None) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()


def _iso(t: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _empty_history() -> dict[str, list[float]]:
    return TrainResult().history
