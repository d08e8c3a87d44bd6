"""The layer kinds a spec may use, one entry each: everything cnnbench knows about a kind but
its torch module (that is :data:`cnnbench.model.build.BUILDERS`, keyed the same way) and the
arithmetic of its output shape and costs (that is :mod:`cnnbench.model.shapes`).

An entry (:class:`LayerKind`) holds the kind's arguments with their constraints and defaults,
its output shape, parameter and MAC counts, its label and shorthand, its Keras name and Keras'
positional order of its arguments. Adding a kind is one entry here and one builder there.

Shapes are Keras' (height, width, channels); nothing here imports torch.

Keras versions: the semantics are Keras 2.2's (the notebook's), the names today's. Where they
part: ``LeakyReLU`` takes ``negative_slope`` (Keras 3; Keras 2's ``alpha`` is imported as it),
default 0.3 in both; ``positional`` is Keras 2.2's order (Keras 3 put ``groups``, and for
DepthwiseConv2D ``dilation_rate``, before ``activation``: read those by keyword); a random
initializer on a bias uses Keras 2.2's fans of a 1-D shape, sqrt(n) (Keras 3: n);
``LayerNormalization`` (tf.keras and Keras 3 only) normalises axis -1, each pixel's channels.

>>> KINDS["Conv2D"].keras_name
'conv2d'
>>> KINDS["LeakyReLU"].keras_name
'leaky_re_lu'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnbench.constraints import (
    BOOLEAN,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPTIONAL_PAIR,
    PAIR,
    POSITIVE,
    POSITIVE_INT,
    REQUIRED,
    UNIT,
    Constraint,
    Schema,
    one_of,
    optional,
    resolve,
    shown,
)
from cnnbench.model import shapes
from cnnbench.model.shapes import Inferred, LayerProblem, Shape

ACTIVATIONS = (
    "relu", "sigmoid", "tanh", "elu", "selu", "softmax", "linear", "gelu", "leaky_relu",
    "softplus", "softsign",
)
PADDINGS = ("valid", "same")
# Keras' initializers by name (Keras 2.2 formulas: cnnbench.model.init.init_).
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
                "lecun_normal", "zeros", "ones")
DROPOUT_KINDS = ("Dropout", "SpatialDropout2D")  # the summary's "Dropout" column
# The largest value of each size argument: far above any model cnnbench trains, far below what
# would overflow a count or describe petabytes. A spec of a few lines can name any number;
# past these it is refused with the bound, before any shape is computed.
MAX_WIDTH = 65_536  # filters, units, groups
MAX_WINDOW = 1_024  # kernel_size, pool_size, strides, dilation_rate: each side
MAX_MULTIPLIER = 1_024  # depth_multiplier
MAX_PADDING = 4_096  # ZeroPadding2D: each side
BOUNDS: dict[str, int] = {
    "filters": MAX_WIDTH, "units": MAX_WIDTH, "groups": MAX_WIDTH,
    "kernel_size": MAX_WINDOW, "pool_size": MAX_WINDOW, "strides": MAX_WINDOW,
    "dilation_rate": MAX_WINDOW, "depth_multiplier": MAX_MULTIPLIER, "padding": MAX_PADDING,
}


def _number(v: Any) -> bool:
    return NON_NEGATIVE(abs(v)) if isinstance(v, int | float) and not isinstance(
        v, bool) else False  # NON_NEGATIVE: finite and within a float, never a bool


NUMBER = Constraint(_number, "a finite number")
ACTIVATION = one_of(*ACTIVATIONS)
PADDING = one_of(*PADDINGS)
INITIALIZER = one_of(*INITIALIZERS)


def _is_zero_padding(v: Any) -> bool:
    def pair(p: Any) -> bool:
        return isinstance(p, list | tuple) and len(p) == 2 and all(NON_NEGATIVE_INT(x)
                                                                    for x in p)
    return NON_NEGATIVE_INT(v) or pair(v) or (isinstance(v, list | tuple) and len(v) == 2
                                              and all(pair(p) for p in v))


ZERO_PADDING = Constraint(_is_zero_padding, "a non-negative integer, a list of two "
                                            "(height, width) or a list of two pairs "
                                            "[[top, bottom], [left, right]]")


def to_pair(v: Any) -> tuple[int, int]:
    """Keras' int-or-tuple argument as (height, width)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def keras_snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: the base of the names it gives a class's layers
    (``Conv2D`` -> ``conv2d``, ``ReLU`` -> ``re_lu``)."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True)
class LayerKind:
    """One layer kind: its arguments, what it computes to, and how Keras names it."""

    name: str  # the spec's name, Keras' class name
    args: Schema  # {argument: (constraint, default or REQUIRED)}; ``added`` ones last
    infer: Callable[[dict[str, Any], Shape], Inferred]
    positional: tuple[str, ...]  # Keras 2.2's positional order, Keras-only arguments included
    input_rank: int | None = None  # 3: an image (height, width, channels), 1: a vector
    label: Callable[[dict[str, Any]], str] | None = None  # default: the name
    shorthand: Callable[[dict[str, Any]], str] | None = None  # default: the name
    pairs: tuple[str, ...] = ()  # int-or-pair arguments, resolved to (height, width)
    finish: Callable[[dict[str, Any]], None] | None = None  # defaults that depend on others
    # Arguments added after the kind first shipped: left out of a layer's args when at their
    # default, so the resolved spec, and the run ids of models made before, do not change.
    added: tuple[str, ...] = ()
    # Arguments import-keras reads by keyword only: Conv2D's groups came with Keras 2.3, placed
    # before activation, which Keras 2.2 (whose order ``positional`` follows) has there.
    keyword_only: tuple[str, ...] = ()
    keras_aliases: tuple[str, ...] = ()  # other Keras class names of the same layer
    keras_renamed: Mapping[str, str] = field(default_factory=dict)  # Keras 2 name -> spec's
    width: str | None = None  # the argument a ``scale`` factor multiplies (filters, units)

    @property
    def keras_name(self) -> str:
        return keras_snake_case(self.name)

    def resolve(self, args: Mapping[str, Any], where: str,
                error: type[Exception] = ValueError) -> dict[str, Any]:
        """Every argument, given or default, pairs as tuples; ``error`` names ``where``."""
        full = resolve(args, self.args, self.name, where, error)
        for name, value in full.items():
            bound = BOUNDS.get(name)
            if bound is not None and _largest_int(value) > bound:
                raise error(f"{where}: the '{name}' parameter of {self.name} must be at most "
                            f"{bound:_} (cnnbench's bound on it). Got "
                            f"{shown(value)} instead.")
        for name in self.pairs:
            if full[name] is not None:
                full[name] = to_pair(full[name])
        if self.finish is not None:
            self.finish(full)
        return full

    def default(self, name: str) -> Any:
        value = self.args[name][1]
        return to_pair(value) if name in self.pairs and value is not None else value

    def key_args(self, full: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments a layer records (and its run is keyed by): ``added`` ones only when
        they differ from their default."""
        return {k: v for k, v in full.items()
                if k not in self.added or v != self.default(k)}

    def complete(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """A layer's recorded arguments with the ``added`` ones filled in."""
        return {k: args[k] if k in args else self.default(k) for k in self.args}

    def describe(self, full: Mapping[str, Any]) -> str:
        return self.label(dict(full)) if self.label else self.name

    def short(self, full: Mapping[str, Any]) -> str:
        return self.shorthand(dict(full)) if self.shorthand else self.name

    def output(self, full: Mapping[str, Any], shape: Shape) -> Inferred:
        """Output shape, trainable and non-trainable parameters, MACs; LayerProblem if the
        input does not fit."""
        if self.input_rank == 3 and len(shape) != 3:
            raise LayerProblem(f"needs an image input (height, width, channels); it gets "
                               f"{shape}. Remove the Flatten/Dense before it.")
        if self.input_rank == 1 and len(shape) != 1:
            raise LayerProblem(f"gets a {'x'.join(map(str, shape))} input; add Flatten or "
                               f"GlobalAveragePooling2D before it.")
        return self.infer(dict(full), shape)


def _largest_int(value: Any) -> int:
    """The largest int in an argument (an int, a pair, a pair of pairs); 0 for none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple):
        return max((_largest_int(v) for v in value), default=0)
    return 0


def keras_layer_names(kinds: Iterable[str]) -> list[str]:
    """conv2d, conv2d_1, max_pooling2d, ... as Keras names a Sequential model's layers."""
    seen: Counter[str] = Counter()
    names = []
    for kind in kinds:
        base = KINDS[kind].keras_name
        names.append(base if seen[base] == 0 else f"{base}_{seen[base]}")
        seen[base] += 1
    return names


# --- argument resolution beyond constraints -------------------------------------------------

def _pool_strides(a: dict[str, Any]) -> None:
    if a["strides"] is None:
        a["strides"] = a["pool_size"]  # Keras: strides default to pool_size


def _pooling_kind(name: str, shorthand: str, alias: str) -> LayerKind:
    """MaxPooling2D and AveragePooling2D: the same arguments, shapes and costs."""
    return LayerKind(
        name,
        {"pool_size": (PAIR, 2), "strides": (OPTIONAL_PAIR, None),
         "padding": (PADDING, "valid")},
        shapes.pool, ("pool_size", "strides", "padding", "data_format"), input_rank=3,
        label=lambda a: f"{name} {_k(a['pool_size'])} {a['padding']}",
        shorthand=lambda a: shorthand, pairs=("pool_size", "strides"), finish=_pool_strides,
        keras_aliases=(alias,))


def _padding_pairs(a: dict[str, Any]) -> None:
    p = a["padding"]
    if isinstance(p, int):
        a["padding"] = ((p, p), (p, p))
    elif all(isinstance(x, int) for x in p):
        a["padding"] = ((p[0], p[0]), (p[1], p[1]))
    else:
        a["padding"] = tuple((int(x[0]), int(x[1])) for x in p)


# --- labels ---------------------------------------------------------------------------------

def _k(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _conv_label(a: dict[str, Any]) -> str:
    bias = "" if a["use_bias"] else " no-bias"
    extra = "" if a["dilation_rate"] == (1, 1) else f" dilation {_k(a['dilation_rate'])}"
    extra += "" if a["groups"] == 1 else f" groups {a['groups']}"
    return (f"Conv2D {a['filters']} {_k(a['kernel_size'])} {a['padding']} "
            f"{a['activation']}{bias}{extra}")


def _depthwise_label(a: dict[str, Any]) -> str:
    bias = "" if a["use_bias"] else " no-bias"
    return (f"DepthwiseConv2D {_k(a['kernel_size'])} x{a['depth_multiplier']} {a['padding']} "
            f"{a['activation']}{bias}")


def _separable_label(a: dict[str, Any]) -> str:
    bias = "" if a["use_bias"] else " no-bias"
    dm = "" if a["depth_multiplier"] == 1 else f" x{a['depth_multiplier']}"
    return (f"SeparableConv2D {a['filters']} {_k(a['kernel_size'])}{dm} {a['padding']} "
            f"{a['activation']}{bias}")


def _zero_padding_label(a: dict[str, Any]) -> str:
    (top, bottom), (left, right) = a["padding"]
    return f"ZeroPadding2D {top},{bottom},{left},{right}"


def _relu_label(a: dict[str, Any]) -> str:
    parts = [f"max {a['max_value']:g}" if a["max_value"] is not None else "",
             f"slope {a['negative_slope']:g}" if a["negative_slope"] else "",
             f"threshold {a['threshold']:g}" if a["threshold"] else ""]
    return " ".join(["ReLU", *[p for p in parts if p]])


# --- the registry ---------------------------------------------------------------------------

_INIT = (INITIALIZER, "glorot_uniform")
_BIAS_INIT = (INITIALIZER, "zeros")

_ENTRIES = (
    LayerKind(
        "Conv2D",
        {"filters": (POSITIVE_INT, REQUIRED), "kernel_size": (PAIR, REQUIRED),
         "strides": (PAIR, 1), "padding": (PADDING, "valid"),
         "activation": (ACTIVATION, "linear"), "use_bias": (BOOLEAN, True),
         "dilation_rate": (PAIR, 1), "groups": (POSITIVE_INT, 1),
         "kernel_initializer": _INIT, "bias_initializer": _BIAS_INIT},
        shapes.conv,
        ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
         "activation", "use_bias", "kernel_initializer", "bias_initializer"),
        input_rank=3, label=_conv_label,
        shorthand=lambda a: f"Conv2D({a['filters']},{_k(a['kernel_size'])})",
        pairs=("kernel_size", "strides", "dilation_rate"),
        added=("dilation_rate", "groups", "kernel_initializer", "bias_initializer"),
        keyword_only=("groups",), keras_aliases=("Convolution2D",), width="filters"),
    _pooling_kind("MaxPooling2D", "MaxPool", "MaxPool2D"),
    _pooling_kind("AveragePooling2D", "AvgPool", "AvgPool2D"),
    LayerKind("BatchNormalization", {}, shapes.batchnorm,
              ("axis", "momentum", "epsilon", "center", "scale"),
              shorthand=lambda a: "BatchNorm"),
    LayerKind("Dropout", {"rate": (UNIT, REQUIRED)}, shapes.unchanged,
              ("rate", "noise_shape", "seed"),
              label=lambda a: f"Dropout {a['rate']:g}",
              shorthand=lambda a: f"Dropout({a['rate']:g})"),
    LayerKind("Flatten", {}, shapes.flatten, ("data_format",), input_rank=3),
    LayerKind("GlobalAveragePooling2D", {}, shapes.global_pool, ("data_format",), input_rank=3,
              keras_aliases=("GlobalAvgPool2D",)),
    LayerKind(
        "Dense",
        {"units": (POSITIVE_INT, REQUIRED), "activation": (ACTIVATION, "linear"),
         "use_bias": (BOOLEAN, True), "kernel_initializer": _INIT,
         "bias_initializer": _BIAS_INIT},
        shapes.dense, ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer"),
        input_rank=1, label=lambda a: f"Dense {a['units']} {a['activation']}",
        shorthand=lambda a: f"Dense({a['units']})",
        added=("kernel_initializer", "bias_initializer"), width="units"),
    LayerKind("Activation", {"activation": (ACTIVATION, REQUIRED)}, shapes.unchanged,
              ("activation",),
              label=lambda a: f"Activation {a['activation']}",
              shorthand=lambda a: a["activation"]),
    # --- added with the registry ---
    LayerKind(
        "DepthwiseConv2D",
        {"kernel_size": (PAIR, REQUIRED), "strides": (PAIR, 1), "padding": (PADDING, "valid"),
         "depth_multiplier": (POSITIVE_INT, 1), "activation": (ACTIVATION, "linear"),
         "use_bias": (BOOLEAN, True), "depthwise_initializer": _INIT,
         "bias_initializer": _BIAS_INIT},
        shapes.depthwise,
        ("kernel_size", "strides", "padding", "depth_multiplier", "data_format", "activation",
         "use_bias", "depthwise_initializer", "bias_initializer"),
        input_rank=3, label=_depthwise_label,
        shorthand=lambda a: f"DWConv({_k(a['kernel_size'])})", pairs=("kernel_size", "strides")),
    LayerKind(
        "SeparableConv2D",
        {"filters": (POSITIVE_INT, REQUIRED), "kernel_size": (PAIR, REQUIRED),
         "strides": (PAIR, 1), "padding": (PADDING, "valid"),
         "depth_multiplier": (POSITIVE_INT, 1), "activation": (ACTIVATION, "linear"),
         "use_bias": (BOOLEAN, True), "depthwise_initializer": _INIT,
         "pointwise_initializer": _INIT, "bias_initializer": _BIAS_INIT},
        shapes.separable,
        ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
         "depth_multiplier", "activation", "use_bias", "depthwise_initializer",
         "pointwise_initializer", "bias_initializer"),
        input_rank=3, label=_separable_label,
        shorthand=lambda a: f"SepConv2D({a['filters']},{_k(a['kernel_size'])})",
        pairs=("kernel_size", "strides"), keras_aliases=("SeparableConvolution2D",),
        width="filters"),
    LayerKind("GlobalMaxPooling2D", {}, shapes.global_pool, ("data_format",), input_rank=3,
              keras_aliases=("GlobalMaxPool2D",)),
    LayerKind("ZeroPadding2D", {"padding": (ZERO_PADDING, 1)}, shapes.zero_padding,
              ("padding", "data_format"), input_rank=3, label=_zero_padding_label,
              shorthand=lambda a: "ZeroPad", finish=_padding_pairs),
    LayerKind("SpatialDropout2D", {"rate": (UNIT, REQUIRED)}, shapes.unchanged,
              ("rate", "data_format"),
              input_rank=3, label=lambda a: f"SpatialDropout2D {a['rate']:g}",
              shorthand=lambda a: f"SpatialDropout({a['rate']:g})"),
    LayerKind("LayerNormalization",
              {"epsilon": (POSITIVE, 1e-3), "center": (BOOLEAN, True),
               "scale": (BOOLEAN, True)},
              shapes.layernorm, ("axis", "epsilon", "center", "scale"),
              shorthand=lambda a: "LayerNorm"),
    LayerKind("ReLU",
              {"max_value": (optional(NON_NEGATIVE), None),
               "negative_slope": (NON_NEGATIVE, 0.0), "threshold": (NUMBER, 0.0)},
              shapes.unchanged, ("max_value", "negative_slope", "threshold"), label=_relu_label,
              shorthand=lambda a: "ReLU"),
    LayerKind("LeakyReLU", {"negative_slope": (NON_NEGATIVE, 0.3)}, shapes.unchanged,
              ("negative_slope",),
              label=lambda a: f"LeakyReLU {a['negative_slope']:g}",
              shorthand=lambda a: f"LeakyReLU({a['negative_slope']:g})",
              keras_renamed={"alpha": "negative_slope"}),
    LayerKind("ELU", {"alpha": (NON_NEGATIVE, 1.0)}, shapes.unchanged, ("alpha",),
              label=lambda a: f"ELU {a['alpha']:g}", shorthand=lambda a: f"ELU({a['alpha']:g})"),
)

KINDS: dict[str, LayerKind] = {k.name: k for k in _ENTRIES}

