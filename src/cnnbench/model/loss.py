"""The spec's final softmax, which the built module leaves out: applied by the loss during
training and by :func:`predict_proba` when predicting, together computing the same function as
Keras' softmax layer followed by its clipped cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.backend import KERAS_EPSILON


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
