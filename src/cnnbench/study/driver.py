"""The driver: hands studies' jobs to an executor and follows them until each has ended.

At most ``executor.capacity`` runs are locked and in flight at once. Locally (capacity 1):
lock, train, write, unlock, one run after the other. A process pool or Ray runs several at
once; the driver then follows their checkpoints (history.csv, the index, a line per epoch)
and writes each run's output as it comes back. A run another process holds is left for last,
then waited for. What each run starts from is the study's business (``StudyRunner.open``);
what it leaves in the store, the write-back's (``writeback.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cnnbench.model.spec import ModelSpec
from cnnbench.store.run_store import RunLock, RunStore
from cnnbench.study.executors import Done, Executor, ExecutorError, InProcess
from cnnbench.study.jobs import mtime, usable_checkpoint
from cnnbench.study.writeback import InvalidOutput, Outcome, PlannedRun, Session, WriteBack
from cnnbench.train.checkpoint import LAST
from cnnbench.train.engine import TrainConfig


class StudyRunner(Protocol):
    """What the driver needs of a study (runner.StudyRunner): its runs planned and opened."""

    store: RunStore
    config: TrainConfig
    executor: Executor
    log: Callable[[str], None]
    writeback: WriteBack

    def plan(self, specs: Sequence[ModelSpec]) -> list[PlannedRun]: ...
    def open(self, job: PlannedRun) -> Outcome | Session: ...
    def in_process(self, s: Session) -> InProcess: ...


POLL_SECONDS = 2.0  # how often the driver looks at remote runs' checkpoints


def run_studies(work: Sequence[tuple[StudyRunner, Sequence[ModelSpec]]],
                expected_seconds: Mapping[str, float] | None = None) -> list[list[Outcome]]:
    """Several studies (a seed, or a group of settings, each) and their models, sharing one
    executor: a remote one gets every study's jobs at once, so no worker waits at one study's
    end while another trains its last run. ``expected_seconds`` (model name -> seconds a run
    of it is expected to take) hands out the longest runs first, so the last to end are
    short; models without an estimate go first, in their order. Each study's outcomes, in
    order."""
    executors = {id(s.executor) for s, _ in work}
    if len(executors) != 1:
        raise ValueError(f"run_studies: the studies have {len(executors)} executors; "
                         f"give them one")
    return Driver(work[0][0].executor).run([(s, s.plan(specs)) for s, specs in work],
                                           expected_seconds or {})


def handout_order(work: Sequence[tuple[object, Sequence[PlannedRun]]],
                  expected_seconds: Mapping[str, float]) -> list[tuple[int, int]]:
    """(study, job) indices in the order jobs are handed out: the longest expected first
    (longest-processing-time scheduling), runs of models without an estimate before them, in
    the order given. Example: runs of a (no estimate), b (60 s), c (300 s) go a, c, b."""
    flat = [(k, i) for k, (_, jobs) in enumerate(work) for i in range(len(jobs))]
    return sorted(flat, key=lambda ki: -expected_seconds.get(work[ki[0]][1][ki[1]].spec.name,
                                                             math.inf))


@dataclass
class _Flight:
    """A run in flight: its study (by index into the work), its place there, its lock."""

    study: int
    job: int
    session: Session
    lock: RunLock


class Driver:
    """Follows the jobs of studies on one executor; see the module docstring."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.inflight: dict[str, _Flight] = {}
        self.studies: list[StudyRunner] = []
        self.results: list[list[Outcome | None]] = []
        self.failures: list[tuple[int, str]] = []  # (study, what failed)

    def run(self, work: Sequence[tuple[StudyRunner, list[PlannedRun]]],
            expected_seconds: Mapping[str, float] | None = None) -> list[list[Outcome]]:
        self.studies = [study for study, _ in work]
        self.results = [[None] * len(jobs) for _, jobs in work]
        self.failures = []
        deferred = []
        try:
            for k, i in handout_order(work, expected_seconds or {}):
                study, job = work[k][0], work[k][1][i]
                lock = study.store.lock(job.id)
                if not lock.acquire(blocking=False):
                    study.log(f"{job.spec.name}: run {job.id} is being trained by another "
                              f"process; coming back to it at the end")
                    deferred.append((k, i))
                    continue
                self._submit(k, i, job, lock)
            self._drain()
            for k, i in deferred:
                study, job = work[k][0], work[k][1][i]
                study.log(f"{job.spec.name}: waiting for the other process to finish run "
                          f"{job.id}")
                lock = study.store.lock(job.id)
                lock.acquire(blocking=True)
                self._submit(k, i, job, lock)
            self._drain()
        except BaseException as e:
            if self.executor.remote:
                self.executor.cancel_all()
            for f in self.inflight.values():
                try:
                    self.studies[f.study].writeback.stopped(f.session, e)
                finally:
                    f.lock.release()
            raise
        if self.failures:
            failed = [text for _, text in sorted(self.failures, key=lambda f: f[0])]
            raise ExecutorError(f"{len(failed)} run(s) failed on the {self.executor.name} "
                                f"executor: " + "; ".join(failed))
        return [[r for r in rs if r is not None] for rs in self.results]

    def _submit(self, k: int, i: int, planned: PlannedRun, lock: RunLock) -> None:
        """Reuse the locked run, or begin it and hand it to the executor."""
        study = self.studies[k]
        try:
            opened = study.open(planned)
        except BaseException:
            lock.release()
            raise
        if isinstance(opened, Outcome):
            self.results[k][i] = opened
            lock.release()
            return
        self.inflight[planned.id] = _Flight(k, i, opened, lock)
        self.executor.submit(opened.job, study.in_process(opened))
        self._drain(keep=self.executor.capacity - 1)

    def _drain(self, keep: int = 0) -> None:
        """Collect finished jobs until at most ``keep`` are in flight."""
        while len(self.inflight) > keep:
            done = self.executor.next_done(POLL_SECONDS if self.executor.remote else None)
            if done is None:
                for f in self.inflight.values():
                    self._follow_checkpoint(self.studies[f.study], f.session)
                continue
            f = self.inflight[done.job.run_id]
            wb = self.studies[f.study].writeback
            problem = wb.check(f.session, done.output) if done.output is not None else None
            if problem:  # never stored: the run is recorded resumable, as if its worker failed
                done = Done(done.job, None, InvalidOutput(problem), done.attempts)
            if done.output is None:
                self.failures.append((f.study, wb.failed(f.session, done)))
            else:
                self.results[f.study][f.job] = wb.finished(f.session, done)
            del self.inflight[done.job.run_id]
            f.lock.release()

    @staticmethod
    def _follow_checkpoint(study: StudyRunner, s: Session) -> None:
        """A remote run's new checkpoint: its epoch goes to history.csv, the index, the log."""
        now = mtime(s.folder / LAST)
        if now == s.checkpoint_mtime:
            return
        s.checkpoint_mtime = now
        epochs = study.config.epochs
        state = usable_checkpoint(s.folder, s.rid, epochs)
        if state is None or state["epoch"] <= s.shown:
            return
        if not s.attempt:  # a forced retrain leaves the finished run's row alone until it ends
            row = study.store.get(s.rid)
            if row is None or state["epoch"] <= row.epochs_done:
                return
            study.store.epoch_done(s.rid, state["history"])
        for line in s.epoch_lines(state["history"], epochs):
            study.log(line)
