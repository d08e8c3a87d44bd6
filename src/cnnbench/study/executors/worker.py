"""On the worker (a Ray task or a worker process): the data checked, the job trained,
checkpoints written into the run's folder when it is reachable."""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.study.executors.base import attempt_record, tensors
from cnnbench.study.jobs import (
    DataRef,
    JobCheckpoint,
    JobOutput,
    TrainJob,
    train_job,
    usable_checkpoint,
)
from cnnbench.train.callbacks import Callback

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
    attempt = attempt_record(int(state["epoch"]) if state is not None else 0, folder is not None)
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
