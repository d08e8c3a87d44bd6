"""Trained weights to other formats: ONNX, TorchScript, or cnnbench's safetensors file.

The exported ONNX and TorchScript models compute what the Keras model did: class
*probabilities* (the spec's final softmax included) from float32 N x 1 x H x W images with
values in [0, 1] (``uint8 / 255``), batch size free.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnbench.model.weights import LoadedModel, spec_to_yaml

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}


class Probabilities(nn.Module):
    """A cnnbench model (logits) followed by the softmax it folds into its loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)


def _example(loaded: LoadedModel) -> torch.Tensor:
    h, w, c = loaded.spec.input_shape
    return torch.rand(2, c, h, w)


def export_onnx(loaded: LoadedModel, path: Path, opset: int = 18) -> Path:
    """ONNX with input ``image`` (N x C x H x W) and output ``probabilities`` (N x classes)."""
    import onnx
    wrapper = Probabilities(loaded.model).eval()
    # The torch.export-based exporter (needs onnxscript); the TorchScript one is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
        torch.onnx.export(wrapper, (_example(loaded),), str(path), input_names=["image"],
                          output_names=["probabilities"], opset_version=opset,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          external_data=False, verbose=False)
    proto = onnx.load(str(path))
    for key, value in (("cnnbench.spec_yaml", spec_to_yaml(loaded.spec)),
                       ("cnnbench.classes", json.dumps(list(loaded.classes), ensure_ascii=False)),
                       ("cnnbench.dataset", loaded.dataset),
                       ("cnnbench.input", "float32 N x C x H x W, uint8 / 255")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(loaded: LoadedModel, path: Path) -> Path:
    """A traced TorchScript module (``torch.jit.load``), classes and spec as extra files."""
    wrapper = Probabilities(loaded.model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, _example(loaded))
    torch.jit.save(traced, str(path), _extra_files={
        "classes.json": json.dumps(list(loaded.classes), ensure_ascii=False),
        "spec.yaml": spec_to_yaml(loaded.spec)})
    return path


def export(loaded: LoadedModel, fmt: str, out: str | Path | None = None) -> Path:
    """Write ``loaded`` in ``fmt`` to ``out`` (default: beside the weights, new suffix)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}.")
    path = Path(out) if out else loaded.path.with_suffix(SUFFIX[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(loaded, path)
    if fmt == "torchscript":
        return export_torchscript(loaded, path)
    if path.resolve() != loaded.path.resolve():
        shutil.copyfile(loaded.path, path)  # already the portable format, spec included
    return path
