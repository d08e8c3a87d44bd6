"""layers.py: the layer registry agrees with the torch builders, and the new kinds compute,
count and import as Keras' layers do."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnbench.cli import main
from cnnbench.constraints import REQUIRED
from cnnbench.model.build import (
    BUILDERS,
    build_model,
    clipped_categorical_crossentropy,
    init_,
    keras_init_,
    layer_modules,
)
from cnnbench.model.keras_import import import_keras
from cnnbench.model.layers import KINDS, keras_layer_names, keras_snake_case
from cnnbench.model.spec import SpecError, build_layer, build_spec, load_spec
from cnnbench.report.table import model_summary
from cnnbench.store.run_store import resolved_spec

SOFTMAX_3 = {"Dense": {"units": 3, "activation": "softmax"}}

# Every kind, each with a couple of argument settings: (arguments, input shape).
CASES: dict[str, list[tuple[dict, tuple[int, ...]]]] = {
    "Conv2D": [
        ({"filters": 4, "kernel_size": 3}, (9, 8, 2)),
        ({"filters": 6, "kernel_size": [3, 2], "strides": 2, "padding": "same",
          "use_bias": False}, (9, 8, 2)),
        ({"filters": 6, "kernel_size": 3, "dilation_rate": 2, "padding": "same"}, (9, 8, 2)),
        ({"filters": 6, "kernel_size": 3, "groups": 3, "dilation_rate": [2, 1]}, (9, 8, 3)),
    ],
    "MaxPooling2D": [({}, (7, 7, 2)), ({"pool_size": 3, "strides": 2, "padding": "same"},
                                       (8, 7, 2))],
    "AveragePooling2D": [({}, (7, 7, 2)), ({"pool_size": [3, 2], "padding": "same"},
                                           (7, 5, 2))],
    "BatchNormalization": [({}, (5, 4, 3)), ({}, (6,))],
    "Dropout": [({"rate": 0.5}, (5, 4, 3)), ({"rate": 0.0}, (6,))],
    "Flatten": [({}, (5, 4, 3)), ({}, (1, 1, 7))],
    "GlobalAveragePooling2D": [({}, (5, 4, 3)), ({}, (1, 1, 2))],
    "Dense": [({"units": 5}, (6,)), ({"units": 2, "use_bias": False, "activation": "tanh"},
                                     (6,))],
    "Activation": [({"activation": "softplus"}, (5, 4, 3)), ({"activation": "softsign"}, (6,))],
    "DepthwiseConv2D": [
        ({"kernel_size": 3}, (8, 7, 3)),
        ({"kernel_size": [2, 3], "strides": 2, "padding": "same", "depth_multiplier": 3,
          "use_bias": False}, (8, 7, 3)),
    ],
    "SeparableConv2D": [
        ({"filters": 5, "kernel_size": 3}, (8, 7, 3)),
        ({"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same",
          "depth_multiplier": 2, "use_bias": False}, (8, 7, 3)),
    ],
    "GlobalMaxPooling2D": [({}, (5, 4, 3)), ({}, (2, 2, 1))],
    "ZeroPadding2D": [({}, (5, 4, 3)), ({"padding": [[1, 2], [0, 3]]}, (5, 4, 3)),
                      ({"padding": [2, 0]}, (5, 4, 3))],
    "SpatialDropout2D": [({"rate": 0.3}, (5, 4, 3)), ({"rate": 0.0}, (2, 2, 1))],
    "LayerNormalization": [({}, (5, 4, 3)), ({"center": False, "epsilon": 0.01}, (6,)),
                           ({"scale": False}, (3, 3, 2))],
    "ReLU": [({}, (5, 4, 3)), ({"max_value": 6, "negative_slope": 0.1, "threshold": 0.5},
                               (6,))],
    "LeakyReLU": [({}, (5, 4, 3)), ({"negative_slope": 0.01}, (6,))],
    "ELU": [({}, (5, 4, 3)), ({"alpha": 0.5}, (6,))],
}


def spec_of(*layers, input_shape=(28, 28, 1)):
    return build_spec({"name": "t", "input_shape": list(input_shape), "layers": list(layers)},
                      source="t.yaml")


def counts(modules: list[nn.Module]) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts them: BN moving mean/var are non-trainable."""
    holder = nn.Sequential(*modules)
    trainable = sum(p.numel() for p in holder.parameters() if p.requires_grad)
    frozen = sum(b.numel() for name, b in holder.named_buffers()
                 if name.endswith(("running_mean", "running_var")))
    return trainable, frozen


# --- the registry walk ------------------------------------------------------------------------

def test_every_kind_has_a_builder_a_keras_name_an_argument_order_and_test_cases():
    assert set(BUILDERS) == set(KINDS)
    assert set(CASES) == set(KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.keras_name == keras_snake_case(name) and kind.keras_name.islower()
        # every argument has a place, or is read by keyword only
        assert set(kind.args) <= set(kind.positional) | set(kind.keyword_only), name
        assert not set(kind.keyword_only) & set(kind.positional), name
        assert len(set(kind.positional)) == len(kind.positional), name
        assert set(kind.added) <= set(kind.args)
        for arg, (constraint, default) in kind.args.items():
            assert default is REQUIRED or constraint(default), (name, arg, default)
        assert len(CASES[name]) >= 2, name


@pytest.mark.parametrize("kind, args, shape", [
    (kind, args, shape) for kind, cases in CASES.items() for args, shape in cases])
def test_inferred_shape_and_parameters_agree_with_the_torch_module(kind, args, shape):
    layer = build_layer(1, kind, args, shape, "t.yaml: layer 1")
    torch.manual_seed(0)
    modules = layer_modules(layer)
    body = nn.Sequential(*modules)
    keras_init_(body)
    torch_shape = (2, shape[2], shape[0], shape[1]) if len(shape) == 3 else (2, *shape)
    x = torch.randn(*torch_shape)
    for mode in (body.train, body.eval):
        mode()
        out = body(x)
        if len(layer.output_shape) == 3:
            oh, ow, oc = layer.output_shape
            assert tuple(out.shape) == (2, oc, oh, ow), layer.label()
        else:
            assert tuple(out.shape) == (2, *layer.output_shape), layer.label()
    assert counts(modules) == (layer.trainable_params, layer.non_trainable_params)


def test_keras_layer_names_follow_keras_to_snake_case():
    kinds = ["Conv2D", "Conv2D", "ReLU", "LeakyReLU", "ELU", "SeparableConv2D",
             "DepthwiseConv2D", "GlobalMaxPooling2D", "ZeroPadding2D", "LayerNormalization",
             "SpatialDropout2D", "Dense", "Dense"]
    assert keras_layer_names(kinds) == [
        "conv2d", "conv2d_1", "re_lu", "leaky_re_lu", "elu", "separable_conv2d",
        "depthwise_conv2d", "global_max_pooling2d", "zero_padding2d", "layer_normalization",
        "spatial_dropout2d", "dense", "dense_1"]


# --- Keras' parameter counts, from its documented formulas ----------------------------------

@pytest.mark.parametrize("layer, shape, out, params", [
    # SeparableConv2D: k*k*cin*dm + cin*dm*filters + filters
    ({"SeparableConv2D": {"filters": 16, "kernel_size": 3, "depth_multiplier": 2}},
     (10, 10, 4), (8, 8, 16), 3 * 3 * 4 * 2 + 4 * 2 * 16 + 16),  # 216
    ({"SeparableConv2D": {"filters": 16, "kernel_size": 3, "use_bias": False}},
     (10, 10, 4), (8, 8, 16), 3 * 3 * 4 + 4 * 16),  # 100
    # DepthwiseConv2D: k*k*cin*dm + cin*dm
    ({"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2}},
     (10, 10, 4), (8, 8, 8), 3 * 3 * 4 * 2 + 4 * 2),  # 80
    ({"DepthwiseConv2D": {"kernel_size": 5, "padding": "same", "strides": 2}},
     (10, 10, 4), (5, 5, 4), 5 * 5 * 4 + 4),  # 104
    # grouped Conv2D: k*k*(cin/groups)*filters + filters
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "groups": 2}},
     (10, 10, 4), (8, 8, 8), 3 * 3 * 2 * 8 + 8),  # 152
    # dilation: the same weights, a wider reach: 10 - (3-1)*2 = 6
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "dilation_rate": 2}},
     (10, 10, 4), (6, 6, 8), 3 * 3 * 4 * 8 + 8),  # 296
    # LayerNormalization over the channels: gamma and beta, C each
    ({"LayerNormalization": {}}, (6, 6, 5), (6, 6, 5), 2 * 5),
    ({"LayerNormalization": {"center": False}}, (6, 6, 5), (6, 6, 5), 5),
    ({"GlobalMaxPooling2D": {}}, (6, 6, 5), (5,), 0),
    ({"ZeroPadding2D": {"padding": [[1, 2], [3, 4]]}}, (6, 6, 5), (9, 13, 5), 0),
    ({"SpatialDropout2D": {"rate": 0.5}}, (6, 6, 5), (6, 6, 5), 0),
    ({"ReLU": {"max_value": 6}}, (6, 6, 5), (6, 6, 5), 0),
    ({"LeakyReLU": {}}, (6, 6, 5), (6, 6, 5), 0),
    ({"ELU": {}}, (6, 6, 5), (6, 6, 5), 0),
])
def test_parameter_counts_equal_keras(layer, shape, out, params):
    tail = ["Flatten"] if len(out) == 3 else []
    spec = spec_of(layer, *tail, SOFTMAX_3, input_shape=shape)
    assert spec.layers[0].output_shape == out
    assert spec.layers[0].params == spec.layers[0].trainable_params == params
    model = build_model(spec)
    head = math.prod(out) * 3 + 3
    assert sum(p.numel() for p in model.parameters()) == params + head


def test_separable_and_depthwise_macs():
    spec = spec_of({"SeparableConv2D": {"filters": 16, "kernel_size": 3, "depth_multiplier": 2}},
                   "Flatten", SOFTMAX_3, input_shape=(10, 10, 4))
    assert spec.layers[0].macs == 8 * 8 * (3 * 3 * 4 * 2 + 4 * 2 * 16)
    spec = spec_of({"Conv2D": {"filters": 8, "kernel_size": 3, "groups": 2}}, "Flatten",
                   SOFTMAX_3, input_shape=(10, 10, 4))
    assert spec.layers[0].macs == 8 * 8 * 3 * 3 * 2 * 8


# --- arguments added to an existing kind leave existing specs (and run ids) as they were -----

def test_added_arguments_at_their_default_are_not_recorded():
    plain = spec_of({"Conv2D": {"filters": 4, "kernel_size": 3}}, "Flatten",
                    {"Dense": {"units": 3, "activation": "softmax"}})
    spelled = spec_of({"Conv2D": {"filters": 4, "kernel_size": 3, "dilation_rate": [1, 1],
                                  "groups": 1, "kernel_initializer": "glorot_uniform",
                                  "bias_initializer": "zeros"}}, "Flatten",
                      {"Dense": {"units": 3, "activation": "softmax",
                                 "kernel_initializer": "glorot_uniform"}})
    assert resolved_spec(plain) == resolved_spec(spelled)
    assert list(plain.layers[0].args) == ["filters", "kernel_size", "strides", "padding",
                                          "activation", "use_bias"]
    assert plain.layers[0].all_args["dilation_rate"] == (1, 1)
    changed = spec_of({"Conv2D": {"filters": 4, "kernel_size": 3, "groups": 1,
                                  "kernel_initializer": "he_normal"}}, "Flatten", SOFTMAX_3)
    assert changed.layers[0].args["kernel_initializer"] == "he_normal"
    assert "groups" not in changed.layers[0].args


# --- precise errors for the new arguments ---------------------------------------------------

@pytest.mark.parametrize("layer, shape, message", [
    ({"Conv2D": {"filters": 6, "kernel_size": 3, "groups": 4}}, (8, 8, 8),
     "t.yaml: layer 1 (Conv2D 6 3x3 valid linear groups 4) has groups 4, which must divide "
     "both its 6 filters and its 8 input channels."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "groups": 3}}, (8, 8, 4),
     "has groups 3, which must divide both its 8 filters and its 4 input channels."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "dilation_rate": 2, "strides": [1, 2]}},
     (9, 9, 1), "t.yaml: layer 1 (Conv2D 8 3x3 valid linear dilation 2x2) has dilation_rate "
                "[2, 2] and strides [1, 2]; Keras allows only one of them above 1."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "dilation_rate": 5}}, (9, 9, 1),
     "gets a 9x9 input; its output would be 0x0."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "groups": 0}}, (9, 9, 1),
     "t.yaml: layer 1 (Conv2D): the 'groups' parameter of Conv2D must be a positive integer. "
     "Got 0 instead."),
    ({"Conv2D": {"filters": 8, "kernel_size": 3, "kernel_initializer": "orthogonal"}},
     (9, 9, 1), "the 'kernel_initializer' parameter of Conv2D must be one of "
                "'glorot_uniform', 'glorot_normal', 'he_uniform', 'he_normal', "
                "'lecun_uniform', 'lecun_normal', 'zeros', 'ones'. Got 'orthogonal' instead."),
    ({"ZeroPadding2D": {"padding": [1, 2, 3]}}, (9, 9, 1),
     "the 'padding' parameter of ZeroPadding2D must be a non-negative integer, a list of two "
     "(height, width) or a list of two pairs [[top, bottom], [left, right]]. "
     "Got [1, 2, 3] instead."),
    ({"ZeroPadding2D": {"padding": [[1, -1], [0, 0]]}}, (9, 9, 1), "Got [[1, -1], [0, 0]]"),
    ({"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 0}}, (9, 9, 1),
     "the 'depth_multiplier' parameter of DepthwiseConv2D must be a positive integer."),
    ({"DepthwiseConv2D": {"filters": 4, "kernel_size": 3}}, (9, 9, 1),
     "DepthwiseConv2D has no argument 'filters'."),
    ({"LeakyReLU": {"alpha": 0.1}}, (9, 9, 1),
     "LeakyReLU has no argument 'alpha'. Its arguments: negative_slope."),
    ({"LeakyReLU": {"negative_slope": -0.1}}, (9, 9, 1), "must be a number >= 0. Got -0.1"),
    ({"SpatialDropout2D": {"rate": 1}}, (9, 9, 1), "must be a number in [0, 1). Got 1 instead."),
    ({"SeparableConv2D": {"filters": 4, "kernel_size": 11}}, (9, 9, 1),
     "(SeparableConv2D 4 11x11 valid linear) gets a 9x9 input; its output would be 0x0."),
])
def test_errors_name_the_layer_the_argument_and_what_was_given(layer, shape, message):
    with pytest.raises(SpecError) as e:
        spec_of(layer, "Flatten", SOFTMAX_3, input_shape=shape)
    assert message in str(e.value)


def test_image_layers_refuse_a_vector():
    with pytest.raises(SpecError, match=r"layer 2 \(SpatialDropout2D 0.1\) needs an image "
                                        r"input \(height, width, channels\); it gets \(16,\)"):
        spec_of("Flatten", {"SpatialDropout2D": {"rate": 0.1}}, SOFTMAX_3, input_shape=(4, 4, 1))


# --- what the new modules compute -----------------------------------------------------------

def _modules(layer: dict, shape: tuple[int, ...]) -> nn.Sequential:
    (kind, args), = layer.items()
    body = nn.Sequential(*layer_modules(build_layer(1, kind, args, shape, "t.yaml: layer 1")))
    keras_init_(body)
    return body


def test_layer_normalization_normalises_each_pixels_channels_as_keras_axis_minus_1():
    body = _modules({"LayerNormalization": {}}, (4, 5, 6))
    with torch.no_grad():
        body[0].weight.copy_(torch.linspace(0.5, 2, 6))
        body[0].bias.copy_(torch.linspace(-1, 1, 6))
    x = torch.randn(3, 6, 4, 5) * 3 + 1  # NCHW
    nhwc = x.permute(0, 2, 3, 1)
    expected = torch.nn.functional.layer_norm(nhwc, (6,), body[0].weight, body[0].bias, 1e-3)
    assert torch.allclose(body(x), expected.permute(0, 3, 1, 2), atol=1e-5)
    # channels-last storage (the engine's layout) gives the same numbers
    assert torch.allclose(body(x.contiguous(memory_format=torch.channels_last)), body(x))
    # not the (C, H, W) normalisation of nn.LayerNorm((6, 4, 5))
    whole = torch.nn.functional.layer_norm(x, (6, 4, 5), eps=1e-3)
    assert not torch.allclose(body(x), whole, atol=1e-2)


def test_relu_layer_follows_keras_formula():
    body = _modules({"ReLU": {"max_value": 6, "negative_slope": 0.1, "threshold": 0.5}}, (7,))
    x = torch.tensor([[-2.0, 0.0, 0.5, 0.7, 3.0, 6.0, 9.0]])
    # x >= threshold: min(x, max_value); below: negative_slope * (x - threshold)
    assert torch.allclose(body(x), torch.tensor([[-0.25, -0.05, 0.0, 0.7, 3.0, 6.0, 6.0]]))
    assert isinstance(_modules({"ReLU": {}}, (7,))[0], nn.ReLU)
    leaky = _modules({"LeakyReLU": {}}, (2,))
    assert torch.allclose(leaky(torch.tensor([[-1.0, 2.0]])), torch.tensor([[-0.3, 2.0]]))
    elu = _modules({"ELU": {"alpha": 0.5}}, (2,))
    assert torch.allclose(elu(torch.tensor([[-1.0, 2.0]])),
                          torch.tensor([[0.5 * (math.exp(-1) - 1), 2.0]]))


def test_spatial_dropout_drops_whole_channels_and_scales_the_rest():
    body = _modules({"SpatialDropout2D": {"rate": 0.5}}, (6, 6, 64)).train()
    torch.manual_seed(0)
    out = body(torch.ones(8, 64, 6, 6))
    per_channel = out.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))  # all or nothing per channel
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (per_channel[:, :, 0] == 0).float().mean().item() < 0.6
    body.eval()
    assert torch.equal(body(torch.ones(2, 64, 6, 6)), torch.ones(2, 64, 6, 6))


def test_zero_padding_puts_top_bottom_left_right_where_keras_does():
    body = _modules({"ZeroPadding2D": {"padding": [[1, 2], [3, 0]]}}, (2, 2, 1))
    out = body(torch.ones(1, 1, 2, 2))[0, 0]
    assert out.shape == (5, 5)
    assert out[1:3, 3:5].sum().item() == 4 and out.sum().item() == 4


def test_global_max_pooling_takes_each_channels_maximum():
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(_modules({"GlobalMaxPooling2D": {}}, (4, 5, 3))(x), x.amax(dim=(2, 3)))


def test_depthwise_output_channels_are_ordered_as_tensorflow():
    # Output channel i*dm + j comes from input channel i only.
    body = _modules({"DepthwiseConv2D": {"kernel_size": 1, "depth_multiplier": 2,
                                         "depthwise_initializer": "ones", "use_bias": False}},
                    (2, 2, 3))
    x = torch.arange(1.0, 4.0).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert body(x)[0, :, 0, 0].tolist() == [1, 1, 2, 2, 3, 3]


def test_separable_conv_is_depthwise_then_pointwise_then_bias():
    body = _modules({"SeparableConv2D": {"filters": 2, "kernel_size": 2,
                                         "depthwise_initializer": "ones",
                                         "pointwise_initializer": "ones",
                                         "bias_initializer": "ones"}}, (3, 3, 2))
    x = torch.arange(18.0).view(1, 2, 3, 3)
    window = x[0, :, :2, :2].sum().item()  # both channels' 2x2 windows, summed by the 1x1
    assert body(x)[0, :, 0, 0].tolist() == [window + 1, window + 1]


# --- initializers: Keras 2.2's formulas --------------------------------------------------------

def test_glorot_uniform_through_init_draws_exactly_what_xavier_uniform_draws():
    a, b = torch.empty(32, 16, 5, 5), torch.empty(32, 16, 5, 5)
    torch.manual_seed(3)
    nn.init.xavier_uniform_(a)
    torch.manual_seed(3)
    init_(b, "glorot_uniform", 16 * 25, 32 * 25)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name, scale, mode, normal", [
    ("glorot_uniform", 1.0, "avg", False), ("glorot_normal", 1.0, "avg", True),
    ("he_uniform", 2.0, "in", False), ("he_normal", 2.0, "in", True),
    ("lecun_uniform", 1.0, "in", False), ("lecun_normal", 1.0, "in", True),
])
def test_variance_scaling_initializers(name, scale, mode, normal):
    fan_in, fan_out = 400, 100
    torch.manual_seed(0)
    t = torch.empty(fan_out, fan_in)
    init_(t, name, fan_in, fan_out)
    n = fan_in if mode == "in" else (fan_in + fan_out) / 2
    std = math.sqrt(scale / n)  # what Keras promises, truncation included
    assert t.std().item() == pytest.approx(std, rel=0.02)
    assert abs(t.mean().item()) < 0.02 * std
    bound = 2 * std / 0.87962566103423978 if normal else math.sqrt(3) * std
    assert t.abs().max().item() <= bound * (1 + 1e-6)
    assert t.abs().max().item() > 0.98 * bound


def test_initializers_reach_the_layers_with_keras_fans():
    torch.manual_seed(0)
    spec = spec_of({"Conv2D": {"filters": 32, "kernel_size": 5, "kernel_initializer": "he_uniform",
                               "bias_initializer": "ones"}},
                   {"DepthwiseConv2D": {"kernel_size": 5, "depth_multiplier": 1,
                                        "depthwise_initializer": "lecun_uniform"}},
                   "Flatten",
                   {"Dense": {"units": 3, "activation": "softmax", "kernel_initializer": "zeros"}},
                   input_shape=(12, 12, 1))
    model = build_model(spec)
    conv, depthwise, dense = (m for m in model if hasattr(m, "keras_layer"))
    assert conv.weight.abs().max().item() <= math.sqrt(6 / 25)  # he_uniform: sqrt(6/fan_in)
    assert conv.weight.abs().max().item() > 0.95 * math.sqrt(6 / 25)
    assert torch.equal(conv.bias, torch.ones(32))
    # Keras' depthwise kernel (5, 5, 32, 1): fan_in 5*5*32, not torch's 5*5.
    limit = math.sqrt(3 / (25 * 32))
    assert limit * 0.95 < depthwise.weight.abs().max().item() <= limit
    assert torch.equal(depthwise.bias, torch.zeros(32))
    assert torch.count_nonzero(dense.weight).item() == 0


# --- a model of every new layer: builds, trains a step, shows in the summary ------------------

ALL_NEW = [
    {"ZeroPadding2D": {"padding": 1}},
    {"Conv2D": {"filters": 6, "kernel_size": 3, "groups": 3, "dilation_rate": 2,
                "activation": "relu", "kernel_initializer": "he_normal"}},
    {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2, "padding": "same"}},
    {"LayerNormalization": {}},
    {"LeakyReLU": {"negative_slope": 0.2}},
    {"SeparableConv2D": {"filters": 8, "kernel_size": 3, "activation": "elu",
                         "pointwise_initializer": "glorot_normal"}},
    {"ReLU": {"max_value": 6}},
    {"SpatialDropout2D": {"rate": 0.2}},
    {"ELU": {}},
    {"GlobalMaxPooling2D": {}},
    {"Dense": {"units": 4, "activation": "softmax", "bias_initializer": "zeros"}},
]


def test_a_model_of_the_new_layers_trains_and_shows_in_the_summary(tmp_path, capsys):
    spec = spec_of(*ALL_NEW, input_shape=(12, 12, 3))
    assert [layer.output_shape for layer in spec.layers] == [
        (14, 14, 3), (10, 10, 6), (10, 10, 12), (10, 10, 12), (10, 10, 12), (8, 8, 8),
        (8, 8, 8), (8, 8, 8), (8, 8, 8), (8,), (4,)]
    expected = (3 * 3 * 1 * 6 + 6) + (3 * 3 * 6 * 2 + 12) + 2 * 12 + (
        3 * 3 * 12 + 12 * 8 + 8) + (8 * 4 + 4)
    assert spec.params == expected
    torch.manual_seed(0)
    model = build_model(spec).train()
    assert sum(p.numel() for p in model.parameters()) == expected
    x, y = torch.rand(5, 3, 12, 12), torch.tensor([0, 1, 2, 3, 0])
    loss = clipped_categorical_crossentropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    from cnnbench.analysis.diagnosis import gradient_norms
    norms = gradient_norms(model, x, y)
    table, _ = model_summary(spec)
    names = list(table.columns[0].cells)
    assert list(norms) == ["conv2d", "depthwise_conv2d", "layer_normalization",
                           "separable_conv2d", "dense"]
    assert all(f"{n} (" in " ".join(names) for n in norms)

    path = tmp_path / "new.yaml"
    import yaml
    path.write_text(yaml.safe_dump({"name": "new", "input_shape": [12, 12, 3],
                                    "layers": ALL_NEW}))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    for row in ("zero_padding2d (ZeroPadding2D)", "conv2d (Conv2D)",
                "depthwise_conv2d (DepthwiseConv2D)", "layer_normalization (LayerNormalization)",
                "leaky_re_lu (LeakyReLU)", "separable_conv2d (SeparableConv2D)",
                "re_lu (ReLU)", "spatial_dropout2d (SpatialDropout2D)", "elu (ELU)",
                "global_max_pooling2d (GlobalMaxPooling2D)", "(None, 10, 10, 12)"):
        assert row in out
    assert f"Total params: {expected:,}" in out
    assert spec.shorthand() == (
        "ZeroPad + Conv2D(6,3x3) + DWConv(3x3) + LayerNorm + LeakyReLU(0.2) + "
        "SepConv2D(8,3x3) + ReLU + SpatialDropout(0.2) + ELU(1) + GlobalMaxPooling2D + Dense(4)")


# --- import-keras ---------------------------------------------------------------------------

def test_import_keras_translates_the_new_layers_positional_and_keyword(tmp_path):
    src = tmp_path / "new.py"
    src.write_text("""\
from tensorflow import keras
from tensorflow.keras import layers, initializers
model = keras.Sequential([
    layers.ZeroPadding2D(((1, 2), (0, 1)), input_shape=(12, 12, 3)),
    layers.Conv2D(6, 3, 1, 'valid', None, 2, 'relu', True, 'he_normal', groups=3),
    layers.DepthwiseConv2D(3, 1, 'same', 2, activation='relu',
                           depthwise_initializer=initializers.HeUniform()),
    layers.LayerNormalization(-1, 1e-5, False),
    layers.LeakyReLU(0.1),
    layers.LeakyReLU(alpha=0.2),
    layers.SeparableConv2D(8, (3, 3), padding="SAME", depth_multiplier=2,
                           pointwise_initializer="LecunNormal"),
    layers.ReLU(6.0, 0.0, 0.0),
    layers.ELU(alpha=0.5),
    layers.SpatialDropout2D(0.25),
    layers.GlobalMaxPool2D(),
    layers.Dense(10, activation="softmax", kernel_initializer="glorot_uniform"),
])
""")
    (model,) = import_keras(src).models
    assert model.problems == []
    got = [(layer.kind, layer.args) for layer in model.spec.layers]
    assert got == [
        ("ZeroPadding2D", {"padding": ((1, 2), (0, 1))}),
        ("Conv2D", {"filters": 6, "kernel_size": (3, 3), "strides": (1, 1), "padding": "valid",
                    "activation": "relu", "use_bias": True, "dilation_rate": (2, 2),
                    "groups": 3, "kernel_initializer": "he_normal"}),
        ("DepthwiseConv2D", {"kernel_size": (3, 3), "strides": (1, 1), "padding": "same",
                             "depth_multiplier": 2, "activation": "relu", "use_bias": True,
                             "depthwise_initializer": "he_uniform",
                             "bias_initializer": "zeros"}),
        ("LayerNormalization", {"epsilon": 1e-5, "center": False, "scale": True}),
        ("LeakyReLU", {"negative_slope": 0.1}),
        ("LeakyReLU", {"negative_slope": 0.2}),
        ("SeparableConv2D", {"filters": 8, "kernel_size": (3, 3), "strides": (1, 1),
                             "padding": "same", "depth_multiplier": 2, "activation": "linear",
                             "use_bias": True, "depthwise_initializer": "glorot_uniform",
                             "pointwise_initializer": "lecun_normal",
                             "bias_initializer": "zeros"}),
        ("ReLU", {"max_value": 6.0, "negative_slope": 0.0, "threshold": 0.0}),
        ("ELU", {"alpha": 0.5}),
        ("SpatialDropout2D", {"rate": 0.25}),
        ("GlobalMaxPooling2D", {}),
        ("Dense", {"units": 10, "activation": "softmax", "use_bias": True}),
    ]
    assert model.spec.input_shape == (12, 12, 3)
    assert main(["import-keras", str(src), "--out", str(tmp_path / "specs")]) == 0
    written = load_spec(tmp_path / "specs" / "new_1.yaml")  # the file says the same
    assert [(layer.kind, layer.args) for layer in written.layers] == got


def test_import_keras_refuses_what_a_spec_cannot_hold(tmp_path):
    src = tmp_path / "odd.py"
    src.write_text("""\
model = Sequential()
model.add(DepthwiseConv2D(3, dilation_rate=2, input_shape=(8, 8, 1)))
model.add(LayerNormalization(axis=[1, 2, 3]))
model.add(Conv2D(4, 3, kernel_initializer=initializers.Orthogonal(gain=2)))
model.add(Dense(10, activation='softmax'))
""")
    (model,) = import_keras(src).models
    assert model.problems == [
        "line 2: DepthwiseConv2D(dilation_rate=2): a spec supports only dilation_rate=1",
        "line 3: LayerNormalization(axis=[1, 2, 3]): a spec supports only axis=-1",
        "line 4: 'initializers.Orthogonal(gain=2)' is not a constant expression",
    ]


@pytest.mark.slow
def test_a_model_of_the_new_layers_saves_loads_and_exports(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    from cnnbench.model.build import predict_proba
    from cnnbench.model.export import export
    from cnnbench.model.weights import load_weights, save_weights

    spec = spec_of(*ALL_NEW, input_shape=(12, 12, 3))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    loaded = load_weights(save_weights(tmp_path / "new.safetensors", model, spec,
                                       ["a", "b", "c", "d"]))
    x = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        expected = predict_proba(model, x).numpy()
        assert np.array_equal(predict_proba(loaded.model, x).numpy(), expected)
        traced = torch.jit.load(str(export(loaded, "torchscript", tmp_path / "new.pt")))
        assert np.abs(traced(x).numpy() - expected).max() < 1e-6
    session = ort.InferenceSession(str(export(loaded, "onnx", tmp_path / "new.onnx")),
                                   providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5
