"""spec.py: parsing, validation messages, shape inference, parameter counts."""

from __future__ import annotations

import pytest
from conftest import spec_dict

from cnnbench.model.layers import KINDS
from cnnbench.model.spec import (
    SpecError,
    build_spec,
    check_classes,
    get_spec,
    list_models,
    load_spec,
)

SOFTMAX_10 = {"Dense": {"units": 10, "activation": "softmax"}}

# Keras' model.summary() totals (BatchNorm's moving mean/variance counted, non-trainable).
KERAS_TOTALS = {
    "CNN_MNIST_1": (3_274_634, 0),
    "CNN_MNIST_2": (5_367_950, 256),
    "CNN_MNIST_3": (5_367_566, 0),
    "CNN_MNIST_4": (5_368_078, 256),
}


def spec_of(*layers, input_shape=(28, 28, 1)):
    return build_spec({"name": "t", "input_shape": list(input_shape), "layers": list(layers)},
                      source="t.yaml")


def test_builtin_models_are_the_four_seed_models():
    assert list_models() == sorted(KERAS_TOTALS)
    assert list_models("CNN_MNIST_[12]") == ["CNN_MNIST_1", "CNN_MNIST_2"]


@pytest.mark.parametrize("name", sorted(KERAS_TOTALS))
def test_parameter_totals_equal_keras(name):
    total, non_trainable = KERAS_TOTALS[name]
    spec = get_spec(name)
    assert spec.params == total
    assert spec.non_trainable_params == non_trainable
    assert spec.trainable_params == total - non_trainable


def test_cnn_mnist_1_shapes_follow_the_notebook():
    shapes = [layer.output_shape for layer in get_spec("CNN_MNIST_1").layers]
    assert shapes == [(28, 28, 32), (14, 14, 32), (14, 14, 64), (7, 7, 64), (3136,),
                      (1024,), (1024,), (10,)]


def test_cnn_mnist_2_shapes_and_per_layer_params():
    spec = get_spec("CNN_MNIST_2")
    got = [(layer.kind, layer.output_shape, layer.params) for layer in spec.layers]
    assert got == [
        ("Conv2D", (24, 24, 16), 5 * 5 * 1 * 16 + 16),
        ("Conv2D", (20, 20, 32), 5 * 5 * 16 * 32 + 32),
        ("MaxPooling2D", (10, 10, 32), 0),
        ("Conv2D", (8, 8, 64), 3 * 3 * 32 * 64 + 64),
        ("Conv2D", (6, 6, 128), 3 * 3 * 64 * 128),  # use_bias: false
        ("BatchNormalization", (6, 6, 128), 4 * 128),
        ("Flatten", (4608,), 0),
        ("Dense", (1024,), 4608 * 1024 + 1024),
        ("Dense", (524,), 1024 * 524 + 524),
        ("Dense", (10,), 524 * 10 + 10),
    ]
    assert spec.uses_batchnorm and spec.dropout_rates == []
    assert get_spec("CNN_MNIST_4").dropout_rates == [0.2]


def test_macs_count_every_multiply_accumulate():
    spec = spec_of({"Conv2D": {"filters": 4, "kernel_size": 3}}, "Flatten", SOFTMAX_10,
                   input_shape=(6, 6, 2))
    conv_macs = 4 * 4 * (3 * 3 * 2 * 4)  # 4x4 outputs, each a 3x3x2 dot product, 4 filters
    assert spec.macs == conv_macs + 64 * 10
    assert spec.train_flops_per_image == 6 * spec.macs


@pytest.mark.parametrize("layer, input_shape, expected", [
    ({"Conv2D": {"filters": 3, "kernel_size": 5}}, (28, 28, 1), (24, 24, 3)),
    ({"Conv2D": {"filters": 3, "kernel_size": 5, "padding": "same"}}, (28, 28, 1), (28, 28, 3)),
    ({"Conv2D": {"filters": 3, "kernel_size": 3, "strides": 2}}, (28, 28, 1), (13, 13, 3)),
    ({"Conv2D": {"filters": 3, "kernel_size": 4, "strides": 2, "padding": "same"}},
     (7, 7, 1), (4, 4, 3)),
    ({"Conv2D": {"filters": 3, "kernel_size": [3, 1], "strides": [2, 1]}}, (9, 5, 2), (4, 5, 3)),
    ({"MaxPooling2D": {}}, (7, 7, 4), (3, 3, 4)),  # floor, as Keras
    ({"MaxPooling2D": {"padding": "same"}}, (7, 7, 4), (4, 4, 4)),
    ({"MaxPooling2D": {"pool_size": 3, "strides": 1}}, (7, 7, 4), (5, 5, 4)),
    ({"AveragePooling2D": {"pool_size": 3, "strides": 2, "padding": "same"}},
     (7, 7, 4), (4, 4, 4)),
    ({"GlobalAveragePooling2D": {}}, (7, 5, 4), (4,)),
    ("Flatten", (7, 5, 4), (140,)),
    ({"BatchNormalization": {}}, (7, 5, 4), (7, 5, 4)),
])
def test_shape_inference(layer, input_shape, expected):
    tail = [] if len(expected) == 1 else ["Flatten"]
    spec = spec_of(layer, *tail, SOFTMAX_10, input_shape=input_shape)
    assert spec.layers[0].input_shape == input_shape
    assert spec.layers[0].output_shape == expected


def test_pooling_strides_default_to_pool_size():
    spec = spec_of({"MaxPooling2D": {"pool_size": 3}}, "Flatten", SOFTMAX_10)
    assert spec.layers[0].args["strides"] == (3, 3)
    assert spec.layers[0].output_shape == (9, 9, 1)


def test_layer_written_as_bare_name_or_with_null_arguments():
    spec = spec_of("Flatten", {"Dropout": {"rate": 0.5}}, SOFTMAX_10)
    assert [layer.kind for layer in spec.layers] == ["Flatten", "Dropout", "Dense"]
    spec = spec_of({"Flatten": None}, SOFTMAX_10)
    assert spec.layers[0].output_shape == (784,)


def test_unknown_layer_lists_the_known_ones():
    with pytest.raises(SpecError) as e:
        spec_of("Flatten", {"Dense2": {"units": 10}})
    msg = str(e.value)
    assert "t.yaml: layer 2" in msg and "unknown layer 'Dense2'" in msg
    assert "Did you mean Dense" in msg
    for kind in KINDS:
        assert kind in msg


def test_unknown_argument_names_the_layer_and_its_arguments():
    with pytest.raises(SpecError, match=r"layer 1 \(Conv2D\).*no argument 'filter'\. "
                                        r"Did you mean 'filters'\? Its arguments: filters, "
                                        r"kernel_size"):
        spec_of({"Conv2D": {"filter": 8, "kernel_size": 3}}, "Flatten", SOFTMAX_10)


@pytest.mark.parametrize("layer, fragment", [
    ({"Conv2D": {"filters": "8", "kernel_size": 3}},
     "t.yaml: layer 1 (Conv2D): the 'filters' parameter of Conv2D must be a positive integer. "
     "Got '8' instead."),
    ({"Conv2D": {"filters": 8, "kernel_size": [3, 3, 3]}},
     "the 'kernel_size' parameter of Conv2D must be a positive integer or a list of two. "
     "Got [3, 3, 3] instead."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "full"}},
     "the 'padding' parameter of Conv2D must be one of 'valid', 'same'. Got 'full' instead."),
    ({"Conv2D": {"filters": True, "kernel_size": 3}}, "Got True instead."),
    ({"Dropout": {"rate": 1.5}},
     "the 'rate' parameter of Dropout must be a number in [0, 1). Got 1.5 instead."),
    ({"Conv2D": {"kernel_size": 3}}, "Conv2D needs the argument 'filters'"),
])
def test_wrong_argument_value_says_what_was_expected_and_got(layer, fragment):
    with pytest.raises(SpecError) as e:
        spec_of(layer, "Flatten", SOFTMAX_10)
    assert "t.yaml: layer 1" in str(e.value)
    assert fragment in str(e.value)


def test_shape_collapse_names_the_layer_and_the_sizes():
    layers = [{"Conv2D": {"filters": 8, "kernel_size": 5}}, {"MaxPooling2D": {}},
              {"Conv2D": {"filters": 8, "kernel_size": 5}}, {"MaxPooling2D": {}},
              {"Conv2D": {"filters": 8, "kernel_size": 3}},
              {"Conv2D": {"filters": 8, "kernel_size": 3}}, "Flatten", SOFTMAX_10]
    with pytest.raises(SpecError) as e:
        spec_of(*layers)
    assert str(e.value) == ("t.yaml: layer 6 (Conv2D 8 3x3 valid linear) gets a 2x2 input; "
                            "its output would be 0x0.")


def test_pool_larger_than_input_collapses():
    with pytest.raises(SpecError, match=r"layer 1 \(MaxPooling2D 40x40 valid\) gets a 28x28 "
                                        r"input; its output would be 0x0"):
        spec_of({"MaxPooling2D": {"pool_size": 40}}, "Flatten", SOFTMAX_10)


def test_dense_on_an_image_asks_for_flatten():
    with pytest.raises(SpecError, match=r"layer 1 \(Dense 10 softmax\) gets a 28x28x1 input; "
                                        r"add Flatten"):
        spec_of(SOFTMAX_10)


def test_conv_after_flatten_is_refused():
    with pytest.raises(SpecError, match=r"layer 2 .*needs an image input"):
        spec_of("Flatten", {"Conv2D": {"filters": 8, "kernel_size": 3}}, SOFTMAX_10)


def test_last_layer_must_be_softmax():
    with pytest.raises(SpecError, match=r"layer 2 \(Dense 10 relu\) must have activation "
                                        r"'softmax'"):
        spec_of("Flatten", {"Dense": {"units": 10, "activation": "relu"}})


def test_model_must_end_in_a_vector():
    with pytest.raises(SpecError, match="must end in a vector of class scores"):
        spec_of({"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "softmax"}})


def test_spec_level_fields_are_validated():
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['layer'\]"):
        build_spec({"name": "t", "layer": []}, source="t.yaml")
    with pytest.raises(SpecError, match=r"'input_shape' must be \[height, width, channels\]"):
        build_spec({"name": "t", "input_shape": [28, 28], "layers": [SOFTMAX_10]})
    with pytest.raises(SpecError, match="'layers' must be a non-empty list"):
        build_spec({"name": "t", "layers": []})


def test_unknown_model_name_lists_known_and_close_matches():
    with pytest.raises(SpecError) as e:
        get_spec("CNN_MNST_1")
    msg = str(e.value)
    assert "unknown model 'CNN_MNST_1'" in msg
    assert "Did you mean CNN_MNIST_1" in msg
    assert "Known models: CNN_MNIST_1, CNN_MNIST_2, CNN_MNIST_3, CNN_MNIST_4." in msg
    # A lowercase typo still finds its model.
    with pytest.raises(SpecError, match="Did you mean CNN_MNIST_1"):
        get_spec("cnn_mnist1")


def test_spec_file_by_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("input_shape: [8, 8, 1]\nlayers:\n  - Flatten\n"
                    "  - Dense: {units: 3, activation: softmax}\n")
    spec = get_spec(str(path))
    assert spec.name == "tiny"  # the file's stem when the spec has no name
    assert spec.params == 64 * 3 + 3
    assert load_spec(path) == spec


def test_spec_file_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read the model spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml:2:1: not valid YAML"):
        load_spec(bad)


def test_check_classes_compares_the_last_layer_with_the_dataset():
    spec = get_spec("CNN_MNIST_1")
    check_classes(spec, 10)
    with pytest.raises(SpecError, match=r"layer 8 \(Dense 10 softmax\) has 10 units but the "
                                        r"dataset has 26 classes"):
        check_classes(spec, 26)


def test_shorthand_is_the_notebooks():
    assert get_spec("CNN_MNIST_1").shorthand() == (
        "Conv2D(32,5x5) + MaxPool + Conv2D(64,5x5) + MaxPool + Flatten + Dense(1024) + "
        "Dropout(0.5) + Dense(10)")


BIG = 10**400  # past a float (1.8e308); YAML reads 1 followed by 400 zeros as this int


@pytest.mark.parametrize("layer, says", [
    ({"Conv2D": {"filters": 10**30, "kernel_size": 3}},
     "the 'filters' parameter of Conv2D must be at most 65_536 (cnnbench's bound on it). "
     "Got 1000000000000000000000000000000 instead."),
    ({"Conv2D": {"filters": 8, "kernel_size": [3, 2_000]}},
     "the 'kernel_size' parameter of Conv2D must be at most 1_024"),
    ({"MaxPooling2D": {"pool_size": 2, "strides": 5_000}},
     "the 'strides' parameter of MaxPooling2D must be at most 1_024"),
    ({"ZeroPadding2D": {"padding": [[0, 10**18], [0, 0]]}},
     "the 'padding' parameter of ZeroPadding2D must be at most 4_096"),
    ({"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2**40}},
     "the 'depth_multiplier' parameter of DepthwiseConv2D must be at most 1_024"),
    ({"ReLU": {"threshold": BIG}},
     "the 'threshold' parameter of ReLU must be a finite number. Got an integer of about 401 "
     "digits (beyond a float's 1.8e308) instead."),
    ({"ReLU": {"max_value": BIG}}, "the 'max_value' parameter of ReLU must be null or a "
                                   "number >= 0. Got an integer of about 401 digits"),
    ({"LeakyReLU": {"negative_slope": float("inf")}}, "must be a number >= 0. Got inf"),
    ({"LayerNormalization": {"epsilon": -BIG}}, "Got an integer of about 401 digits"),
])
def test_numbers_past_a_bound_or_a_float_are_one_line_naming_the_bound(layer, says):
    with pytest.raises(SpecError) as e:
        spec_of(layer, "Flatten", SOFTMAX_10)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_dense_units_are_bounded_like_filters():
    with pytest.raises(SpecError, match="'units' parameter of Dense must be at most 65_536"):
        spec_of("Flatten", {"Dense": {"units": 65_537}}, SOFTMAX_10)
    assert spec_of("Flatten", {"Dense": {"units": 65_536}}, SOFTMAX_10).layers[1].args[
        "units"] == 65_536


@pytest.mark.parametrize("shape", [[10**6, 28, 1], [28, 28, 70_000], [28, BIG, 1]])
def test_an_input_shape_past_its_bounds_is_refused_with_them(shape):
    with pytest.raises(SpecError) as e:
        spec_of("Flatten", SOFTMAX_10, input_shape=shape)
    assert "'input_shape' must be [height, width, channels] of positive integers (height and " \
           "width at most 16_384, channels at most 65_536)" in str(e.value)


def test_a_spec_has_at_most_a_thousand_layers():
    layers = [{"Dropout": {"rate": 0.1}}] * 999 + ["Flatten", SOFTMAX_10]
    with pytest.raises(SpecError, match="'layers' has 1,001 layers; a spec has at most 1,000"):
        spec_of(*layers)
    assert len(spec_of(*layers[1:]).layers) == 1_000


def test_a_description_is_a_bounded_string():
    with pytest.raises(SpecError, match="'description' must be a string of at most 10,000"):
        build_spec(spec_dict("d", description={"nested": [1, 2]}), source="d.yaml")
    with pytest.raises(SpecError, match="Got 10,001 characters"):
        build_spec(spec_dict("d", description="x" * 10_001), source="d.yaml")
    assert build_spec(spec_dict("d", description="a short note")).name == "d"
