"""What each layer kind computes to, without torch: its output shape, trainable and
non-trainable parameters and multiply-accumulates (MACs), from its resolved arguments and its
input shape (Keras' (height, width, channels)). :data:`cnnbench.model.layers.KINDS` names one
of these per kind; a layer that cannot take its input raises :class:`LayerProblem`.
"""

from __future__ import annotations

import math
from typing import Any

Shape = tuple[int, ...]
Inferred = tuple[Shape, int, int, int]  # output shape, trainable, non-trainable params, MACs


class LayerProblem(Exception):
    """A layer that cannot take its input, or arguments that contradict each other; the text
    follows the layer's label ("gets a 2x2 input; ..."), spec.py adds file and index."""


def window_out(size: int, k: int, s: int, padding: str, d: int = 1) -> int:
    """One spatial size after a window of k (dilated by d) with stride s, as TensorFlow."""
    if padding == "same":
        return math.ceil(size / s)
    return (size - ((k - 1) * d + 1)) // s + 1


def _window(a: dict[str, Any], shape: Shape, k: tuple[int, int],
            d: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    h, w, _ = shape
    sh, sw = a["strides"]
    oh = window_out(h, k[0], sh, a["padding"], d[0])
    ow = window_out(w, k[1], sw, a["padding"], d[1])
    if oh < 1 or ow < 1:
        raise LayerProblem(f"gets a {h}x{w} input; its output would be "
                           f"{max(oh, 0)}x{max(ow, 0)}.")
    return oh, ow


def conv(a: dict[str, Any], shape: Shape) -> Inferred:
    """Conv2D, grouped and dilated as Keras allows."""
    c, f, groups = shape[2], a["filters"], a["groups"]
    if max(a["dilation_rate"]) > 1 and max(a["strides"]) > 1:
        raise LayerProblem(f"has dilation_rate {list(a['dilation_rate'])} and strides "
                           f"{list(a['strides'])}; Keras allows only one of them above 1.")
    if f % groups or c % groups:
        raise LayerProblem(f"has groups {groups}, which must divide both its {f} filters and "
                           f"its {c} input channels.")
    oh, ow = _window(a, shape, a["kernel_size"], a["dilation_rate"])
    kh, kw = a["kernel_size"]
    weights = kh * kw * (c // groups) * f
    return (oh, ow, f), weights + (f if a["use_bias"] else 0), 0, oh * ow * weights


def depthwise(a: dict[str, Any], shape: Shape) -> Inferred:
    """DepthwiseConv2D: each channel its own depth_multiplier filters."""
    c, dm = shape[2], a["depth_multiplier"]
    oh, ow = _window(a, shape, a["kernel_size"])
    kh, kw = a["kernel_size"]
    weights = kh * kw * c * dm
    return (oh, ow, c * dm), weights + (c * dm if a["use_bias"] else 0), 0, oh * ow * weights


def separable(a: dict[str, Any], shape: Shape) -> Inferred:
    """SeparableConv2D: a depthwise then a 1x1 convolution, one bias."""
    c, dm, f = shape[2], a["depth_multiplier"], a["filters"]
    oh, ow = _window(a, shape, a["kernel_size"])
    kh, kw = a["kernel_size"]
    depthwise, pointwise = kh * kw * c * dm, c * dm * f
    params = depthwise + pointwise + (f if a["use_bias"] else 0)
    return (oh, ow, f), params, 0, oh * ow * (depthwise + pointwise)


def pool(a: dict[str, Any], shape: Shape) -> Inferred:
    """MaxPooling2D and AveragePooling2D."""
    oh, ow = _window(a, shape, a["pool_size"])
    return (oh, ow, shape[2]), 0, 0, 0


def zero_padding(a: dict[str, Any], shape: Shape) -> Inferred:
    """ZeroPadding2D."""
    (top, bottom), (left, right) = a["padding"]
    h, w, c = shape
    return (h + top + bottom, w + left + right, c), 0, 0, 0


def dense(a: dict[str, Any], shape: Shape) -> Inferred:
    """Dense, on a vector."""
    n_in, units = shape[0], a["units"]
    return (units,), n_in * units + (units if a["use_bias"] else 0), 0, n_in * units


def batchnorm(a: dict[str, Any], shape: Shape) -> Inferred:
    """BatchNormalization over the last axis."""
    c = shape[-1]
    return shape, 2 * c, 2 * c, 0  # gamma, beta trainable; moving mean, variance not


def layernorm(a: dict[str, Any], shape: Shape) -> Inferred:
    """LayerNormalization over the last axis."""
    c = shape[-1]  # axis -1: each position's channels (Keras' default)
    return shape, c * (int(a["center"]) + int(a["scale"])), 0, 0


def unchanged(a: dict[str, Any], shape: Shape) -> Inferred:
    """Layers that keep their input's shape and have no parameters."""
    return shape, 0, 0, 0


def flatten(a: dict[str, Any], shape: Shape) -> Inferred:
    """Flatten."""
    return (math.prod(shape),), 0, 0, 0


def global_pool(a: dict[str, Any], shape: Shape) -> Inferred:
    """GlobalAveragePooling2D and GlobalMaxPooling2D: one value a channel."""
    return (shape[-1],), 0, 0, 0
