"""The torch modules that compute Keras 2.2 layers where torch's own differ from them: in
their semantics (Keras' 'same' pooling, SeparableConv2D as one layer, LayerNormalization over
channels, ReLU's arguments, batch norm of a one-image batch, dropout drawn as TensorFlow draws)
or in their CPU speed on the engine's channels-last tensors (ReLU, BatchNorm2d, Linear).

:mod:`cnnbench.model.build` puts them together from a spec; class names are part of what a
user sees (a module without a Keras name is labelled by its class in the diagnosis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.model import onednn


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


class Pool2d(nn.Module):
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
