"""Where a study's jobs run: in this process (``local``) or on a Ray cluster (``ray``).

An executor takes :class:`~cnnbench.study.jobs.TrainJob` s and hands back their
:class:`~cnnbench.study.jobs.JobOutput` s; the driver that submitted them
(:mod:`cnnbench.study.driver`) alone writes the run store. The interface, for any executor:

- ``start(dataset, device)`` once per study, before the first ``submit``;
- ``submit(job, here)``: ``here`` holds what only an in-process executor can use (the
  checkpoint already loaded, progress and per-epoch store callbacks); others ignore it;
- ``next_done(timeout)``: the next finished job as :class:`Done`, or None after ``timeout``;
- ``capacity``: how many submitted jobs it runs or queues at once (the driver locks that many
  runs); ``remote``: whether jobs run outside this process; ``threads``: torch threads a job
  (None: the process's own); ``cancel_all()``, ``close()``.

On Ray each job is a task asking for as many CPUs as it uses threads. Its worker receives the
dataset once through the object store and checks it against the study's SHA-256 hashes; it
checkpoints into the run's folder when that folder is reachable from its node (the same or a
shared filesystem), and writes nothing else. A worker that dies is replaced by Ray's own task
retry (``max_retries``), which resumes from the last checkpoint it can reach.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.errors import CnnbenchError, UsageError
from cnnbench.study.jobs import (
    DataRef,
    JobCheckpoint,
    JobOutput,
    TrainJob,
    train_job,
    usable_checkpoint,
)
from cnnbench.train.callbacks import Callback

Log = Callable[[str], None]
INSTALL_RAY = "pip install 'cnnbench[ray]'"
MAX_RETRIES = 3  # a job whose worker dies is run again up to this many times


class ExecutorUnavailable(UsageError, ValueError):
    """An executor was asked for whose package is missing; says how to install it."""


class ExecutorError(CnnbenchError, RuntimeError):
    """Jobs failed where they ran (an exception in training, retries exhausted)."""


@dataclass
class InProcess:
    """What only an in-process executor uses; remote executors ignore it."""

    state: dict[str, Any] | None = None  # the checkpoint the driver loaded
    callbacks: Sequence[Callback] = ()
    on_grad_norms: Callable[[dict[str, float]], None] | None = None


@dataclass
class Done:
    """A job that ended: its output, or the error that ended it, and every attempt made."""

    job: TrainJob
    output: JobOutput | None
    error: BaseException | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)  # host, pid, resumed_from


class Executor(Protocol):
    name: str
    remote: bool
    capacity: int
    threads: int | None

    def start(self, dataset: Any, device: torch.device) -> None: ...
    def submit(self, job: TrainJob, here: InProcess) -> None: ...
    def next_done(self, timeout: float | None = None) -> Done | None: ...
    def cancel_all(self) -> None: ...
    def close(self) -> None: ...


def tensors(arrays: dict[str, np.ndarray], device: torch.device | str
            ) -> tuple[torch.Tensor, ...]:
    """x_train, y_train, x_test, y_test (``Dataset.arrays()``) as the engine takes them."""
    return (images_to_tensor(arrays["x_train"], device),
            labels_to_tensor(arrays["y_train"], device),
            images_to_tensor(arrays["x_test"], device), labels_to_tensor(arrays["y_test"], device))


class LocalExecutor:
    """Today's path: one job at a time, in this process, when the driver asks for it."""

    name, remote, capacity = "local", False, 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._queue: list[tuple[TrainJob, InProcess]] = []
        self._data: tuple[Any, torch.device] | None = None
        self._tensors: tuple[torch.Tensor, ...] | None = None

    def start(self, dataset: Any, device: torch.device) -> None:
        if self._data is None or self._data[0] is not dataset or self._data[1] != device:
            self._data, self._tensors = (dataset, device), None

    def submit(self, job: TrainJob, here: InProcess) -> None:
        self._queue.append((job, here))

    def next_done(self, timeout: float | None = None) -> Done | None:
        if not self._queue:
            return None
        job, here = self._queue.pop(0)
        if self._tensors is None:  # made once, when the first job needs them
            assert self._data is not None, "start() was not called"
            dataset, device = self._data
            self._tensors = tensors(dataset.arrays(), device)
        try:
            out = train_job(job, self._tensors, state=here.state, callbacks=here.callbacks,
                            on_grad_norms=here.on_grad_norms)
        except OSError:  # a full disk, a store gone read-only: no other run would fare better
            raise
        except Exception as e:  # a failure of this run only: recorded, the study goes on
            return Done(job, None, e, attempts=[_attempt(0, checkpoints=True)])
        out.attempt = _attempt(out.resumed_from, checkpoints=True)
        return Done(job, out, attempts=[out.attempt])

    def cancel_all(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        pass


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ExecutorUnavailable(f"--executor ray needs the 'ray' package, which is not "
                                  f"installed here ({e}): {INSTALL_RAY}") from None
    return ray


class RayExecutor:
    """Each job a Ray task of ``threads`` CPUs on the cluster at ``address``: ``auto`` (the
    one this machine belongs to), ``HOST:PORT``, ``ray://HOST:PORT``, or None for a local
    cluster started for the study and stopped with it."""

    name, remote = "ray", True
    capacity = sys.maxsize  # every job is submitted at once: Ray queues what does not fit

    def __init__(self, address: str | None = None, threads: int = 1,
                 max_retries: int = MAX_RETRIES, log: Log = print) -> None:
        self.ray = import_ray()
        self.address, self.threads, self.max_retries, self.log = address, threads, max_retries, log
        self._pending: dict[Any, TrainJob] = {}
        self._data_ref: Any = None
        self._data_fp: str | None = None
        self._journal: Any = None
        self._journal_lost = False
        self._connected = self._owns = False
        self._task = self.ray.remote(run_on_worker)

    def start(self, dataset: Any, device: torch.device) -> None:
        ray = self.ray
        if not self._connected:
            # A program that connected to Ray itself keeps its connection after the study.
            self._owns = not ray.is_initialized()
            if self._owns:
                sigterm = signal.getsignal(signal.SIGTERM)
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                try:
                    ray.init(address=self.address, include_dashboard=False,
                             log_to_driver=False, logging_level=logging.WARNING)
                except Exception as e:
                    raise ExecutorError(_connect_error(self.address, e)) from e
                if sigterm is not None:  # ray.init replaces it; the CLI's stops cleanly
                    signal.signal(signal.SIGTERM, sigterm)
            self._connected = True
            self._journal = ray.remote(Journal).options(num_cpus=0).remote()
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            cpus = ray.cluster_resources().get("CPU", 0)
            where = self.address or "a local cluster started for this study"
            self.log(f"Ray: {where}, {len(nodes)} node(s), {cpus:g} CPUs; {self.threads} "
                     f"thread(s) a job, up to {max(1, int(cpus // self.threads))} at once")
        fp = dataset.fingerprint()
        if self._data_fp != fp:  # shipped once a dataset; every worker checks the hashes
            self._data_ref, self._data_fp = ray.put(dataset.arrays()), fp

    def submit(self, job: TrainJob, here: InProcess) -> None:
        options: dict[str, Any] = {"num_cpus": self.threads, "max_retries": self.max_retries,
                                   "retry_exceptions": False, "name": f"cnnbench {job.label}"}
        if job.device.startswith("cuda"):
            options["num_gpus"] = 1
        job = replace(job, threads=self.threads)
        try:
            ref = self._task.options(**options).remote(job, self._data_ref, self._journal)
        except Exception as e:  # the cluster is gone: an executor error, not a traceback
            raise ExecutorError(f"Ray: cannot submit {job.label}: {_first_line(e)}") from e
        self._pending[ref] = job

    def next_done(self, timeout: float | None = None) -> Done | None:
        ray = self.ray
        if not self._pending:
            return None
        try:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        except Exception as e:  # the cluster was lost: the driver records the runs in flight
            raise ExecutorError(f"lost the Ray cluster at {self.address or '(local)'}: "
                                f"{_first_line(e)}") from e
        if not ready:
            return None
        job = self._pending.pop(ready[0])
        output, error = None, None
        try:
            output = ray.get(ready[0])
        except Exception as e:  # RayError, or the connection to the cluster lost meanwhile
            error = e
        try:
            attempts = ray.get(self._journal.attempts.remote(job.run_id), timeout=60)
        except Exception as e:  # the journal actor died: the attempts are unknown, not the run
            if not self._journal_lost:
                self.log(f"warning: Ray: the journal of attempts is lost ({_first_line(e)}); "
                         f"retries after this are not recorded")
            self._journal_lost, attempts = True, []
        if output is not None and output.attempt not in attempts:  # its note may be on its way
            attempts.append(output.attempt)
        return Done(job, output, error, sorted(attempts, key=lambda a: a["started"]))

    def cancel_all(self) -> None:
        for ref in list(self._pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished, or the cluster is gone: nothing to stop
                pass
        self._pending.clear()

    def close(self) -> None:
        if self._connected and self._owns:
            self.ray.shutdown()  # a cluster started for the study stops with it
        self._connected = False


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1][:300]}" if text else type(e).__name__


def _connect_error(address: str | None, e: BaseException) -> str:
    """Why ray.init failed, in a line, with the fix for the usual cause."""
    causes = []
    while e is not None and len(causes) < 5:
        causes.append(str(e).strip().splitlines()[-1][:300] if str(e).strip()
                      else type(e).__name__)
        e = e.__cause__ or e.__context__
    text = f"cannot connect to the Ray cluster at {address or '(local)'}: {causes[-1]}"
    if any("auth" in c.lower() for c in causes):
        text += (" (the cluster uses token authentication: set RAY_AUTH_MODE=token and give "
                 "its token in RAY_AUTH_TOKEN or ~/.ray/auth_token, as for any Ray client)")
    return text


class Journal:
    """A Ray actor recording each attempt of each job, so the driver can say what was retried
    (Ray retries a task whose worker died without telling the caller)."""

    def __init__(self) -> None:
        self.log: dict[str, list[dict[str, Any]]] = {}

    def started(self, rid: str, attempt: dict[str, Any]) -> None:
        self.log.setdefault(rid, []).append(attempt)

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        return self.log.get(rid, [])


def _attempt(resumed_from: int, checkpoints: bool) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "resumed_from": resumed_from,
            "checkpoints": checkpoints, "started": time.time()}


# --- on the worker --------------------------------------------------------------------------

_VERIFIED: dict[tuple[str, str], tuple[torch.Tensor, ...]] = {}  # one dataset per process


def verified_tensors(data: DataRef, arrays: dict[str, np.ndarray],
                     device: torch.device) -> tuple[torch.Tensor, ...]:
    """The shipped arrays as tensors, once their SHA-256 match the study's (cached per worker
    process: a worker runs many jobs of one study)."""
    from cnnbench.data.datasets import ARRAYS, DataError, array_sha256
    key = (data.fingerprint, str(device))
    if key not in _VERIFIED:
        for k in ARRAYS:
            digest = array_sha256(arrays[k])
            if digest != data.hashes[k]:
                raise DataError(f"{data.name} on {socket.gethostname()}: {k} (shape "
                                f"{arrays[k].shape}) has SHA-256 {digest[:16]}..., the study's "
                                f"is {data.hashes[k][:16]}...; the data was altered on the way")
        with warnings.catch_warnings():  # object-store arrays are read-only; tensors copy them
            warnings.simplefilter("ignore", UserWarning)
            ts = tensors(arrays, device)
        _VERIFIED.clear()
        _VERIFIED[key] = ts
    return _VERIFIED[key]


def reachable_folder(job: TrainJob) -> Path | None:
    """The run's folder if this node sees the driver's (its config.json names this run)."""
    if not job.checkpoint_dir:
        return None
    folder = Path(job.checkpoint_dir)
    try:
        doc = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return folder if doc.get("run_id") == job.run_id and os.access(folder, os.W_OK) else None


def run_on_worker(job: TrainJob, arrays: dict[str, np.ndarray], journal: Any = None,
                  executor: str = "ray",
                  on_start: Callable[[str, dict[str, Any]], None] | None = None) -> JobOutput:
    """A Ray task or a worker process: train ``job``, resuming from the run folder's
    checkpoint when reachable; ``journal`` (Ray's) or ``on_start`` hears of the attempt."""
    from cnnbench.store.run_store import git_commit
    from cnnbench.study.environment import environment
    device = torch.device(job.device)
    if job.threads is not None:
        torch.set_num_threads(job.threads)  # before `environment` records it
    data = verified_tensors(job.data, arrays, device)
    env = json.loads(json.dumps(environment(device) | {
        "git_commit": git_commit(), "host": socket.gethostname(), "executor": executor}))
    job = replace(job, environment=env)
    folder = reachable_folder(job)
    state = usable_checkpoint(folder, job.run_id, job.config.epochs) if folder else None
    attempt = _attempt(int(state["epoch"]) if state is not None else 0, folder is not None)
    # Not waited for: a task blocked in ray.get lends its CPU to another task, and two jobs
    # would then share one CPU's worth of threads.
    if journal is not None:
        journal.started.remote(job.run_id, attempt)
    if on_start is not None:
        on_start(job.run_id, attempt)
    callbacks: list[Callback] = []
    on_norms = None
    if folder is not None:
        # The worker's pid: which process trained it (tests check that none outlives the driver).
        saver = JobCheckpoint(folder, {"run_id": job.run_id, "environment": env,
                                       "worker_pid": os.getpid()})
        callbacks.append(saver)

        def on_norms(norms: dict[str, float]) -> None:  # kept for a retry that resumes
            saver.extra["grad_norms"] = norms
    out = train_job(job, data, state=state, callbacks=callbacks, on_grad_norms=on_norms)
    out.attempt = attempt
    if out.grad_norms is None and state is not None:
        out.grad_norms = state.get("grad_norms")
    return out
