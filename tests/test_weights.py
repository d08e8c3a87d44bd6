"""Weights files (model/weights.py): the spec and class names in a file's metadata are checked
before a model is built from it; a spec too large for its tensors, or for cnnbench's bounds,
and classes that are not a list of names are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnbench.model.spec import SpecError


def weights_file(path: Path, spec_yaml: str, classes: str = '["a", "b"]', units: int = 2) -> Path:
    import torch
    from safetensors.torch import save_file
    save_file({"1.weight": torch.zeros(units, 784), "1.bias": torch.zeros(units)}, str(path),
              metadata={"format": "cnnbench-weights-1", "spec_yaml": spec_yaml,
                        "classes": classes})
    return path


def two_class_spec(units: int = 2) -> str:
    return yaml.safe_dump({"name": "w", "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": units, "activation": "softmax"}}]})


def test_a_weights_file_whose_spec_is_huge_is_refused_before_building(tmp_path):
    from cnnbench.model.weights import load_weights
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(60_000))
    with pytest.raises(SpecError, match=r"w.safetensors: the tensors do not fit the spec w: "
                                        r"1.weight is \[2, 784\], the spec needs "
                                        r"\[60000, 784\] \(2 tensors differ\)"):
        load_weights(path)
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(2_000_000_000))
    with pytest.raises(SpecError, match=r"the 'units' parameter of Dense must be at most "
                                        r"65_536 \(cnnbench's bound on it\). Got 2000000000"):
        load_weights(path)


@pytest.mark.parametrize("classes, why", [('["a"]', "\\['a'\\]"), ('{"a": 1}', "\\{'a': 1\\}"),
                                          ('[1, 2]', "\\[1, 2\\]"), ("[", "not JSON")])
def test_weights_classes_are_checked(tmp_path, classes, why):
    from cnnbench.model.weights import load_weights
    path = weights_file(tmp_path / "w.safetensors", two_class_spec(), classes)
    with pytest.raises(SpecError, match=f"w.safetensors: its 'classes' metadata .*{why}"):
        load_weights(path)
    ok = load_weights(weights_file(tmp_path / "ok.safetensors", two_class_spec()))
    assert ok.classes == ("a", "b")
