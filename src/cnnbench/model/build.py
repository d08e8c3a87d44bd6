"""Spec -> torch module, initialised and configured as Keras 2.2 would: one builder per layer
kind (:data:`BUILDERS`, keyed as :data:`cnnbench.model.layers.KINDS`).

The module returns class *logits*: the spec's final softmax is applied by the loss
(:func:`cnnbench.model.loss.clipped_categorical_crossentropy`) and by
:func:`cnnbench.model.loss.predict_proba`, which compute the same function as Keras' softmax
layer followed by its clipped cross-entropy.

Keras flattens NHWC tensors, this module flattens NCHW: the Dense weights after Flatten are a
fixed permutation of Keras'. Glorot-uniform initialisation is invariant under that permutation,
so training is distributed identically; only a weight import/export from Keras would need it.

The Keras-faithful torch modules live in :mod:`cnnbench.model.modules`, the initializers in
:mod:`cnnbench.model.init`; their names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cnnbench.model.init import bias_fans, init_, init_plan, keras_init_
from cnnbench.model.layers import keras_layer_names
from cnnbench.model.loss import clipped_categorical_crossentropy, predict_proba
from cnnbench.model.modules import (
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    GlobalMaxPool2d,
    KerasReLU,
    LayerNorm,
    Linear,
    Pool2d,
    ReLU,
    SeparableConv2d,
    SpatialDropout2d,
)
from cnnbench.model.spec import Layer, ModelSpec

# Names other modules import from here (one home each, above).
__all__ = [
    "BUILDERS", "BatchNorm1d", "BatchNorm2d", "Builder", "Dropout", "GlobalMaxPool2d",
    "KerasReLU", "LayerNorm", "Linear", "Pool2d", "ReLU", "SeparableConv2d", "SpatialDropout2d",
    "build_model", "clipped_categorical_crossentropy", "init_", "keras_init_", "layer_modules",
    "predict_proba",
]


def _activation(name: str) -> nn.Module | None:
    return {
        "relu": ReLU(),
        "sigmoid": nn.Sigmoid(),
        "tanh": nn.Tanh(),
        "elu": nn.ELU(),
        "selu": nn.SELU(),
        "softmax": nn.Softmax(dim=1),
        "gelu": nn.GELU(),  # exact erf form: Keras' gelu(approximate=False)
        "leaky_relu": nn.LeakyReLU(0.2),  # keras.activations.leaky_relu's default slope
        # log(1 + e^x); torch returns x above 20, where the two differ by e^-20 (< 1 ulp).
        "softplus": nn.Softplus(),
        "softsign": nn.Softsign(),
        "linear": None,
    }[name]


def _with_activation(mods: list[nn.Module], name: str) -> list[nn.Module]:
    act = _activation(name)
    return mods if act is None else [*mods, act]


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: (before, after), the extra pixel after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _padding_4(layer: Layer, k: tuple[int, int], s: tuple[int, int]
               ) -> tuple[int, int, int, int]:
    h, w, _ = layer.input_shape
    top, bottom = _same_padding(h, k[0], s[0])
    left, right = _same_padding(w, k[1], s[1])
    return left, right, top, bottom


def _conv_padding(layer: Layer, a: dict[str, Any], d: tuple[int, int] = (1, 1)
                  ) -> tuple[list[nn.Module], tuple[int, int]]:
    """(a ZeroPad2d for uneven 'same' padding or nothing, the conv's own padding)."""
    k, s = a["kernel_size"], a["strides"]
    if a["padding"] != "same":
        return [], (0, 0)
    reach = ((k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1)  # a dilated kernel's extent
    pad = _padding_4(layer, reach, s)
    if pad[0] == pad[1] and pad[2] == pad[3]:
        return [], (pad[2], pad[0])
    return [nn.ZeroPad2d(pad)], (0, 0)


def _conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    d = a["dilation_rate"]
    mods, padding = _conv_padding(layer, a, d)
    c, f, groups = layer.input_shape[2], a["filters"], a["groups"]
    conv = nn.Conv2d(c, f, a["kernel_size"], a["strides"], padding=padding, dilation=d,
                     groups=groups, bias=a["use_bias"])
    if (a["kernel_initializer"], a["bias_initializer"]) != ("glorot_uniform", "zeros"):
        kh, kw = a["kernel_size"]
        init_plan(conv, weight=(a["kernel_initializer"], kh * kw * c // groups, kh * kw * f),
                   bias=(a["bias_initializer"], *bias_fans(f)))
    return _with_activation([*mods, conv], a["activation"])


def _depthwise_conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    mods, padding = _conv_padding(layer, a)
    c, dm = layer.input_shape[2], a["depth_multiplier"]
    kh, kw = a["kernel_size"]
    # Output channel i * dm + j is input channel i's j-th filter, as in TensorFlow.
    conv = nn.Conv2d(c, c * dm, (kh, kw), a["strides"], padding=padding, groups=c,
                     bias=a["use_bias"])
    # Keras' kernel is (kh, kw, c, dm): fan_in kh*kw*c, fan_out kh*kw*dm (torch: kh*kw, ...).
    init_plan(conv, weight=(a["depthwise_initializer"], kh * kw * c, kh * kw * dm),
               bias=(a["bias_initializer"], *bias_fans(c * dm)))
    return _with_activation([*mods, conv], a["activation"])


def _separable_conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    mods, padding = _conv_padding(layer, a)
    c, dm, f = layer.input_shape[2], a["depth_multiplier"], a["filters"]
    kh, kw = a["kernel_size"]
    conv = SeparableConv2d(c, f, (kh, kw), a["strides"], padding, dm, a["use_bias"])
    plan = {"depthwise_weight": (a["depthwise_initializer"], kh * kw * c, kh * kw * dm),
            "pointwise_weight": (a["pointwise_initializer"], c * dm, f)}
    if a["use_bias"]:
        plan["bias"] = (a["bias_initializer"], *bias_fans(f))
    init_plan(conv, **plan)
    return _with_activation([*mods, conv], a["activation"])


def _dense(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    n_in, units = layer.input_shape[0], a["units"]
    dense = Linear(n_in, units, bias=a["use_bias"])
    if (a["kernel_initializer"], a["bias_initializer"]) != ("glorot_uniform", "zeros"):
        init_plan(dense, weight=(a["kernel_initializer"], n_in, units),
                   bias=(a["bias_initializer"], *bias_fans(units)))
    return _with_activation([dense], a["activation"])


def _pooling(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    k, s = a["pool_size"], a["strides"]
    pad = _padding_4(layer, k, s) if a["padding"] == "same" else (0, 0, 0, 0)
    if layer.kind == "MaxPooling2D" and not any(pad):
        return [nn.MaxPool2d(k, s)]
    return [Pool2d("max" if layer.kind == "MaxPooling2D" else "avg", k, s, pad)]


def _batch_normalization(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    c = layer.input_shape[-1]
    # Keras momentum 0.99 == PyTorch momentum 0.01; Keras epsilon 1e-3 (PyTorch's is 1e-5).
    if len(layer.input_shape) == 3:
        return [BatchNorm2d(c, eps=1e-3, momentum=0.01)]
    return [BatchNorm1d(c, eps=1e-3, momentum=0.01)]


def _relu(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    if (a["max_value"], a["negative_slope"], a["threshold"]) == (None, 0, 0):
        return [ReLU()]
    return [KerasReLU(a["max_value"], a["negative_slope"], a["threshold"])]


def _zero_padding(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    (top, bottom), (left, right) = a["padding"]
    return [nn.ZeroPad2d((left, right, top, bottom))]


# kind -> the torch modules of one layer (spec.py validated its arguments and input shape).
Builder = Callable[[Layer, dict[str, Any]], list[nn.Module]]
BUILDERS: dict[str, Builder] = {
    "Conv2D": _conv2d,
    "MaxPooling2D": _pooling,
    "AveragePooling2D": _pooling,
    "BatchNormalization": _batch_normalization,
    "Dropout": lambda layer, a: [Dropout(a["rate"])],
    "Flatten": lambda layer, a: [nn.Flatten()],
    "GlobalAveragePooling2D": lambda layer, a: [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
    "Dense": _dense,
    "Activation": lambda layer, a: _with_activation([], a["activation"]),
    "DepthwiseConv2D": _depthwise_conv2d,
    "SeparableConv2D": _separable_conv2d,
    "GlobalMaxPooling2D": lambda layer, a: [GlobalMaxPool2d()],
    "ZeroPadding2D": _zero_padding,
    "SpatialDropout2D": lambda layer, a: [SpatialDropout2d(a["rate"])],
    "LayerNormalization": lambda layer, a: [LayerNorm(layer.input_shape[-1], a["epsilon"],
                                                      a["center"], a["scale"])],
    "ReLU": _relu,
    "LeakyReLU": lambda layer, a: [nn.LeakyReLU(a["negative_slope"])],
    "ELU": lambda layer, a: [nn.ELU(a["alpha"])],
}


def layer_modules(layer: Layer) -> list[nn.Module]:
    """The torch modules computing one spec layer, in order."""
    return BUILDERS[layer.kind](layer, layer.all_args)


def build_model(spec: ModelSpec) -> nn.Sequential:
    """A torch module computing the spec's logits from NCHW float input in [0, 1].

    Its parameters are drawn from torch's global generator: seed it first
    (``torch.manual_seed``) for reproducible weights. Each module holding a layer's
    parameters carries that layer's Keras name (``keras_layer``: conv2d_1, dense, ...), the
    name the summary table gives it.
    """
    mods: list[nn.Module] = []
    names = keras_layer_names(layer.kind for layer in spec.layers)
    for i, (layer, name) in enumerate(zip(spec.layers, names, strict=True)):
        sub = layer_modules(layer)
        if i == len(spec.layers) - 1:
            # The final softmax moves into the loss / predict_proba (see module docstring).
            sub = [m for m in sub if not isinstance(m, nn.Softmax)]
        for m in sub:
            if any(True for _ in m.parameters(recurse=False)):
                m.keras_layer = name  # type: ignore[assignment]  # as init.py's keras_init
        mods.extend(sub)
    model = nn.Sequential(*mods)
    keras_init_(model)
    return model
