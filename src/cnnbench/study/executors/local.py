"""``local``: one job at a time, in this process, when the driver asks for it."""

from __future__ import annotations

from typing import Any

import torch

from cnnbench.study.executors.base import Done, InProcess, attempt_record, tensors
from cnnbench.study.jobs import TrainJob, train_job


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
            return Done(job, None, e, attempts=[attempt_record(0, checkpoints=True)])
        out.attempt = attempt_record(out.resumed_from, checkpoints=True)
        return Done(job, out, attempts=[out.attempt])

    def cancel_all(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        pass
