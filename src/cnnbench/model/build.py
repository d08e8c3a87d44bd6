"""Spec -> torch module, initialised and configured as Keras 2.2 would.

The module returns class *logits*: the spec's final softmax is applied by the loss
(:func:`clipped_categorical_crossentropy`) and by :func:`predict_proba`, which computes the
same function as Keras' softmax layer followed by its clipped cross-entropy.

Keras flattens NHWC tensors, this module flattens NCHW: the Dense weights after Flatten are a
fixed permutation of Keras'. Glorot-uniform initialisation is invariant under that permutation,
so training is distributed identically; only a weight import/export from Keras would need it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.model.spec import Layer, ModelSpec

# KERAS_EPSILON: keras.backend.epsilon(), Adadelta's epsilon and the loss clip.
from cnnbench.train.optim import KERAS_EPSILON, torch_optimizer


def _activation(name: str) -> nn.Module | None:
    return {
        "relu": nn.ReLU(),
        "sigmoid": nn.Sigmoid(),
        "tanh": nn.Tanh(),
        "elu": nn.ELU(),
        "selu": nn.SELU(),
        "softmax": nn.Softmax(dim=1),
        "gelu": nn.GELU(),
        "leaky_relu": nn.LeakyReLU(0.2),  # keras.activations.leaky_relu's default slope
        "linear": None,
    }[name]


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


def _layer_modules(layer: Layer) -> list[nn.Module]:
    a = layer.args
    kind = layer.kind
    if kind == "Conv2D":
        k, s = a["kernel_size"], a["strides"]
        mods: list[nn.Module] = []
        padding: int | tuple[int, int] = 0
        if a["padding"] == "same":
            pad = _padding_4(layer, k, s)
            if pad[0] == pad[1] and pad[2] == pad[3]:
                padding = (pad[2], pad[0])
            else:
                mods.append(nn.ZeroPad2d(pad))
        mods.append(nn.Conv2d(layer.input_shape[2], a["filters"], k, s, padding=padding,
                              bias=a["use_bias"]))
        return mods + [m for m in [_activation(a["activation"])] if m is not None]
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        k, s = a["pool_size"], a["strides"]
        pad = _padding_4(layer, k, s) if a["padding"] == "same" else (0, 0, 0, 0)
        if kind == "MaxPooling2D" and not any(pad):
            return [nn.MaxPool2d(k, s)]
        return [_Pool2d("max" if kind == "MaxPooling2D" else "avg", k, s, pad)]
    if kind == "BatchNormalization":
        c = layer.input_shape[-1]
        # Keras momentum 0.99 == PyTorch momentum 0.01; Keras epsilon 1e-3 (PyTorch's is 1e-5).
        if len(layer.input_shape) == 3:
            return [BatchNorm2d(c, eps=1e-3, momentum=0.01)]
        return [BatchNorm1d(c, eps=1e-3, momentum=0.01)]
    if kind == "Dropout":
        return [Dropout(a["rate"])]
    if kind == "Flatten":
        return [nn.Flatten()]
    if kind == "GlobalAveragePooling2D":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if kind == "Dense":
        mods = [nn.Linear(layer.input_shape[0], a["units"], bias=a["use_bias"])]
        return mods + [m for m in [_activation(a["activation"])] if m is not None]
    if kind == "Activation":
        return [m for m in [_activation(a["activation"])] if m is not None]
    raise AssertionError(f"no module for layer kind {kind}")  # spec.py validated the kinds


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


def keras_init_(module: nn.Module) -> None:
    """Keras 2.2 defaults: glorot_uniform kernels, zero biases, BatchNorm gamma 1 / beta 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
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
    (``torch.manual_seed``) for reproducible weights.
    """
    mods: list[nn.Module] = []
    for i, layer in enumerate(spec.layers):
        sub = _layer_modules(layer)
        if i == len(spec.layers) - 1:
            # The final softmax moves into the loss / predict_proba (see module docstring).
            sub = [m for m in sub if not isinstance(m, nn.Softmax)]
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


def make_optimizer(model: nn.Module, name: str = "Adadelta",
                   args: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()
                   ) -> torch.optim.Optimizer:
    """The torch optimizer for a Keras optimizer and its arguments (defaults filled in);
    Keras 2.2's ``Adadelta()`` by default. See :mod:`cnnbench.train.optim`."""
    return torch_optimizer(model.parameters(), name, args)
