"""Optional loggers for users who live in other tools: TensorBoard event files and MLflow.

The run store stays the source of truth; these mirror each run's settings and per-epoch
metrics. Each needs its package; ``check_loggers`` says which is missing before training.

- ``tensorboard``: event files in ``<store>/runs/<id>/tensorboard``
  (``tensorboard --logdir cnnbench-runs/runs``);
- ``mlflow``: one MLflow run per cnnbench run, tagged ``cnnbench.run_id``, in the experiment
  ``cnnbench`` of ``$MLFLOW_TRACKING_URI`` (MLflow's default: ``./mlruns``); a resumed run
  continues the same MLflow run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cnnbench.errors import UsageError
from cnnbench.store.records import HISTORY_KEYS, RunStatus
from cnnbench.train.callbacks import Callback
from cnnbench.train.history import EpochLogs, TrainResult

if TYPE_CHECKING:  # each imported only when its logger starts
    from mlflow import ActiveRun
    from torch.utils.tensorboard import SummaryWriter

LOGGERS = {  # --log name -> (module to import, how to install it)
    "tensorboard": ("tensorboard", "pip install 'cnnbench[tensorboard]' (or tensorboard)"),
    "mlflow": ("mlflow", "pip install 'cnnbench[mlflow]' (or mlflow)"),
}
METRICS = HISTORY_KEYS  # each logged under its history name


class LoggerUnavailable(UsageError, ValueError):
    """A logger was asked for whose package is not installed."""


def check_loggers(names: Sequence[str]) -> None:
    """Fail before any training when a requested logger cannot run."""
    for name in names:
        if name not in LOGGERS:
            raise LoggerUnavailable(f"unknown logger '{name}'; known: {', '.join(LOGGERS)}")
        module, install = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise LoggerUnavailable(f"--log {name} needs the '{module}' package, which is not "
                                    f"installed here: {install}")


class RunLogger(Callback):
    """An engine callback with a start and an end: one per logger and run."""

    def start(self, rid: str, folder: Path, config: Mapping[str, Any],
              history: Mapping[str, Sequence[float]]) -> None: ...

    def end(self, status: str, result: TrainResult | None) -> None: ...


class TensorBoardLogger(RunLogger):
    writer: SummaryWriter

    def start(self, rid: str, folder: Path, config: Mapping[str, Any],
              history: Mapping[str, Sequence[float]]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        done = len(history["loss"])
        # purge_step: a resume from an older checkpoint drops the epochs it will redo.
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=done + 1)
        if done == 0:
            self.writer.add_text("config", f"```\n{_flat_text(config)}\n```", 0)

    def on_epoch_end(self, logs: EpochLogs) -> None:
        for k in ("loss", "acc"):
            self.writer.add_scalars(k, {"train": getattr(logs, k),
                                        "test": getattr(logs, f"val_{k}")}, logs.epoch)
        self.writer.add_scalar("seconds", logs.seconds, logs.epoch)
        self.writer.flush()  # as the store does: nothing is lost when the run is killed

    def end(self, status: str, result: TrainResult | None) -> None:
        self.writer.close()


class MLflowLogger(RunLogger):
    mlflow: ModuleType
    run: ActiveRun

    def start(self, rid: str, folder: Path, config: Mapping[str, Any],
              history: Mapping[str, Sequence[float]]) -> None:
        import mlflow
        self.mlflow = mlflow
        mlflow.set_experiment("cnnbench")
        found = mlflow.search_runs(filter_string=f"tags.`cnnbench.run_id` = '{rid}'",
                                   output_format="list", max_results=1)
        logged: set[int] = set()
        if found:  # a resumed run continues its MLflow run
            self.run = mlflow.start_run(run_id=found[0].info.run_id)
            logged = {m.step for m in mlflow.tracking.MlflowClient().get_metric_history(
                self.run.info.run_id, "loss")}
        else:
            self.run = mlflow.start_run(run_name=f"{config['model']['name']}-{rid}")
            mlflow.set_tags({"cnnbench.run_id": rid, "cnnbench.folder": str(folder)})
            mlflow.log_params(_flat(config, keys=("training", "seed", "dataset.name",
                                                  "dataset.fingerprint", "model.name",
                                                  "model.parameters", "environment")))
        # Epochs the store holds but MLflow missed (a kill between the two writes).
        for i in range(len(history["loss"])):
            if i + 1 not in logged:
                mlflow.log_metrics({k: history[k][i] for k in METRICS}, step=i + 1)

    def on_epoch_end(self, logs: EpochLogs) -> None:
        self.mlflow.log_metrics({k: getattr(logs, k) for k in METRICS}, step=logs.epoch)

    def end(self, status: str, result: TrainResult | None) -> None:
        if result is not None and status == RunStatus.FINISHED:
            self.mlflow.log_metrics({"test_loss": result.test_loss,
                                     "test_accuracy": result.test_accuracy})
        self.mlflow.set_tag("cnnbench.status", str(status))
        mlflow_status: dict[str, str] = {RunStatus.FINISHED: "FINISHED",
                                         RunStatus.INTERRUPTED: "KILLED"}
        self.mlflow.end_run(mlflow_status.get(status, "FAILED"))


def make_loggers(names: Sequence[str]) -> list[RunLogger]:
    classes = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    return [classes[n]() for n in names]


def _flat(obj: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``{"training.optimizer_args.learning_rate": 1.0, ...}`` for the dotted ``keys`` (a
    mapping key takes all below)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, Mapping):
            for k, sub in v.items():
                walk(f"{prefix}.{k}", sub)
        else:
            out[prefix] = v

    for key in keys:
        v: Any = obj
        for part in key.split("."):
            v = v.get(part) if isinstance(v, Mapping) else None
        if v is not None:
            walk(key, v)
    return out


def _flat_text(config: Mapping[str, Any]) -> str:
    flat = _flat(config, keys=("model.name", "training", "seed", "dataset.fingerprint",
                               "environment"))
    return "\n".join(f"{k}: {v}" for k, v in flat.items())
