"""Trained weights to other formats: ONNX, TorchScript, or cnnbench's safetensors file.

The exported ONNX and TorchScript models compute what the Keras model did: class
*probabilities* (the spec's final softmax included) from float32 N x 1 x H x W images with
values in [0, 1] (``uint8 / 255``), batch size free.

Every format is built in memory and written whole or not at all (a temporary file beside the
target, then a rename): a full disk leaves the previous file at the target untouched, and
torch's own C++ file writer, which aborts the interpreter when a write fails, is never used.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnbench.atomic import atomic_write_bytes
from cnnbench.errors import CnnbenchError, UsageError
from cnnbench.model.weights import LoadedModel, spec_to_yaml

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
EXTRA = {"onnx": "export"}  # the pip extra a format needs: pip install 'cnnbench[export]'
STORE_MARKER = "index.sqlite"  # a folder holding it (and runs/) is a run store


class ExportError(UsageError, ValueError):
    """An export target that cannot be used: the weights themselves, or inside a run store."""


class MissingExtraError(CnnbenchError, ImportError):
    """A format whose optional packages are not installed (exit 1: the install, not the input)."""


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


def _require(fmt: str, *modules: str) -> None:
    """Import ``modules`` or say, in one line, which extra installs them."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise MissingExtraError(
                f"--format {fmt} needs the '{name}' package, which is not installed: "
                f"pip install 'cnnbench[{EXTRA[fmt]}]'") from e


def onnx_bytes(loaded: LoadedModel, opset: int = 18) -> bytes:
    """ONNX with input ``image`` (N x C x H x W) and output ``probabilities`` (N x classes)."""
    _require("onnx", "onnx", "onnxscript")
    import onnx
    wrapper = Probabilities(loaded.model).eval()
    # torch's ONNX registry warns once per torchvision op it skips ("torchvision is not
    # installed"): four lines that say nothing about this model, which uses no torchvision op.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # The torch.export-based exporter (needs onnxscript); the TorchScript one is
        # deprecated. With no file given it returns the program: nothing is written here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations
            program = torch.onnx.export(
                wrapper, (_example(loaded),), None, input_names=["image"],
                output_names=["probabilities"], opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    assert program is not None  # dynamo=True returns the program
    proto = program.model_proto
    for key, value in (("cnnbench.spec_yaml", spec_to_yaml(loaded.spec)),
                       ("cnnbench.classes", json.dumps(list(loaded.classes), ensure_ascii=False)),
                       ("cnnbench.dataset", loaded.dataset),
                       ("cnnbench.input", "float32 N x C x H x W, uint8 / 255")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def torchscript_bytes(loaded: LoadedModel) -> bytes:
    """A traced TorchScript module (``torch.jit.load``), classes and spec as extra files."""
    wrapper = Probabilities(loaded.model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, _example(loaded))
    buf = io.BytesIO()  # torch.jit.save to a path aborts the process (SIGABRT) on a full disk
    torch.jit.save(traced, buf, _extra_files={
        "classes.json": json.dumps(list(loaded.classes), ensure_ascii=False),
        "spec.yaml": spec_to_yaml(loaded.spec)})
    return buf.getvalue()


def store_root_of(path: str | Path) -> Path | None:
    """The run store that holds ``path`` (any store, not only the default one), or None."""
    target = Path(path).resolve()
    for folder in (target, *target.parents):
        if (folder / STORE_MARKER).exists() and (folder / "runs").is_dir():
            return folder
    return None


def default_out(weights: Path, model_name: str, fmt: str) -> Path:
    """Where ``export`` writes without --out: the current folder, as ``MODEL-RUNID.SUFFIX``
    for a stored run's weights, else as the weights file's name with the format's suffix."""
    if store_root_of(weights) is not None:
        return Path(f"{model_name}-{weights.resolve().parent.name}{SUFFIX[fmt]}")
    return Path(weights.stem + SUFFIX[fmt])


def _inside(root: Path, path: Path) -> bool:
    base, target = root.resolve(), path.resolve()
    return target == base or base in target.parents


def check_out(weights: Path, out: Path, store: Path | None = None) -> None:
    """Refuse a target that is the weights file itself or lies inside a run store (any folder
    holding a store's index, or ``store``, the configured one, even before it exists)."""
    if out.resolve() == weights.resolve() or (out.exists() and os.path.samefile(out, weights)):
        raise ExportError(f"--out {out} is the weights file being exported; exporting over it "
                          f"would destroy the trained weights. Give another --out path.")
    if out.is_dir() or (out.exists() and not out.is_file()):
        # The rename that writes the export would replace a device or FIFO with a file.
        raise ExportError(f"--out {out} is {'a folder' if out.is_dir() else 'not a plain file'}"
                          f"; give the path of the file to write.")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"--out {out}: {blocker} is a file, not a folder; give a path in a "
                          f"folder.")
    if store is None or not _inside(store, out):
        store = store_root_of(out)
    if store is not None:
        raise ExportError(f"--out {out} is inside the run store {store}, whose files only "
                          f"cnnbench writes (it could overwrite a run's weights); give a path "
                          f"outside it")


def export(loaded: LoadedModel, fmt: str, out: str | Path | None = None,
           store: Path | None = None) -> Path:
    """Write ``loaded`` in ``fmt`` to ``out`` (default: :func:`default_out`), whole or not at
    all; refuses the weights file itself and any path inside a run store (``store``: the
    configured one, which is refused even before it holds an index)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}.")
    path = Path(out) if out else default_out(loaded.path, loaded.spec.name, fmt)
    if out is None and path.resolve() == loaded.path.resolve():
        raise ExportError(f"{loaded.path} is already a {fmt} file in the current folder; give "
                          f"--out PATH to copy it elsewhere.")
    check_out(loaded.path, path, store)
    if fmt == "onnx":
        data = onnx_bytes(loaded)
    elif fmt == "torchscript":
        data = torchscript_bytes(loaded)
    else:
        data = loaded.path.read_bytes()  # already the portable format, spec included
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:  # name the target, not the temporary file beside it
        raise OSError(e.errno, e.strerror, str(path)) from e
    return path
