"""Malformed model spec files: every error names the file, the layer and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cnnbench_main

from cnnbench.model.spec import SpecError, check_classes, check_input_shape, get_spec, load_spec

GOOD = """\
name: small
layers:
  - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
  - MaxPooling2D
  - Flatten
  - Dense: {units: 10, activation: softmax}
"""


def write(tmp_path: Path, text: str, name: str = "my_model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(path)
    return str(e.value)


def test_good_spec_loads_with_its_parameter_count(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    # conv 3*3*1*8 + 8 = 80; 13*13*8 = 1352 inputs to Dense: 1352*10 + 10 = 13530
    assert spec.params == 80 + 13530
    assert spec.source.endswith("my_model.yaml")


def test_bad_yaml_names_file_line_and_where_the_construct_started(tmp_path):
    path = write(tmp_path, "name: x\nlayers:\n  - Conv2D: {filters: 8, kernel_size: 3\n"
                           "  - Flatten\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:5:1: not valid YAML")
    assert "flow mapping, which starts on line 3" in msg


def test_duplicate_argument_is_an_error_not_silently_the_last(tmp_path):
    path = write(tmp_path, "layers:\n  - Conv2D: {filters: 32, kernel_size: 3, filters: 8}\n")
    msg = error_of(path)
    assert f"{path}:2:" in msg and "'filters' appears twice" in msg


def test_unknown_layer_suggests_and_lists_the_known_ones(tmp_path):
    path = write(tmp_path, GOOD.replace("MaxPooling2D", "MaxPool2D"))
    msg = error_of(path)
    assert f"{path}: layer 2 (MaxPool2D): unknown layer 'MaxPool2D'" in msg
    assert "Did you mean MaxPooling2D?" in msg
    assert "Known layers: Conv2D, MaxPooling2D, AveragePooling2D" in msg


def test_unknown_argument_lists_the_layer_arguments(tmp_path):
    path = write(tmp_path, GOOD.replace("filters: 8", "filter: 8"))
    msg = error_of(path)
    assert "layer 1 (Conv2D): Conv2D has no argument 'filter'" in msg
    assert "Its arguments: filters, kernel_size, strides, padding, activation, use_bias" in msg


@pytest.mark.parametrize("bad, expected", [
    ('filters: "8"', "the 'filters' parameter of Conv2D must be a positive integer. "
                    "Got '8' instead."),
    ("filters: 8.0", "the 'filters' parameter of Conv2D must be a positive integer. "
                     "Got 8.0 instead."),
    ("filters: true", "the 'filters' parameter of Conv2D must be a positive integer. "
                      "Got True instead."),
    ("filters: 8, padding: full",
     "the 'padding' parameter of Conv2D must be one of 'valid', 'same'. Got 'full' instead."),
])
def test_wrong_argument_type_says_what_was_expected_and_got(tmp_path, bad, expected):
    msg = error_of(write(tmp_path, GOOD.replace("filters: 8", bad)))
    assert "layer 1 (Conv2D): " + expected in msg


def test_shape_collapse_names_the_layer_its_input_and_its_output(tmp_path):
    text = """\
layers:
  - Conv2D: {filters: 8, kernel_size: 5}
  - MaxPooling2D
  - Conv2D: {filters: 8, kernel_size: 5}
  - MaxPooling2D
  - Conv2D: {filters: 8, kernel_size: 3}
  - Conv2D: {filters: 8, kernel_size: 3}
  - Flatten
  - Dense: {units: 10, activation: softmax}
"""
    path = write(tmp_path, text)
    # 28 -5-> 24 -pool-> 12 -5-> 8 -pool-> 4 -3-> 2 -3-> 0
    assert error_of(path) == (f"{path}: layer 6 (Conv2D 8 3x3 valid linear) gets a 2x2 input; "
                              f"its output would be 0x0.")


def test_dense_on_an_image_asks_for_flatten(tmp_path):
    path = write(tmp_path, GOOD.replace("  - Flatten\n", ""))
    assert "layer 3 (Dense 10 softmax) gets a 13x13x8 input; add Flatten" in error_of(path)


def test_misindented_arguments_are_explained(tmp_path):
    path = write(tmp_path, "layers:\n  - Conv2D:\n    filters: 8\n    kernel_size: 3\n")
    msg = error_of(path)
    assert "layer 1 (Conv2D): its arguments (filters, kernel_size) are not indented" in msg


def test_last_layer_must_be_softmax(tmp_path):
    path = write(tmp_path, GOOD.replace("activation: softmax", "activation: relu"))
    assert "layer 4 (Dense 10 relu) must have activation 'softmax'" in error_of(path)


def test_wrong_class_count_against_the_dataset(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    with pytest.raises(SpecError) as e:
        check_classes(spec, 26)
    assert str(e.value) == (f"{spec.source}: layer 4 (Dense 10 softmax) has 10 units but the "
                            f"dataset has 26 classes; set its units to 26.")
    check_classes(spec, 10)  # no error


def test_input_shape_must_match_the_images(tmp_path):
    spec = load_spec(write(tmp_path, "input_shape: [32, 32, 3]\n" + GOOD))
    with pytest.raises(SpecError, match=r"input_shape \[32, 32, 3\] does not match the "
                                        r"dataset's images, \[28, 28, 1\]"):
        check_input_shape(spec, (28, 28, 1))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml: cannot read the model spec"):
        get_spec(str(tmp_path / "nope.yaml"))


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-1 as a string; the spec loader reads it as YAML 1.2 does.
    spec = load_spec(write(tmp_path, GOOD.replace("  - Flatten\n",
                                                  "  - Flatten\n  - Dropout: {rate: 5e-1}\n")))
    assert spec.dropout_rates == [0.5]


def test_a_nul_byte_in_a_spec_is_one_line(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_text("name: x\x00\nlayers: []\n")
    code, out, err = cnnbench_main("summary", path)
    assert code == 2
    assert err == (f"cnnbench summary: error: {path}: not valid YAML: unacceptable character "
                   f"#x0000: special characters are not allowed in \"<unicode string>\", "
                   f"position 7\n")
