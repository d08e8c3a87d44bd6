"""``--jobs N``: N runs at once on this machine, each in a spawned worker process."""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from cnnbench.study.executors.base import (
    MAX_RETRIES,
    Done,
    ExecutorError,
    InProcess,
    Log,
)
from cnnbench.study.executors.worker import run_on_worker
from cnnbench.study.jobs import JobOutput, TrainJob


class WorkerDied(ExecutorError):
    """A worker process died (killed, out of memory, crashed) while it trained a job."""


class ProcessExecutor:
    """``jobs`` runs at once on this machine, each in a worker process of its own with
    ``threads`` torch threads (``cnnbench run --jobs N``).

    On 2 cores, two runs of one thread each train 1.1-1.3x more images a second together than
    one run of two threads (bf16: CNN_MNIST_1 5,800 vs 4,750 img/s, CNN_MNIST_2 5,140 vs
    4,040): a small model's step leaves the second thread idle at every synchronisation
    point. Workers are spawned, get the dataset once and check its hashes, checkpoint into
    the run's folder, and ignore Ctrl-C: the driver stops them and records the runs.

    A worker that dies breaks Python's pool, and the pool then stops every other worker too.
    So the pool is rebuilt: the run whose worker died fails (recorded resumable, named with
    the signal that ended its worker); the runs only stopped with it are submitted again and
    resume from their checkpoints (at most ``MAX_RETRIES`` times each).
    """

    name, remote = "processes", True

    def __init__(self, jobs: int, threads: int, log: Log = print) -> None:
        self.capacity, self.threads, self.log = jobs, threads, log
        self._pool: Any = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._data_fp: str | None = None
        self._pending: dict[Any, TrainJob] = {}
        self._ready: list[Done] = []  # jobs ended while the pool was being rebuilt
        self._attempts: dict[str, list[dict[str, Any]]] = {}  # as the workers announced them
        self._notes: Any = None  # the workers' queue of (run id, attempt) as each job starts

    def start(self, dataset: Any, device: torch.device) -> None:
        fp = dataset.fingerprint()
        if self._pool is not None and self._data_fp == fp:
            return
        self.close()
        self._arrays, self._data_fp = dataset.arrays(), fp
        self._new_pool()

    def _new_pool(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        # spawn, not fork: a forked child of a process whose OpenMP threads exist can hang.
        context = multiprocessing.get_context("spawn")
        self._notes = context.Queue()
        assert self._arrays is not None  # start() reads the data before the first pool
        self._pool = ProcessPoolExecutor(
            self.capacity, mp_context=context, initializer=_init_process_worker,
            initargs=(self._arrays, self._notes))

    def submit(self, job: TrainJob, here: InProcess) -> None:
        from concurrent.futures.process import BrokenProcessPool
        job = replace(job, threads=self.threads)
        try:
            self._pending[self._pool.submit(_run_in_process_worker, job)] = job
        except BrokenProcessPool:  # a worker died since the last look: rebuild, then submit
            self._rebuild()
            self._pending[self._pool.submit(_run_in_process_worker, job)] = job

    def next_done(self, timeout: float | None = None) -> Done | None:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool
        if self._ready:
            return self._ready.pop(0)
        if not self._pending:
            return None
        ready, _ = wait(list(self._pending), timeout=timeout, return_when=FIRST_COMPLETED)
        if not ready:
            return None
        future = ready.pop()
        if isinstance(future.exception(), BrokenProcessPool):
            self._rebuild()
            return self._ready.pop(0) if self._ready else None
        return self._done(self._pending.pop(future), future)

    def _read_notes(self) -> None:
        import queue
        while True:
            try:
                rid, attempt = self._notes.get_nowait()
            except (queue.Empty, OSError, ValueError, EOFError):
                return
            self._attempts.setdefault(rid, []).append(attempt)

    def _done(self, job: TrainJob, future: Any) -> Done:
        self._read_notes()
        attempts = self._attempts.pop(job.run_id, [])
        error = future.exception()
        if error is not None:  # the job raised: its own failure, not its worker's
            return Done(job, None, error, attempts)
        out = future.result()
        if out.attempt not in attempts:
            attempts.append(out.attempt)
        return Done(job, out, attempts=sorted(attempts, key=lambda a: a["started"]))

    def _rebuild(self) -> None:
        """The pool broke: every job in it has ended. Tell which worker died, fail its run,
        hand back what finished, submit the rest to a new pool."""
        from concurrent.futures import wait
        from concurrent.futures.process import BrokenProcessPool
        wait(list(self._pending), timeout=60)  # the broken pool fails them all at once
        processes = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=True, cancel_futures=True)  # joins: exit codes are known
        self._read_notes()
        codes = {pid: proc.exitcode for pid, proc in processes.items()}
        died = {pid for pid, code in codes.items() if code not in (None, 0, -signal.SIGTERM)}
        stopped: list[TrainJob] = []
        for future, job in list(self._pending.items()):
            if not isinstance(future.exception(), BrokenProcessPool):
                self._ready.append(self._done(job, future))
                continue
            pids = [a["pid"] for a in self._attempts.get(job.run_id, [])]
            ran = pids[-1] if pids else None
            # The pool stops the other workers with SIGTERM; a job whose worker ended any other
            # way (or any job that was running, when no worker is told apart) is the one.
            guilty = ran is not None and (ran in died or not died)
            if guilty or len(pids) > MAX_RETRIES:
                how = _exit_text(codes.get(ran)) if ran is not None else "ended"
                self._ready.append(Done(job, None, WorkerDied(
                    f"its worker (pid {ran}) {how} while it trained this run"),
                    self._attempts.pop(job.run_id, [])))
            else:
                for a in self._attempts.get(job.run_id, [])[-1:]:
                    a["stopped"] = True  # not its fault: stopped with the pool
                stopped.append(job)
        self._pending.clear()
        culprits = [d.job.label for d in self._ready if isinstance(d.error, WorkerDied)]
        if stopped:
            self.log(f"a worker process died ({', '.join(culprits) or 'between jobs'}); "
                     f"restarting the pool of {self.capacity} workers: "
                     f"{', '.join(j.label for j in stopped)} run(s) again from the last "
                     f"checkpoint")
        self._new_pool()
        for job in stopped:
            self._pending[self._pool.submit(_run_in_process_worker, job)] = job

    def cancel_all(self) -> None:
        if self._pool is not None:
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.kill()  # mid-epoch: the run's last checkpoint is what counts
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._ready.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _exit_text(code: int | None) -> str:
    """How a process ended, from its exit code: 'was killed by signal 9 (SIGKILL)'."""
    if code is None:
        return "ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-code} ({name})"
    return f"exited with status {code}"


_WORKER_ARRAYS: dict[str, np.ndarray] = {}


_WORKER_NOTES: list[Any] = []  # the driver's queue, for the attempt each job starts


def _init_process_worker(arrays: dict[str, np.ndarray], notes: Any = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when a run stops
    _WORKER_ARRAYS.update(arrays)
    _WORKER_NOTES[:] = [notes]


def _run_in_process_worker(job: TrainJob) -> JobOutput:
    notes = _WORKER_NOTES[0] if _WORKER_NOTES else None
    return run_on_worker(job, _WORKER_ARRAYS, executor="processes",
                         on_start=None if notes is None else lambda rid, a: notes.put((rid, a)))
