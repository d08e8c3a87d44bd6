"""Spec -> torch module, initialised and configured as Keras 2.2 would: one builder per layer
kind (:data:`BUILDERS`, keyed as :data:`cnnbench.model.layers.KINDS`).

The module returns class *logits*: the spec's final softmax is applied by the loss
(:func:`clipped_categorical_crossentropy`) and by :func:`predict_proba`, which computes the
same function as Keras' softmax layer followed by its clipped cross-entropy.

Keras flattens NHWC tensors, this module flattens NCHW: the Dense weights after Flatten are a
fixed permutation of Keras'. Glorot-uniform initialisation is invariant under that permutation,
so training is distributed identically; only a weight import/export from Keras would need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.backend import KERAS_EPSILON
from cnnbench.model import onednn
from cnnbench.model.layers import keras_layer_names
from cnnbench.model.spec import Layer, ModelSpec


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


def _padding_4(layer: Layer, k: tuple[int, int], s: tuple[int, int]) -> tuple[int, ...]:
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


def _init_plan(module: nn.Module, **plan: tuple[str, int | float, int | float]) -> nn.Module:
    """Record on ``module`` how :func:`keras_init_` fills each parameter: (initializer, fan_in,
    fan_out) as Keras computes the fans of that weight's Keras shape."""
    module.keras_init = plan
    return module


def _bias_fans(n: int) -> tuple[float, float]:
    # Keras 2.2's _compute_fans of a 1-D shape: sqrt(n) both ways (Keras 3 says n).
    return math.sqrt(n), math.sqrt(n)


def _conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    d = a["dilation_rate"]
    mods, padding = _conv_padding(layer, a, d)
    c, f, groups = layer.input_shape[2], a["filters"], a["groups"]
    conv = nn.Conv2d(c, f, a["kernel_size"], a["strides"], padding=padding, dilation=d,
                     groups=groups, bias=a["use_bias"])
    if (a["kernel_initializer"], a["bias_initializer"]) != ("glorot_uniform", "zeros"):
        kh, kw = a["kernel_size"]
        _init_plan(conv, weight=(a["kernel_initializer"], kh * kw * c // groups, kh * kw * f),
                   bias=(a["bias_initializer"], *_bias_fans(f)))
    return _with_activation([*mods, conv], a["activation"])


def _depthwise_conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    mods, padding = _conv_padding(layer, a)
    c, dm = layer.input_shape[2], a["depth_multiplier"]
    kh, kw = a["kernel_size"]
    # Output channel i * dm + j is input channel i's j-th filter, as in TensorFlow.
    conv = nn.Conv2d(c, c * dm, (kh, kw), a["strides"], padding=padding, groups=c,
                     bias=a["use_bias"])
    # Keras' kernel is (kh, kw, c, dm): fan_in kh*kw*c, fan_out kh*kw*dm (torch: kh*kw, ...).
    _init_plan(conv, weight=(a["depthwise_initializer"], kh * kw * c, kh * kw * dm),
               bias=(a["bias_initializer"], *_bias_fans(c * dm)))
    return _with_activation([*mods, conv], a["activation"])


class SeparableConv2d(nn.Module):
    """Keras' SeparableConv2D: a depthwise conv (no bias), a 1x1 conv, then the bias; one
    module, so that its parameters are one layer's, as in Keras."""

    def __init__(self, c: int, filters: int, k: tuple[int, int], s: tuple[int, int],
                 padding: tuple[int, int], dm: int, bias: bool) -> None:
        super().__init__()
        self.c, self.s, self.padding = c, s, padding
        self.depthwise_weight = nn.Parameter(torch.empty(c * dm, 1, *k))
        self.pointwise_weight = nn.Parameter(torch.empty(filters, c * dm, 1, 1))
        self.bias = nn.Parameter(torch.empty(filters)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.depthwise_weight, None, self.s, self.padding, groups=self.c)
        return F.conv2d(y, self.pointwise_weight, self.bias)


def _separable_conv2d(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    mods, padding = _conv_padding(layer, a)
    c, dm, f = layer.input_shape[2], a["depth_multiplier"], a["filters"]
    kh, kw = a["kernel_size"]
    conv = SeparableConv2d(c, f, (kh, kw), a["strides"], padding, dm, a["use_bias"])
    plan = {"depthwise_weight": (a["depthwise_initializer"], kh * kw * c, kh * kw * dm),
            "pointwise_weight": (a["pointwise_initializer"], c * dm, f)}
    if a["use_bias"]:
        plan["bias"] = (a["bias_initializer"], *_bias_fans(f))
    _init_plan(conv, **plan)
    return _with_activation([*mods, conv], a["activation"])


def _dense(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    n_in, units = layer.input_shape[0], a["units"]
    dense = Linear(n_in, units, bias=a["use_bias"])
    if (a["kernel_initializer"], a["bias_initializer"]) != ("glorot_uniform", "zeros"):
        _init_plan(dense, weight=(a["kernel_initializer"], n_in, units),
                   bias=(a["bias_initializer"], *_bias_fans(units)))
    return _with_activation([dense], a["activation"])


def _pooling(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    k, s = a["pool_size"], a["strides"]
    pad = _padding_4(layer, k, s) if a["padding"] == "same" else (0, 0, 0, 0)
    if layer.kind == "MaxPooling2D" and not any(pad):
        return [nn.MaxPool2d(k, s)]
    return [_Pool2d("max" if layer.kind == "MaxPooling2D" else "avg", k, s, pad)]


class _Pool2d(nn.Module):
    """Max/average pooling with Keras' 'same' padding (padding never counts in an average)."""

    def __init__(self, kind: str, k: tuple[int, int], s: tuple[int, int],
                 pad: tuple[int, ...]) -> None:
        super().__init__()
        self.kind, self.k, self.s, self.pad = kind, k, s, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            if any(self.pad):
                x = F.pad(x, self.pad, value=float("-inf"))
            return F.max_pool2d(x, self.k, self.s)
        if not any(self.pad):
            return F.avg_pool2d(x, self.k, self.s)
        ones = F.pad(torch.ones_like(x[:1, :1]), self.pad)
        summed = F.avg_pool2d(F.pad(x, self.pad), self.k, self.s, divisor_override=1)
        return summed / F.avg_pool2d(ones, self.k, self.s, divisor_override=1)


def _batch_normalization(layer: Layer, a: dict[str, Any]) -> list[nn.Module]:
    c = layer.input_shape[-1]
    # Keras momentum 0.99 == PyTorch momentum 0.01; Keras epsilon 1e-3 (PyTorch's is 1e-5).
    if len(layer.input_shape) == 3:
        return [BatchNorm2d(c, eps=1e-3, momentum=0.01)]
    return [BatchNorm1d(c, eps=1e-3, momentum=0.01)]


class GlobalMaxPool2d(nn.Module):
    """The maximum of each channel over height and width: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class LayerNorm(nn.Module):
    """Keras' LayerNormalization with axis=-1: on an NHWC tensor each pixel's C channels are
    normalised (not C, H and W together, as ``nn.LayerNorm((C, H, W))`` would). cnnbench's
    tensors are NCHW (maybe stored channels-last), so that axis is dim 1 here. Computed in
    float32, as Keras does for float16/bfloat16 inputs; the biased variance, as Keras."""

    def __init__(self, c: int, eps: float, center: bool, scale: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c)) if scale else None  # gamma
        self.bias = nn.Parameter(torch.zeros(c)) if center else None  # beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        mean = x32.mean(1, keepdim=True)
        var = (x32 - mean).square().mean(1, keepdim=True)
        y = (x32 - mean) * torch.rsqrt(var + self.eps)
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)


class ReLU(nn.ReLU):
    """``nn.ReLU`` that computes channels-last input as one flat vector.

    torch's CPU ``threshold_backward`` (ReLU's gradient) is 3-5x slower on channels-last
    tensors than on the same bytes seen as 1-D: over 128x64x24x24, 10.2 ms against 2.1 ms
    (CNN_MNIST_1's second convolution). The NHWC view is free, and so is its gradient's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
                memory_format=torch.channels_last):
            n, c, h, w = x.shape
            flat = x.permute(0, 2, 3, 1).reshape(-1)  # a view: NHWC is its memory order
            return F.relu(flat).view(n, h, w, c).permute(0, 3, 1, 2)
        return F.relu(x)


class KerasReLU(nn.Module):
    """Keras' ReLU(max_value, negative_slope, threshold), as Keras 2.2's backend computes it:
    x above threshold (capped at max_value), else negative_slope * (x - threshold)."""

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float) -> None:
        super().__init__()
        self.max_value, self.slope, self.threshold = max_value, negative_slope, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * (x > self.threshold).to(x.dtype) if self.threshold else F.relu(x)
        if self.max_value is not None:
            y = y.clamp(0, self.max_value)
        if self.slope:
            y = y - self.slope * F.relu(self.threshold - x)
        return y


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


def _one_value_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training batch norm over a batch with one value per channel, as Keras 2.2 computes it.

    torch refuses such a batch ("Expected more than 1 value per channel"): a Dense layer's
    last batch of one image failed every epoch. Keras trains on it: the batch variance is 0
    (its moving variance is updated with n / (n - 1 + epsilon) * 0 = 0), the output is beta.
    """
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        m = bn.momentum if bn.momentum is not None else 0.1
        with torch.no_grad():
            bn.running_mean.mul_(1 - m).add_(mean.detach().flatten().to(bn.running_mean.dtype),
                                             alpha=m)
            bn.running_var.mul_(1 - m)  # plus m * 0, the batch's variance
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = (x - mean) * (1.0 / math.sqrt(bn.eps))  # exactly 0, and a 0 gradient, as in Keras
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


def _one_value_per_channel(x: torch.Tensor) -> bool:
    return x.numel() == x.shape[1]


class Linear(nn.Linear):
    """``nn.Linear`` whose fp32 CPU matmuls run on oneDNN (:mod:`cnnbench.model.onednn`):
    2.0-2.3x MKL's here (one thread: CNN_MNIST_2's fp32 step 102 -> 87 ms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn.linear(x, self.weight, self.bias)


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that trains on a batch of one image, as Keras does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and _one_value_per_channel(x):
            return _one_value_batch_norm(self, x)
        return super().forward(x)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` computed on NCHW on the CPU, whatever layout its input comes in.

    torch's CPU batch norm is slow on channels-last input (the engine's layout): forward and
    backward over 128x32x20x20 took 8.2 ms in bf16 and 8.6 ms in fp32 channels-last, 0.8 and
    3.0 ms on NCHW; over 128x128x6x6 (CNN_MNIST_2's) 2.0 / 1.7 ms against 0.5 / 1.1 ms.
    A following Conv2d takes NCHW input as it is; a following Flatten then needs no copy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and _one_value_per_channel(x):  # one image of 1x1: as BatchNorm1d
            return _one_value_batch_norm(self, x)
        return super().forward(x.contiguous() if x.device.type == "cpu" else x)


class Dropout(nn.Dropout):
    """Keras' dropout: keep where a uniform draw in [0, 1) is >= rate, scale by 1/(1-rate).

    The same function as ``nn.Dropout``, drawn as TensorFlow draws it. torch's CPU
    ``bernoulli_`` costs about 10 ns an element; a uniform draw and a compare a quarter of
    that (1M elements: 10.3 vs 2.4 ms). CNN_MNIST_3's Dropout over 128x128x6x6 took 5.8 ms
    of a 34.5 ms bf16 step; with this one the step took 30.7 ms.
    The mask is drawn from torch's global generator in the input's memory format.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        keep = torch.empty_like(x, dtype=torch.float32).uniform_() >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class SpatialDropout2d(nn.Module):
    """Keras' SpatialDropout2D: whole channels dropped, each image its own (a (N, C, 1, 1)
    mask, Keras' noise shape (N, 1, 1, C) in NCHW), kept ones scaled by 1/(1-rate); drawn as
    :class:`Dropout` draws."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], x.shape[1], 1, 1, device=x.device).uniform_() >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


# name -> (scale, mode, distribution) of Keras' VarianceScaling
_VARIANCE_SCALING = {
    "glorot_normal": (1.0, "fan_avg", "normal"), "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"), "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
}
# scipy.stats.truncnorm.std(a=-2, b=2): Keras 2.2+ divides by it, so that the truncated
# normal has the standard deviation sqrt(scale / n) it promises.
_TRUNCATED_STD = .87962566103423978


def init_(t: torch.Tensor, name: str, fan_in: float, fan_out: float) -> None:
    """Fill ``t`` as Keras 2.2's initializer ``name`` fills a weight with these fans."""
    with torch.no_grad():
        if name == "zeros":
            nn.init.zeros_(t)
        elif name == "ones":
            nn.init.ones_(t)
        elif name == "glorot_uniform":
            # torch's xavier_uniform_ arithmetic, so that a default layer draws what it did.
            a = math.sqrt(3.0) * math.sqrt(2.0 / float(fan_in + fan_out))
            t.uniform_(-a, a)
        else:
            scale, mode, distribution = _VARIANCE_SCALING[name]
            n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
            scale /= max(1.0, n)
            if distribution == "uniform":
                limit = math.sqrt(3.0 * scale)
                t.uniform_(-limit, limit)
            else:  # TensorFlow's truncated_normal: redrawn beyond two standard deviations
                std = math.sqrt(scale) / _TRUNCATED_STD
                nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std)


def keras_init_(module: nn.Module) -> None:
    """Keras 2.2 defaults: glorot_uniform kernels, zero biases, BatchNorm gamma 1 / beta 0;
    a module's ``keras_init`` plan (set by its builder) where it has one."""
    for m in module.modules():
        plan = getattr(m, "keras_init", None)
        if plan is not None:
            for name, (initializer, fan_in, fan_out) in plan.items():
                if getattr(m, name) is not None:
                    init_(getattr(m, name), initializer, fan_in, fan_out)
        elif isinstance(m, nn.Conv2d | nn.Linear):
            # xavier_uniform_ uses fan_in = in*kh*kw, fan_out = out*kh*kw, as Keras' glorot does.
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
                m.keras_layer = name
        mods.extend(sub)
    model = nn.Sequential(*mods)
    keras_init_(model)
    return model


def clipped_categorical_crossentropy(logits: torch.Tensor, target: torch.Tensor,
                                     reduction: str = "mean") -> torch.Tensor:
    """Keras 2.2's ``categorical_crossentropy`` on a softmax output, from logits.

    p = softmax(z); p is clipped to [1e-7, 1 - 1e-7]; loss = -log p[target]. The clip zeroes
    the gradient of samples whose true-class probability is below 1e-7 (or above 1 - 1e-7),
    unlike ``F.cross_entropy``. It is computed in float32 whatever the autocast dtype.
    """
    p = torch.softmax(logits.float(), dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    loss = -torch.log(p.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON))
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities, as the Keras model's softmax output."""
    return torch.softmax(model(x).float(), dim=1)
