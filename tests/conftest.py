"""Shared fixtures and helpers: the real MNIST through the real source chain (cached per
machine), a private run store per test, `cnnbench` run in this process or as a child process,
and tiny custom datasets and specs for end-to-end runs."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"

# .ci/run sets CI=true after installing every part the suite uses (Chromium, Debian's
# Fashion-MNIST, the test extra with ray, onnxruntime, mlflow). There a skip means a broken
# install, so it fails; elsewhere a skip stays a skip, and `pytest -ra` prints its reason.
STRICT = os.environ.get("CI", "").lower() == "true"

# A shell without job control (`make test &`, some CI runners) starts its jobs with SIGINT
# ignored; Python then installs no KeyboardInterrupt handler and every process the tests spawn
# inherits the ignore, so the Ctrl-C tests would send a signal nobody hears. Handle it as a
# terminal would: spawned processes then start with SIGINT's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _fail_skip_under_ci(report) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true, where .ci/run installs what this test "
                           f"needs, so the install is broken: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # a module-level importorskip
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.fixture(autouse=True)
def _private_run_store(tmp_path_factory, monkeypatch):
    """Every test gets its own run store: nothing lands in ./cnnbench-runs, nothing is reused
    across tests by accident. Subprocesses inherit it through the environment."""
    monkeypatch.setenv("CNNBENCH_STORE", str(tmp_path_factory.mktemp("store")))
    # One fp32 Dense library whatever the machine measures as faster (model/gemm.py), so
    # that no test's numbers depend on the CPU; test_gemm.py tests the measured choice.
    monkeypatch.setenv("CNNBENCH_GEMM", "onednn")


@pytest.fixture(scope="session")
def mnist():
    """The real, checksum-verified MNIST (from the cache, or the package registry once)."""
    from cnnbench.data.datasets import load_dataset
    return load_dataset("mnist", log=lambda m: None)


@pytest.fixture(scope="session")
def mnist_weights(mnist, tmp_path_factory):
    """CNN_MNIST_1 after one epoch on 10000 real MNIST images (batch 64), saved as run does."""
    import torch

    from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
    from cnnbench.model.build import build_model
    from cnnbench.model.spec import get_spec
    from cnnbench.model.weights import save_weights
    from cnnbench.train.engine import TrainConfig, fit

    spec = get_spec("CNN_MNIST_1")
    torch.manual_seed(0)
    model = build_model(spec)
    x, y = images_to_tensor(mnist.x_train[:10000]), labels_to_tensor(mnist.y_train[:10000])
    xt, yt = images_to_tensor(mnist.x_test[:500]), labels_to_tensor(mnist.y_test[:500])
    result = fit(model, x, y, xt, yt, TrainConfig(epochs=1, batch_size=64))
    assert result.test_accuracy > 0.9
    return save_weights(tmp_path_factory.mktemp("w") / "CNN_MNIST_1.safetensors", model, spec,
                        mnist.info.classes, "mnist")


# --- cnnbench itself ---------------------------------------------------------------------

def cnnbench_main(*args: object) -> tuple[int, str, str]:
    """``cnnbench ARGS`` in this process (cli.main): its exit code, stdout and stderr."""
    from cnnbench.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def cnnbench_cli(*args: object, store: Path | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m cnnbench ARGS`` as a user runs it: a child process with this checkout's src
    first on PYTHONPATH. ``env`` replaces os.environ; ``store`` sets $CNNBENCH_STORE. The
    user's $CNNBENCH_DATA_DIR is dropped: a test's data is the one it names."""
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [e.get("PYTHONPATH")])])
    e.pop("CNNBENCH_DATA_DIR", None)
    if store is not None:
        e["CNNBENCH_STORE"] = str(store)
    return subprocess.run([sys.executable, "-m", "cnnbench", *map(str, args)],
                          capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)


# --- tiny data and specs for end-to-end runs -------------------------------------------------

def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` as an idx file of unsigned bytes."""
    return struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def tiny_data(folder: Path, n_train: int = 24, n_test: int = 6) -> Path:
    """A custom dataset of 28x28 noise images, 10 classes, as the four idx files."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        (folder / name).write_bytes(idx_bytes(a))
    return folder


def spec_dict(name: str, **extra) -> dict:
    """The smallest model spec for 28x28 images (Flatten, a 10-way softmax) as a dict."""
    return {"name": name, "input_shape": [28, 28, 1], **extra,
            "layers": [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}


def write_spec(path: Path, name: str, **extra) -> Path:
    path.write_text(yaml.safe_dump(spec_dict(name, **extra), sort_keys=False))
    return path


def tiny_spec(tmp_path: Path, *layers: dict, name: str = "tiny") -> Path:
    """A spec file NAME.yaml of Flatten, ``layers``, a 10-way softmax."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, *layers, {"Dense": {"units": 10, "activation": "softmax"}}]}))
    return path


def run_args(tmp_path: Path, *specs: Path, n_train: int = 24) -> list:
    """``run SPECS`` for one epoch on tiny_data, --out and --store under tmp_path."""
    return ["run", *specs, "--dataset", "custom", "--data-dir",
            tiny_data(tmp_path / "data", n_train), "--epochs", "1", "--out", tmp_path / "out",
            "--store", tmp_path / "store"]


def error_line(err: str, command: str) -> str:
    """The one error line of a refusal; nothing else on stderr says 'error' or 'Traceback'."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnnbench {command}: error: "), lines[0]
    return lines[0]
