"""Keras 3's SGD: weight decay applied to the weights apart from the gradient.

torch's ``SGD(weight_decay=wd)`` adds ``wd * p`` to the gradient, so with momentum the decay
accumulates in the momentum buffer. Keras 3 (``Optimizer.apply_weight_decay``) first sets
``p <- p - p * wd * lr`` for every variable with a gradient, then takes the plain update.
Without momentum the two agree; with it they do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class KerasSGD(torch.optim.SGD):
    """torch's SGD (its momentum and Nesterov formulas) with Keras' decoupled weight decay.

    The decay is a setting, not state: checkpoints hold torch's SGD state unchanged.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
        self.keras_weight_decay = weight_decay

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:  # the gradients first: the decay applies where they are
            with torch.enable_grad():
                loss = closure()
        wd = self.keras_weight_decay
        if wd:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.sub_(p * wd * group["lr"])  # Keras: variable - variable * wd * lr
        super().step()
        return loss
