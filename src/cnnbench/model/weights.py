"""Trained weights as one safetensors file that also carries the spec and the class names.

The metadata holds everything needed to rebuild the model without the run that made it:
``spec_yaml`` (the model spec), ``classes`` (JSON list), ``dataset`` and ``cnnbench`` version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from cnnbench import __version__
from cnnbench.model.spec import ModelSpec, SpecError, build_spec, parse_yaml


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the CPU
    spec: ModelSpec
    classes: tuple[str, ...]
    dataset: str
    path: Path


def spec_to_yaml(spec: ModelSpec) -> str:
    data = spec.raw or {"name": spec.name, "input_shape": list(spec.input_shape),
                        "layers": [{layer.kind: {}} for layer in spec.layers]}
    return yaml.safe_dump({**data, "name": spec.name}, sort_keys=False)


def weights_bytes(model: nn.Module, spec: ModelSpec, classes: tuple[str, ...] | list[str],
                  dataset: str = "", **extra: str) -> bytes:
    """The model's state (parameters and BatchNorm statistics) with its spec, as safetensors."""
    from safetensors.torch import save
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={
        "format": "cnnbench-weights-1", "spec_yaml": spec_to_yaml(spec),
        "classes": json.dumps(list(classes), ensure_ascii=False), "dataset": dataset,
        "cnnbench": __version__, **extra})


def save_weights(path: str | Path, model: nn.Module, spec: ModelSpec,
                 classes: tuple[str, ...] | list[str], dataset: str = "") -> Path:
    """Write :func:`weights_bytes` to a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(weights_bytes(model, spec, classes, dataset))
    return path


def load_weights(path: str | Path) -> LoadedModel:
    """Rebuild the model from a weights file; refuses a file whose tensors do not fit its spec."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from cnnbench.model.build import build_model
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except FileNotFoundError as e:
        raise SpecError(f"{path}: no such weights file; expected a run id or a .safetensors "
                        f"file written by cnnbench.") from e
    except (OSError, SafetensorError) as e:
        raise SpecError(f"{path}: {_what_it_is(path)}, not a cnnbench weights file; expected a "
                        f".safetensors file written by cnnbench (a run's weights, or `cnnbench "
                        f"export RUN --format safetensors`).") from e
    if "spec_yaml" not in meta:
        raise SpecError(f"{path}: a safetensors file without cnnbench metadata (spec_yaml); "
                        f"it was not written by cnnbench.")
    spec = build_spec(parse_yaml(meta["spec_yaml"], f"{path} (spec_yaml)"), source=str(path))
    # The tensors must be the spec's before the model is built: a spec saying
    # 'units: 2000000000' would otherwise allocate terabytes first. The meta device builds the
    # model's shapes without storage.
    import torch
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or [k for k in expected if got[k] != expected[k]]
        k = wrong[0]
        raise SpecError(f"{path}: the tensors do not fit the spec {spec.name}: {k} is "
                        f"{list(got[k]) if k in got else 'missing'}, the spec needs "
                        f"{list(expected[k]) if k in expected else 'no such tensor'}"
                        f"{f' ({len(wrong)} tensors differ)' if len(wrong) > 1 else ''}.")
    classes = _classes(meta, spec, path)
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise SpecError(f"{path}: the tensors do not fit the spec {spec.name}: "
                        f"{str(e).splitlines()[0]}") from e
    return LoadedModel(model.eval(), spec, classes, meta.get("dataset", ""), path)


# First bytes of the files most often given instead of a weights file.
MAGIC = ((b"PK\x03\x04", "a zip archive (a TorchScript export or a torch.save checkpoint?)"),
         (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
         (b"GIF8", "a GIF image"), (b"\x80\x02", "a pickle (a torch.save checkpoint?)"),
         (b"\x1f\x8b", "a gzip file"), (b"\x93NUMPY", "a numpy .npy array"),
         (b"\x08", "possibly an ONNX model"))


def _what_it_is(path: Path) -> str:
    """What a file that is not safetensors looks like, from its first bytes, for the error."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not head:
        return "an empty file"
    with open(path, "rb") as f:
        if f.read(9)[8:9] == b"{":  # safetensors: an 8-byte length, then a JSON header
            return "a damaged or foreign safetensors file"
    return next((what for magic, what in MAGIC if head.startswith(magic)),
                f"a {path.stat().st_size:,}-byte file of another format")


def _classes(meta: dict[str, str], spec: ModelSpec, path: Path) -> tuple[str, ...]:
    """The class names in the metadata: a JSON list of one string per output unit."""
    if "classes" not in meta:
        return tuple(str(i) for i in range(spec.num_classes))
    try:
        classes = json.loads(meta["classes"])
    except (ValueError, RecursionError) as e:
        raise SpecError(f"{path}: its 'classes' metadata is not JSON ({e}).") from e
    if classes == []:  # written without names: number them, as for a custom dataset
        return tuple(str(i) for i in range(spec.num_classes))
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            and len(classes) == spec.num_classes):
        shown = repr(classes)[:80]
        raise SpecError(f"{path}: its 'classes' metadata must be a list of {spec.num_classes} "
                        f"class names (the model's outputs). Got {shown}.")
    return tuple(classes)
