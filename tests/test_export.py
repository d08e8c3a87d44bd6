"""export: ONNX gives cnnbench's probabilities (onnxruntime, 1e-5); TorchScript too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnbench.cli import main
from cnnbench.data.tensors import images_to_tensor
from cnnbench.model.build import build_model, predict_proba
from cnnbench.model.spec import get_spec
from cnnbench.model.weights import load_weights, save_weights

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def cnnbench_proba(model, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([predict_proba(model.eval(), x[i:i + 1000]).numpy()
                               for i in range(0, len(x), 1000)])


@pytest.mark.slow
def test_onnx_matches_cnnbench_on_the_whole_test_set(mnist_weights, mnist, tmp_path):
    out = tmp_path / "model.onnx"
    assert main(["export", str(mnist_weights), "--format", "onnx", "--out", str(out)]) == 0
    x = images_to_tensor(mnist.x_test)  # all 10000
    expected = cnnbench_proba(load_weights(mnist_weights).model, x)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["probabilities"], {"image": x[i:i + 1000].numpy()})[0]
                          for i in range(0, len(x), 1000)])
    assert got.shape == (10000, 10)
    assert np.abs(got - expected).max() < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).all()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["cnnbench.classes"]) == [str(i) for i in range(10)]
    assert "name: CNN_MNIST_1" in meta["cnnbench.spec_yaml"]


@pytest.mark.slow
def test_onnx_and_torchscript_match_with_batchnorm_statistics(mnist, tmp_path):
    # CNN_MNIST_2 has BatchNormalization: its running statistics must be exported, in eval mode.
    spec = get_spec("CNN_MNIST_2")
    torch.manual_seed(1)
    model = build_model(spec)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    weights = save_weights(tmp_path / "bn.safetensors", model, spec, [str(i) for i in range(10)])
    x = images_to_tensor(mnist.x_test[:2000])
    expected = cnnbench_proba(model, x)  # the model in memory, not what the file gives back

    assert main(["export", str(weights), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(tmp_path / "bn.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5

    assert main(["export", str(weights), "--format", "torchscript"]) == 0
    scripted = torch.jit.load(str(tmp_path / "bn.pt"))
    with torch.inference_mode():
        assert np.abs(scripted(x).numpy() - expected).max() < 1e-5

    copy = tmp_path / "copy" / "bn.safetensors"
    assert main(["export", str(weights), "--format", "safetensors", "--out", str(copy)]) == 0
    assert copy.read_bytes() == weights.read_bytes()  # the run's file itself, spec and classes
    assert list(load_weights(copy).classes) == [str(i) for i in range(10)]
