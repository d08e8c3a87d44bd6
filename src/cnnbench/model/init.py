"""Weight initialisation as Keras 2.2 computes it: each initializer by name, with the fans of
the weight's *Keras* shape (which a torch shape does not always give: depthwise kernels,
biases), recorded on a module by its builder as a plan."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_plan(module: nn.Module, **plan: tuple[str, int | float, int | float]) -> nn.Module:
    """Record on ``module`` how :func:`keras_init_` fills each parameter: (initializer, fan_in,
    fan_out) as Keras computes the fans of that weight's Keras shape."""
    # nn.Module.__setattr__ is typed for tensors and modules; a plain attribute is fine too.
    module.keras_init = plan  # type: ignore[assignment]
    return module


def bias_fans(n: int) -> tuple[float, float]:
    """The fans Keras 2.2 gives a bias of n values."""
    # Keras 2.2's _compute_fans of a 1-D shape: sqrt(n) both ways (Keras 3 says n).
    return math.sqrt(n), math.sqrt(n)


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
