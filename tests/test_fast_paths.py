"""Each fast path of the engine computes the same function as the plain reference path."""

from __future__ import annotations

import copy

import pytest
import torch

from cnnbench.engine import TrainConfig, make_train_step, prepare_model, resolve_precision
from cnnbench.nn import build_model, clipped_categorical_crossentropy
from cnnbench.spec import get_spec, list_models


def _batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _reference_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    steps: int) -> list[float]:
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    losses = []
    for _ in range(steps):
        loss = clipped_categorical_crossentropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list_models("CNN_MNIST_*"))
def test_channels_last_forward_and_gradients_match_nchw(name: str) -> None:
    torch.manual_seed(0)
    ref = build_model(get_spec(name)).eval()
    fast = prepare_model(copy.deepcopy(ref))
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = _batch()
    out_ref, out_fast = ref(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-4, atol=1e-5)
    clipped_categorical_crossentropy(out_ref, y).backward()
    clipped_categorical_crossentropy(out_fast, y).backward()
    for (n, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-3, atol=1e-6, msg=n)


def test_compiled_adadelta_step_matches_eager_steps() -> None:
    torch.manual_seed(0)
    ref = build_model(get_spec("CNN_MNIST_1"))
    fast = copy.deepcopy(ref)
    x, y = _batch(32)
    torch.manual_seed(1)  # the same dropout masks for both
    ref_losses = _reference_step(ref, x, y, steps=4)
    step = make_train_step(fast, TrainConfig(), compile_optimizer=True)
    torch.manual_seed(1)
    fast_losses = [step(x, y)[0].item() for _ in range(4)]
    assert fast_losses == pytest.approx(ref_losses, rel=1e-4)
    for p_ref, p_fast in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast, p_ref, rtol=1e-4, atol=1e-6)
    assert step.optimizer.state  # the compiled step updated the real optimizer's state


def test_bf16_autocast_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = build_model(get_spec("CNN_MNIST_1")).eval()
    x, _ = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x).float()
    high = model(x)
    # bf16 keeps 8 bits of mantissa: logits agree to about 1e-2 relative, classes almost all.
    torch.testing.assert_close(low, high, rtol=5e-2, atol=5e-2)
    assert (low.argmax(1) == high.argmax(1)).float().mean() >= 0.95


def test_bf16_training_step_decreases_the_loss_like_fp32() -> None:
    x, y = _batch(128)
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(get_spec("CNN_MNIST_1"))
        step = make_train_step(model, TrainConfig(precision=precision), compile_optimizer=False)
        losses[precision] = [step(x, y)[0].item() for _ in range(5)]
    assert losses["bf16"][-1] < losses["bf16"][0]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_auto_precision_is_fp32_where_no_bf16_hardware_and_explicit_choice_wins() -> None:
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
