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

from cnnbench.study.executors.base import (
    MAX_RETRIES,
    Done,
    Executor,
    ExecutorError,
    ExecutorUnavailable,
    InProcess,
    Log,
    tensors,
)
from cnnbench.study.executors.local import LocalExecutor
from cnnbench.study.executors.process import ProcessExecutor, WorkerDied
from cnnbench.study.executors.ray import INSTALL_RAY, RayExecutor, import_ray
from cnnbench.study.executors.worker import reachable_folder, run_on_worker, verified_tensors

__all__ = ["INSTALL_RAY", "MAX_RETRIES", "Done", "Executor", "ExecutorError",
           "ExecutorUnavailable", "InProcess", "LocalExecutor", "Log", "ProcessExecutor",
           "RayExecutor", "WorkerDied", "import_ray", "reachable_folder", "run_on_worker",
           "tensors", "verified_tensors"]
