"""What every executor shares: the interface, its errors, a job's attempt, tensors of arrays."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.errors import CnnbenchError, UsageError
from cnnbench.study.jobs import JobOutput, TrainJob
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


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1][:300]}" if text else type(e).__name__


def attempt_record(resumed_from: int, checkpoints: bool) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "resumed_from": resumed_from,
            "checkpoints": checkpoints, "started": time.time()}
