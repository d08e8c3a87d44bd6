"""Optional loggers: TensorBoard event files, MLflow runs, and a clear message when missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnbench.model.spec import build_spec
from cnnbench.store.run_store import RunStore
from cnnbench.study import loggers
from cnnbench.study.loggers import LoggerUnavailable, check_loggers
from cnnbench.study.runner import StudyRunner
from cnnbench.train.engine import TrainConfig

SRC = Path(__file__).resolve().parents[1] / "src"
SPEC = {"name": "TINY_LOG", "input_shape": [28, 28, 1], "layers": [
    {"MaxPooling2D": {}}, {"Conv2D": {"filters": 2, "kernel_size": 3, "activation": "relu"}},
    {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}


def train(store: Path, mnist, names: list[str]):
    runner = StudyRunner(RunStore(store), mnist, TrainConfig(epochs=2, train_limit=256),
                         torch.device("cpu"), log=lambda m: None, loggers=names)
    return runner.run([build_spec(SPEC)])[0]


def test_a_missing_logger_package_is_named_with_how_to_install_it(monkeypatch):
    monkeypatch.setitem(loggers.LOGGERS, "mlflow", ("cnnbench_no_such_module", "pip install x"))
    with pytest.raises(LoggerUnavailable, match="--log mlflow needs the "
                                                "'cnnbench_no_such_module' package.*pip install x"):
        check_loggers(["mlflow"])
    with pytest.raises(LoggerUnavailable, match="unknown logger 'wandb'"):
        check_loggers(["wandb"])


# `cnnbench run` in a Python where `import mlflow` fails, as where it is not installed (the
# test extra installs it, for the test below).
WITHOUT_MLFLOW = "import sys; sys.modules['mlflow'] = None; from cnnbench.cli import main; " \
    "sys.exit(main())"


@pytest.mark.slow
def test_run_with_log_mlflow_fails_before_training_when_mlflow_is_missing(tmp_path):
    p = subprocess.run([sys.executable, "-c", WITHOUT_MLFLOW, "run", "--models", "CNN_MNIST_1",
                        "--epochs", "1", "--train-limit", "128", "--log", "mlflow",
                        "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--log mlflow needs the 'mlflow' package, which is not installed" in p.stderr
    assert "Train on" not in p.stdout


@pytest.mark.slow
def test_tensorboard_logger_writes_each_epoch(tmp_path, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    r = train(tmp_path, mnist, ["tensorboard"])
    logdir = RunStore(tmp_path, create=False).folder(r.run_id) / "tensorboard"
    history = r.record.history
    acc = EventAccumulator(str(logdir / "loss_train")).Reload()
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx(history["loss"], rel=1e-6)
    test = EventAccumulator(str(logdir / "acc_test")).Reload().Scalars("acc")
    assert [e.value for e in test] == pytest.approx(history["val_acc"], rel=1e-6)


@pytest.mark.slow
def test_mlflow_logger_records_params_and_metrics_per_epoch(tmp_path, mnist, monkeypatch):
    import mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 frowns on file stores
    r = train(tmp_path / "store", mnist, ["mlflow"])
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    mlflow.set_experiment("cnnbench")
    (run,) = mlflow.search_runs(output_format="list")
    assert run.data.tags["cnnbench.run_id"] == r.run_id and run.info.status == "FINISHED"
    assert run.data.params["training.optimizer_args.learning_rate"] == "1.0"
    steps = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in steps] == [
        (i + 1, v) for i, v in enumerate(r.record.history["val_acc"])]
