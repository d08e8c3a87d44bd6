"""One training job, executor-neutral: what to train (picklable) and what comes back.

A :class:`TrainJob` names everything that determines a run's numbers (spec, settings, data by
its hashes, seed) plus where it may checkpoint and how many threads it uses. :func:`train_job`
trains it on tensors given to it and returns a :class:`JobOutput`: history, final metrics,
predictions, probabilities and the final weights as bytes. It writes nothing but checkpoints
(and only through the callbacks it is given): the driver that submitted the job writes the
run store. The same function runs in this process (``--executor local``) and on a Ray worker
(``--executor ray``), so the same seed and thread count give the same numbers either way.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.analysis.diagnosis import gradient_norms
from cnnbench.model.build import build_model, predict_proba
from cnnbench.model.spec import ModelSpec
from cnnbench.model.weights import weights_bytes
from cnnbench.store.records import RunStatus
from cnnbench.store.run_store import StoreError
from cnnbench.study.decide import belongs
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import load_checkpoint, save_checkpoint
from cnnbench.train.engine import TrainConfig, fit
from cnnbench.train.history import EpochLogs, TrainResult


@dataclass(frozen=True)
class DataRef:
    """A dataset as a job knows it: its name, classes and the SHA-256 of each array."""

    name: str
    classes: tuple[str, ...]
    source: str
    fingerprint: str
    hashes: dict[str, str] = field(hash=False)

    @classmethod
    def of(cls, dataset: Any) -> DataRef:
        return cls(dataset.info.name, tuple(dataset.info.classes), dataset.source,
                   dataset.fingerprint(), dict(dataset.hashes()))


@dataclass
class TrainJob:
    """One (model, settings, data, seed): picklable, so it can travel to another process."""

    run_id: str
    spec: ModelSpec
    config: TrainConfig
    data: DataRef
    device: str = "cpu"
    threads: int | None = None  # torch threads; None: whatever the process has
    checkpoint_dir: str | None = None  # the run's folder: checkpoints go there, resume from it
    environment: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints

    @property
    def label(self) -> str:
        return f"{self.spec.name}, seed {self.config.seed}"


@dataclass
class JobOutput:
    """What a job hands back to the driver, which writes it to the store."""

    run_id: str
    result: TrainResult  # history, status, test metrics, predicted classes
    probabilities: np.ndarray | None  # float32 test images x classes; None unless finished
    weights: bytes | None  # safetensors with the spec; None unless finished
    grad_norms: dict[str, float] | None  # at initialisation; None when resumed
    seconds: float  # wall time of the training loop in this attempt
    resumed_from: int  # epochs already done when this attempt began (0: from scratch)
    environment: dict[str, Any]  # where it ran: versions, threads, device, host
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    attempt: dict[str, Any] = field(default_factory=dict)  # as the executor recorded it


class JobCheckpoint(Callback):
    """Engine callback: after each epoch, a checkpoint in ``folder`` (the run's folder)."""

    def __init__(self, folder: Path, extra: dict[str, Any]) -> None:
        self.folder, self.extra = folder, extra
        self.get_state: Callable[[], dict[str, Any]] | None = None
        self.history: dict[str, list[float]] | None = None
        self.seconds: list[float] = []  # time spent writing each checkpoint

    def on_train_begin(self, get_state: Callable[[], dict[str, Any]]) -> None:
        self.get_state = get_state

    def on_epoch_end(self, logs: EpochLogs) -> None:
        assert self.get_state is not None, "fit() did not call on_train_begin"
        start = time.perf_counter()
        state = self.get_state() | self.extra
        try:
            save_checkpoint(self.folder, state)
        except OSError as e:
            raise StoreError(f"cannot write a checkpoint in {self.folder}: "
                             f"{e.strerror or e}") from e
        self.seconds.append(time.perf_counter() - start)
        self.history = state["history"]


def usable_checkpoint(folder: Path, rid: str, epochs: int,
                      warn: Callable[[str], None] = lambda m: None) -> dict[str, Any] | None:
    """The newest good checkpoint in ``folder`` if it belongs to run ``rid``, else None."""
    state = load_checkpoint(folder, warn=warn)
    if state is not None and not belongs(state, rid, epochs):
        warn(f"{folder}: its checkpoint belongs to another run; training from scratch")
        return None
    return state


def train_job(job: TrainJob, data: Sequence[torch.Tensor], *,
              state: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (),
              on_grad_norms: Callable[[dict[str, float]], None] | None = None) -> JobOutput:
    """Train ``job`` on ``data`` (x_train, y_train, x_test, y_test on the job's device),
    continuing from ``state`` (a checkpoint) when given. Writes nothing itself."""
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    cfg = job.config
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)  # the same initial draw and dropout masks for a seed
    model = build_model(job.spec).to(torch.device(job.device))
    norms = None
    if state is None:
        # Per-layer gradient norms at initialisation, for the diagnosis of a run that gets
        # stuck: one forward and backward pass on a copy, the run's random draws untouched.
        norms = gradient_norms(model, x_train[:128], y_train[:128])
        if on_grad_norms is not None:
            on_grad_norms(norms)
    done = int(state["epoch"]) if state is not None else 0
    start = time.perf_counter()
    result = fit(model, x_train, y_train, x_test, y_test, cfg, callbacks, state=state)
    seconds = time.perf_counter() - start
    weights = proba = None
    if result.status == RunStatus.FINISHED:
        weights = weights_bytes(model, job.spec, job.data.classes, job.data.name,
                                run_id=job.run_id)
        proba = probabilities(model, x_test, cfg.eval_batch_size)
    return JobOutput(job.run_id, result, proba, weights, norms, seconds, done,
                     dict(job.environment))


@torch.inference_mode()
def probabilities(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Class probabilities for ``x``, float32, in batches, in inference mode."""
    model.eval()
    out = [predict_proba(model, x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def mtime(path: os.PathLike[str] | str) -> int:
    """A file's modification time in ns; 0 when it is not there."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
