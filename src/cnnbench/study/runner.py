"""A study run through the store: every run checkpointed, resumed, or reused.

Each (model, settings, data, seed) is an independent job with an idempotent id
(``store.run_id``). For each job the driver takes the run's lock, then (``decide.py``):

- a finished (or diverged) run with the same id is **reused**: nothing is trained;
  ``force`` retrains runs that finished before this command started, in the run folder's
  ``attempt/`` subfolder: the finished run stays whole (index row, files, served by predict
  and report) until the retrain's files and row replace it as one set;
- an unfinished run (interrupted, killed, crashed) **resumes** from its last good checkpoint;
- otherwise the run is trained from scratch, checkpointed after every epoch.

A run another process holds is left for last, then waited for (and usually reused), so two
``cnnbench run`` processes on one store share the work instead of repeating it.

Where the training itself happens is the executor's business (``executors.py``): in this
process, one job at a time (the default), in a pool of processes, or on a Ray cluster. Either
way this process is the driver (``driver.py``): it alone writes the index and the run files
(``writeback.py``); a remote job hands back its history, predictions, probabilities and
weights.

Bit-exactness of a resumed run holds on the same machine with the same torch build, device
and thread count: the checkpoint holds every generator's state, but a different thread count
or device changes the order of floating-point sums. Those settings are recorded with the run
(``environment``) and a resume under different ones is reported.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cnnbench.data.datasets import Dataset
from cnnbench.model.memory import check_memory, gpu_memory
from cnnbench.model.spec import ModelSpec, check_classes
from cnnbench.store.records import empty_history
from cnnbench.store.run_store import RunStore, git_commit, resolved_spec, run_id, run_key
from cnnbench.study.decide import Action, decide, start_from
from cnnbench.study.environment import EXACTNESS_SETTINGS, bit_exact_under, environment
from cnnbench.study.executors import Executor, InProcess, LocalExecutor
from cnnbench.study.jobs import DataRef, JobCheckpoint, TrainJob, mtime
from cnnbench.study.loggers import check_loggers
from cnnbench.study.writeback import Outcome, PlannedRun, Session, WriteBack
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import LAST, load_checkpoint, remove_checkpoints
from cnnbench.train.engine import TrainConfig
from cnnbench.train.history import EpochLogs

Log = Callable[[str], None]


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


class StudyRunner:
    """One study (one config, one seed) of some models through a store; see the module
    docstring. ``run`` trains it alone; ``driver.run_studies`` several on one executor.

    ``executor`` says where the jobs train (default: in this process, one at a time); this
    process alone writes the store, whichever executor trains. ``study``: the ablations and
    claims the runs are trained for (``studydoc.study_document``), kept in their config.json.
    """

    def __init__(self, store: RunStore, dataset: Dataset, config: TrainConfig,
                 device: torch.device, force: bool = False, log: Log = print,
                 callbacks: Callable[[ModelSpec], Sequence[Callback]] = lambda s: (),
                 loggers: Sequence[str] = (), executor: Executor | None = None,
                 study: Mapping[str, Any] | None = None) -> None:
        self.store, self.dataset, self.config, self.device = store, dataset, config, device
        self.force, self.log, self.callbacks = force, log, callbacks
        check_loggers(loggers)
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self._force_ids: set[str] = set()
        # Plain JSON values (torch.__version__ is a str subclass torch.load refuses to unpickle).
        self.env = json.loads(json.dumps(environment(device) | {"git_commit": git_commit()}))
        if self.executor.remote:  # what the jobs are expected to run under, until they report
            self.env |= {"threads": self.executor.threads, "executor": self.executor.name}
        self.writeback = WriteBack(store, dataset, config, log, tuple(loggers),
                                   self.executor.name, self.executor.remote, study)

    def run(self, specs: Sequence[ModelSpec]) -> list[Outcome]:
        from cnnbench.study.driver import run_studies
        return run_studies([(self, specs)])[0]

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
        self._force_ids = set(self.store.done_ids()) if self.force else set()
        self.executor.start(ds, self.device)
        return jobs

    def open(self, job: PlannedRun) -> Outcome | Session:
        """Under the run's lock: the finished run reused, or the run begun in the store and
        made a TrainJob (a Session the driver hands to the executor)."""
        rid, name, store = job.id, job.spec.name, self.store
        store.recover(rid)  # under the lock: complete a set of files a kill cut, sweep *.tmp
        row = store.get(rid)
        status = row.status if row is not None else None
        done = row is not None and row.status.done
        # --force: for a done run, only if it was done when the command started
        forced = rid in self._force_ids if done else self.force
        d = decide(status, force=forced,
                   files_complete=done and row is not None and store.final_files_complete(row))
        if d.reuse:
            assert row is not None
            return self.writeback.reused(job, row)
        if d.reason:
            self.log(f"{name}: run {rid} {d.reason}")
        if d.clear:
            remove_checkpoints(store.folder(rid))
        if done:
            self._force_ids.discard(rid)
        folder = store.attempt_folder(rid) if d.attempt else store.folder(rid)

        def warn(m: str) -> None:
            self.log(f"warning: {m}")

        found = load_checkpoint(folder, warn=warn)
        start = start_from(found, rid=rid, epochs=self.config.epochs, row_status=status,
                           epochs_done=row.epochs_done if row is not None else 0)
        if start.foreign:
            warn(f"{folder}: its checkpoint belongs to another run; training from scratch")
        if start.lost:
            warn(f"{name}: no usable checkpoint for run {rid}; restarting it from epoch 1")
        state = found if start.action == Action.RESUME else None
        if state is not None:
            self.log(f"{name}: resuming run {rid} after epoch {start.epoch}/{self.config.epochs}"
                     + (" (a --force retrain; the finished run is kept until it ends)"
                        if d.attempt else ""))
            self._warn_environment(name, state.get("environment", {}))

        config_doc = self._config_doc(job)
        history_so_far = state["history"] if state is not None else empty_history()
        if d.attempt:  # the row and the finished files stay as they are until the retrain ends
            folder.mkdir(parents=True, exist_ok=True)
            store.write_json(folder / "config.json", config_doc)  # workers look for it there
        else:
            store.begin(rid, config_doc, epochs_done=start.epoch)
            store.write_history(rid, history_so_far)
        train = TrainJob(rid, job.spec, self.config, DataRef.of(self.dataset), str(self.device),
                         self.executor.threads, str(folder), self.env)
        s = Session(job, train, state, config_doc, history_so_far, folder)
        if self.executor.remote:
            s.checkpoint_mtime = mtime(folder / LAST)
            return s
        extra = {"run_id": rid, "environment": self.env}
        s.saver = JobCheckpoint(folder, extra) if d.attempt else StoreCheckpoint(store, rid,
                                                                                 extra)
        s.saver.history = state["history"] if state is not None else None
        s.loggers = self.writeback.start_loggers(s)
        return s

    def in_process(self, s: Session) -> InProcess:
        """What an in-process executor runs ``s`` with: its checkpoint, progress, store and
        logger callbacks, and where its gradient norms go."""
        if self.executor.remote:
            return InProcess()
        assert s.saver is not None  # open() gives every in-process run its saver
        return InProcess(s.state, [*self.callbacks(s.planned.spec), s.saver, *s.loggers],
                         lambda n: self.store.write_json(s.folder / "grad_norms.json", n))

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
            "bit_exact_under": bit_exact_under(self.env),
            "key": job.key,
            "sessions": sessions,
        }

    def _warn_environment(self, name: str, before: dict[str, Any]) -> None:
        changed = [f"{k} {before.get(k)} -> {self.env.get(k)}" for k in EXACTNESS_SETTINGS
                   if k in before and before.get(k) != self.env.get(k)]
        if changed:
            self.log(f"warning: {name}: resuming with {', '.join(changed)}; the numbers may "
                     f"differ in the last bits from an uninterrupted run")


def _iso(t: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
