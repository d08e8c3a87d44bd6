"""A study run through the store: every run checkpointed, resumed, or reused.

Each (model, settings, data, seed) is an independent job with an idempotent id
(``store.run_id``). For each job the runner takes the run's lock, then:

- a finished (or diverged) run with the same id is **reused**: nothing is trained;
  ``force`` retrains runs that finished before this command started;
- an unfinished run (interrupted, killed, crashed) **resumes** from its last good checkpoint;
- otherwise the run is trained from scratch, checkpointed after every epoch.

A run another process holds is left for last, then waited for (and usually reused), so two
``cnnbench run`` processes on one store share the work instead of repeating it.

Bit-exactness of a resumed run holds on the same machine with the same torch build, device
and thread count: the checkpoint holds every generator's state, but a different thread count
or device changes the order of floating-point sums. Those settings are recorded with the run
(``environment``) and a resume under different ones is reported.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, remove_checkpoints, save_checkpoint
from .data import Dataset
from .diagnosis import gradient_norms
from .engine import (
    Callback,
    EpochLogs,
    TrainConfig,
    TrainResult,
    fit,
    images_to_tensor,
    labels_to_tensor,
)
from .loggers import RunLogger, check_loggers, make_loggers
from .nn import build_model, predict_proba
from .spec import ModelSpec, check_classes
from .store import RunStore, StoreError, git_commit, resolved_spec, run_id, run_key
from .study import ModelResult, environment
from .weights import weights_bytes

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


class StoreCheckpoint:
    """Engine callback: after each epoch, checkpoint, then update history.csv and the index."""

    def __init__(self, store: RunStore, rid: str, extra: dict[str, Any]) -> None:
        self.store, self.rid, self.extra = store, rid, extra
        self.get_state: Callable[[], dict[str, Any]] | None = None
        self.history: dict[str, list[float]] | None = None
        self.seconds: list[float] = []  # time spent writing each checkpoint

    def on_train_begin(self, get_state: Callable[[], dict[str, Any]]) -> None:
        self.get_state = get_state

    def on_epoch_begin(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def on_step_end(self, step: int, running: dict[str, float] | None) -> None:
        pass

    def on_epoch_end(self, logs: EpochLogs) -> None:
        assert self.get_state is not None, "fit() did not call on_train_begin"
        start = time.perf_counter()
        state = self.get_state() | self.extra
        try:
            save_checkpoint(self.store.folder(self.rid), state)
        except OSError as e:
            raise StoreError(f"cannot write a checkpoint in {self.store.folder(self.rid)}: "
                             f"{e.strerror or e}") from e
        self.seconds.append(time.perf_counter() - start)
        self.history = state["history"]
        self.store.epoch_done(self.rid, self.history)


class SafeLogger:
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

    def on_step_end(self, step: int, running: dict[str, float] | None) -> None:
        pass  # loggers record epochs; a call a step would cost time for nothing

    def on_epoch_end(self, logs: EpochLogs) -> None:
        self._call("on_epoch_end", logs)

    def end(self, status: str, result: TrainResult | None) -> None:
        self._call("end", status, result)


class StudyRunner:
    """Runs a study's jobs through a store; see the module docstring."""

    def __init__(self, store: RunStore, dataset: Dataset, config: TrainConfig,
                 device: torch.device, force: bool = False, log: Log = print,
                 callbacks: Callable[[ModelSpec], Sequence[Callback]] = lambda s: (),
                 loggers: Sequence[str] = ()) -> None:
        self.store, self.dataset, self.config, self.device = store, dataset, config, device
        self.force, self.log, self.callbacks = force, log, callbacks
        check_loggers(loggers)
        self.loggers = tuple(loggers)
        self._force_ids: set[str] = set()
        # Plain JSON values (torch.__version__ is a str subclass torch.load refuses to unpickle).
        self.env = json.loads(json.dumps(environment(device) | {"git_commit": git_commit()}))
        self._tensors: tuple[torch.Tensor, ...] | None = None

    # --- the study ----------------------------------------------------------------------

    def run(self, specs: Sequence[ModelSpec]) -> list[StoredResult]:
        for spec in specs:
            check_classes(spec, self.dataset.num_classes)  # fail before any training
        ds = self.dataset
        self.store.check_free_space(bytes_needed(specs, len(ds.x_test), ds.num_classes))
        jobs = plan(specs, ds, self.config)
        # --force retrains what was finished when this command started, not what another
        # process finishes meanwhile (that is reused, as if this process had waited for it).
        self._force_ids = {r.id for r in self.store.runs()
                           if r.status in ("finished", "diverged")} if self.force else set()
        results: list[StoredResult | None] = [None] * len(jobs)
        deferred = []
        for i, job in enumerate(jobs):
            lock = self.store.lock(job.id)
            if not lock.acquire(blocking=False):
                self.log(f"{job.spec.name}: run {job.id} is being trained by another process; "
                         f"coming back to it at the end")
                deferred.append(i)
                continue
            with lock:
                results[i] = self._run_one(job)
        for i in deferred:
            job = jobs[i]
            self.log(f"{job.spec.name}: waiting for the other process to finish run {job.id}")
            with self.store.lock(job.id) as lock:
                lock.acquire(blocking=True)
                results[i] = self._run_one(job)
        return [r for r in results if r is not None]

    # --- one run ------------------------------------------------------------------------

    def _run_one(self, job: PlannedRun) -> StoredResult:
        rid, name, store = job.id, job.spec.name, self.store
        row = store.get(rid)
        if row is not None and row.status in ("finished", "diverged"):
            if rid not in self._force_ids:
                reused = self._load_finished(job)
                if reused is not None:
                    return reused
                self.log(f"{name}: run {rid} is marked {row.status} but its files are "
                         f"incomplete; training it again")
            self._force_ids.discard(rid)
            remove_checkpoints(store.folder(rid))
        elif self.force:
            remove_checkpoints(store.folder(rid))

        state = load_checkpoint(store.folder(rid), warn=lambda m: self.log(f"warning: {m}"))
        if state is not None and (state.get("run_id") != rid
                                  or state["epoch"] > self.config.epochs):
            self.log(f"warning: {store.folder(rid)}: its checkpoint belongs to another run; "
                     f"training from scratch")
            state = None
        if state is None and row is not None and row.status not in ("finished", "diverged") \
                and row.epochs_done > 0:
            self.log(f"warning: {name}: no usable checkpoint for run {rid}; "
                     f"restarting it from epoch 1")
        done = int(state["epoch"]) if state is not None else 0
        if state is not None:
            self.log(f"{name}: resuming run {rid} after epoch {done}/{self.config.epochs}")
            self._warn_environment(name, state.get("environment", {}))

        config_doc = self._config_doc(job)
        history_so_far = state["history"] if state is not None else _empty_history()
        store.begin(rid, config_doc, epochs_done=done)
        store.write_history(rid, history_so_far)
        torch.manual_seed(self.config.seed)  # the same initial draw and dropout masks for a seed
        model = build_model(job.spec).to(self.device)
        if state is None:
            # Per-layer gradient norms at initialisation, for the diagnosis of a run that gets
            # stuck: one forward and backward pass on a copy, the run's random draws untouched.
            x, y = self._data()[:2]
            norms = gradient_norms(model, x[:128], y[:128])
            store.write_json(store.folder(rid) / "grad_norms.json", norms)
        saver = StoreCheckpoint(store, rid, {"run_id": rid, "environment": self.env})
        saver.history = state["history"] if state is not None else None
        loggers = [SafeLogger(lg, name, self.log) for lg in make_loggers(self.loggers)]
        for lg in loggers:
            lg.start(rid, store.folder(rid), config_doc, history_so_far)
        callbacks = [*self.callbacks(job.spec), saver, *loggers]
        x_train, y_train, x_test, y_test = self._data()
        start = time.perf_counter()
        outcome, result_or_none = "failed", None
        try:
            result = fit(model, x_train, y_train, x_test, y_test, self.config, callbacks,
                         state=state)
            outcome, result_or_none = result.status, result
            wall = time.perf_counter() - start
            if result.status == "diverged":
                epoch, step = result.diverged_at or (0, 0)
                store.end(rid, "diverged", result.history, diverged_at=result.diverged_at)
                self.log(f"{name}: run {rid} diverged (non-finite loss) at epoch {epoch}, "
                         f"step {step}; going on with the next model")
            else:
                self._save_outputs(rid, job.spec, model, result, x_test)
                store.end(rid, "finished", result.history, result.test_loss,
                          result.test_accuracy)
                remove_checkpoints(store.folder(rid))  # the weights file holds the final model
        except KeyboardInterrupt:
            outcome = "interrupted"
            history = self._mark_interrupted(rid, saver)
            self.log(f"{name}: run {rid} interrupted after epoch {len(history['loss'])}/"
                     f"{self.config.epochs}; its last epoch is checkpointed")
            raise
        except OSError as e:  # a full disk, a store gone read-only: keep the run resumable
            history = self._mark_interrupted(rid, saver)
            self.log(f"{name}: run {rid} stopped after epoch {len(history['loss'])}/"
                     f"{self.config.epochs} because a file could not be written ({e}); fix "
                     f"that and run the same command again to resume")
            raise
        finally:
            for lg in loggers:
                lg.end(outcome, result_or_none)
        return StoredResult(ModelResult(job.spec, self.config, result, wall), rid,
                            "resumed" if state is not None else "trained")

    def _mark_interrupted(self, rid: str, saver: StoreCheckpoint) -> dict[str, list[float]]:
        """Record an interrupted run, as far as the disk still allows; its history so far."""
        history = saver.history or _empty_history()
        try:
            self.store.end(rid, "interrupted", history)
        except (OSError, sqlite3.Error) as e:  # a full disk refuses this too: say so, go on
            self.log(f"warning: could not mark run {rid} interrupted in {self.store.root}: {e}")
        return history

    def _save_outputs(self, rid: str, spec: ModelSpec, model: torch.nn.Module,
                      result: TrainResult, x_test: torch.Tensor) -> None:
        """Final weights with their spec (safetensors), predicted classes, probabilities."""
        folder = self.store.folder(rid)
        ds = self.dataset.info
        self.store.write_bytes(folder / "weights.safetensors",
                               weights_bytes(model, spec, ds.classes, ds.name, run_id=rid))
        proba = _probabilities(model, x_test, self.config.eval_batch_size)
        self.store.write_bytes(folder / "predictions.npy", _npy(result.test_predictions))
        self.store.write_bytes(folder / "probabilities.npy", _npy(proba))

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

    def _data(self) -> tuple[torch.Tensor, ...]:
        if self._tensors is None:
            ds, d = self.dataset, self.device
            self._tensors = (images_to_tensor(ds.x_train, d), labels_to_tensor(ds.y_train, d),
                             images_to_tensor(ds.x_test, d), labels_to_tensor(ds.y_test, d))
        return self._tensors

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


@torch.inference_mode()
def _probabilities(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    out = [predict_proba(model, x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


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
