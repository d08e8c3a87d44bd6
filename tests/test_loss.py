"""The clipped categorical cross-entropy (model/loss.py): Keras 2.2's loss on a softmax clipped
to [1e-7, 1 - 1e-7], with its zero gradient beyond the clip, in float32 under bf16 logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnbench.model.loss import clipped_categorical_crossentropy


def test_clipped_loss_equals_minus_log_of_clipped_softmax_on_hand_values():
    # logits log(0.7), log(0.2), log(0.1): softmax is exactly (0.7, 0.2, 0.1).
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]))
    target = torch.tensor([0, 2])
    per_sample = clipped_categorical_crossentropy(logits, target, reduction="none")
    assert per_sample.tolist() == pytest.approx([-math.log(0.7), -math.log(0.1)], rel=1e-6)
    assert clipped_categorical_crossentropy(logits, target).item() == pytest.approx(
        (-math.log(0.7) - math.log(0.1)) / 2, rel=1e-6)
    assert clipped_categorical_crossentropy(logits, target, "sum").item() == pytest.approx(
        -math.log(0.7) - math.log(0.1), rel=1e-6)
    # True-class probability e^0 / (2 + e^30) = 9.4e-14 < 1e-7: clipped to 1e-7.
    hopeless = torch.tensor([[0.0, 30.0, 0.0]])
    assert clipped_categorical_crossentropy(hopeless, torch.tensor([0])).item() == \
        pytest.approx(-math.log(1e-7), rel=1e-6)
    assert F.cross_entropy(hopeless, torch.tensor([0])).item() == pytest.approx(30.0, rel=1e-6)


def test_clipped_loss_gives_zero_gradient_beyond_the_clip_unlike_cross_entropy():
    logits = torch.tensor([[0.0, 30.0, 0.0],  # hopeless: p(true) = 9.4e-14 < 1e-7
                           [1.0, 0.5, 0.0]], requires_grad=True)
    target = torch.tensor([0, 0])
    clipped_categorical_crossentropy(logits, target).backward()
    assert torch.count_nonzero(logits.grad[0]).item() == 0
    assert torch.count_nonzero(logits.grad[1]).item() == 3

    ref = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ref, target).backward()
    assert ref.grad[0].abs().max().item() > 0.4  # softmax - onehot: -0.5 and +0.5 after mean
    # Where the clip is inactive, both losses have the same gradient.
    assert torch.allclose(logits.grad[1], ref.grad[1], atol=1e-6)


def test_clipped_loss_is_float32_under_bfloat16_logits():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.bfloat16)
    loss = clipped_categorical_crossentropy(logits, torch.tensor([0]))
    assert loss.dtype == torch.float32
