"""``ray``: each job a Ray task; the dataset shipped once through the object store."""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import replace
from typing import Any

import torch

from cnnbench.study.executors.base import (
    MAX_RETRIES,
    Done,
    ExecutorError,
    ExecutorUnavailable,
    InProcess,
    Log,
    first_line,
)
from cnnbench.study.executors.worker import run_on_worker
from cnnbench.study.jobs import TrainJob

INSTALL_RAY = "pip install 'cnnbench[ray]'"


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
            raise ExecutorError(f"Ray: cannot submit {job.label}: {first_line(e)}") from e
        self._pending[ref] = job

    def next_done(self, timeout: float | None = None) -> Done | None:
        ray = self.ray
        if not self._pending:
            return None
        try:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        except Exception as e:  # the cluster was lost: the driver records the runs in flight
            raise ExecutorError(f"lost the Ray cluster at {self.address or '(local)'}: "
                                f"{first_line(e)}") from e
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
                self.log(f"warning: Ray: the journal of attempts is lost ({first_line(e)}); "
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


def _connect_error(address: str | None, e: BaseException) -> str:
    """Why ray.init failed, in a line, with the fix for the usual cause."""
    causes: list[str] = []
    err: BaseException | None = e
    while err is not None and len(causes) < 5:
        causes.append(str(err).strip().splitlines()[-1][:300] if str(err).strip()
                      else type(err).__name__)
        err = err.__cause__ or err.__context__
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
