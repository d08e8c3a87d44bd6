"""The memory a model needs to train (model/memory.py): estimated from its activations and
parameters, and a model that would not fit in this machine's memory is refused at planning,
in one line, before any epoch."""

from __future__ import annotations

import pytest
import yaml
from conftest import cnnbench_main, run_args

from cnnbench.model.spec import SpecError


def test_a_model_whose_activations_exceed_ram_is_refused_at_planning(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump({"name": "wide", "input_shape": [28, 28, 1], "layers": [
        {"Conv2D": {"filters": 65_536, "kernel_size": 1}}, {"Conv2D": {"filters": 65_536,
                                                                      "kernel_size": 1}},
        {"GlobalAveragePooling2D": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}))
    code, out, err = cnnbench_main(*run_args(tmp_path, path))
    assert code == 2 and err.splitlines()[-1].startswith("cnnbench run: error: ")
    assert err.count("error") == 1 and "Traceback" not in err
    # Evaluation: 500 images x a Conv2D's 51.4e6 outputs x 2 (in and out) x 4 B = 191.4 GiB
    # (a training batch: 128 x 102.8e6 elements x 12 B = 147.1 GiB); 4.3e9 params x 28 B.
    assert "wide.yaml: wide needs about 303.4 GiB of memory to train (activations of a " \
           "500-image evaluation batch 191.4 GiB; 4,295,819,274 parameters with their " \
           "gradients and optimizer state 112.0 GiB); this machine has " in err
    assert "GiB available. Use a smaller --batch-size or model." in err
    assert "Epoch" not in out


def test_the_memory_estimate_of_the_notebook_models_is_small():
    from cnnbench.model.memory import check_memory, memory_needed
    from cnnbench.model.spec import get_spec
    spec = get_spec("CNN_MNIST_2")
    # 128 x 45,478 activations x 12 B + 1,199,882 params x 28 B
    assert memory_needed(spec, 128) == 128 * 12 * 45_478 + 28 * spec.params
    check_memory([spec], 128, available=1 << 30)
    with pytest.raises(SpecError, match=r"CNN_MNIST_2 needs about 0.2 GiB .* this machine has "
                                        r"0.1 GiB available"):
        check_memory([spec], 128, available=100 << 20)
