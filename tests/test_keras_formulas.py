"""The optimizers and the loss against the Keras formulas, computed by hand in float64 NumPy:
the fused Adadelta that training uses (and its fallback), Adam, AdamW, RMSprop, SGD with
momentum and Nesterov, and the upper clip of the cross-entropy.

Each optimizer takes three steps on loss = sum(c_t * p), whose gradient is c_t whatever p is,
so the Keras update can be written out without a framework."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnbench.model.build import clipped_categorical_crossentropy
from cnnbench.train import fastpath
from cnnbench.train.fastpath import optimizer_step
from cnnbench.train.optim import make_optimizer

EPS = 1e-7  # Keras' epsilon, every optimizer's default here
RNG = np.random.default_rng(0)
P0 = RNG.uniform(-1, 1, size=(4, 3, 3, 3))  # a Conv2D kernel's shape
# Gradients of 0.1 to 1 in size, either sign: sqrt(v) >> epsilon, so the order-epsilon
# differences between Keras' and torch's Adam and RMSprop stay below 1e-4 of an update.
GRADS = [RNG.uniform(0.1, 1.0, P0.shape) * RNG.choice([-1.0, 1.0], P0.shape) for _ in range(3)]


def torch_steps(name: str, args: dict, dtype=torch.float64, channels_last: bool = False,
                step_fn=None) -> tuple[np.ndarray, torch.optim.Optimizer]:
    p = nn.Parameter(torch.tensor(P0, dtype=dtype))
    if channels_last:
        p.data = p.data.contiguous(memory_format=torch.channels_last)
    holder = nn.Module()
    holder.p = p
    opt = make_optimizer(holder, name, args)
    step = (step_fn or (lambda o: o.step))(opt)
    for g in GRADS:
        opt.zero_grad()
        (torch.tensor(g, dtype=dtype) * p).sum().backward()
        step()
    return p.detach().double().numpy(), opt


def keras_adadelta(lr=1.0, rho=0.95, eps=EPS) -> np.ndarray:
    p, a, d = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for g in GRADS:
        a = rho * a + (1 - rho) * g * g
        u = g * np.sqrt(d + eps) / np.sqrt(a + eps)
        p = p - lr * u
        d = rho * d + (1 - rho) * u * u
    return p


def keras_adam(lr=0.001, beta_1=0.9, beta_2=0.999, eps=EPS, weight_decay=0.0) -> np.ndarray:
    """keras.optimizers.Adam / AdamW (Keras 3): epsilon on the uncorrected sqrt(v); AdamW
    decays the weights by lr * weight_decay before the update."""
    p, m, v = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(GRADS, start=1):
        p = p - p * weight_decay * lr
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        p = p - alpha * m / (np.sqrt(v) + eps)
    return p


def keras_rmsprop(lr=0.001, rho=0.9, momentum=0.0, eps=EPS, centered=False) -> np.ndarray:
    """keras.optimizers.RMSprop (Keras 3): epsilon inside the square root."""
    p, v, mom, avg = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for g in GRADS:
        v = rho * v + (1 - rho) * g * g
        if centered:
            avg = rho * avg + (1 - rho) * g
            increment = lr * g / np.sqrt(v - avg * avg + eps)
        else:
            increment = lr * g / np.sqrt(v + eps)
        if momentum > 0:
            mom = momentum * mom + increment
            p = p - mom
        else:
            p = p - increment
    return p


def keras_sgd(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0) -> np.ndarray:
    """keras.optimizers.SGD (Keras 3); weight decay, as for every Keras 3 optimizer, is
    p <- p - lr * weight_decay * p before the update."""
    p, m = P0.copy(), np.zeros_like(P0)
    for g in GRADS:
        p = p - p * weight_decay * lr
        m = momentum * m - lr * g
        p = p + (momentum * m - lr * g if nesterov else m)
    return p


def assert_same_updates(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """The three steps' total update, element by element, to ``rel`` of its size."""
    err = np.abs((got - P0) - (want - P0)).max()
    assert err <= rel * np.abs(want - P0).max(), (err, np.abs(want - P0).max())


# --- Adadelta: the fused kernel training uses, and its fallback ------------------------------

def compiled_step(monkeypatch):
    """optimizer_step once its fused kernel is built, the eager form refused from then on."""
    def make(opt):
        step = optimizer_step(opt, compile=True)
        assert step.wait_compiled()

        def refuse(*args, **kwargs):
            raise AssertionError("the eager form ran: the fused kernel was not used")
        monkeypatch.setattr(fastpath, "_adadelta_update", refuse)
        monkeypatch.setattr(torch.optim.Adadelta, "step", refuse)
        return step
    return make


def test_fused_adadelta_follows_the_keras_formula(monkeypatch):
    """The fused kernel on a channels-last Conv2D kernel (flat views), float32."""
    got, opt = torch_steps("Adadelta", {}, dtype=torch.float32, channels_last=True,
                           step_fn=compiled_step(monkeypatch))
    want = keras_adadelta()
    # Each step moves a weight by about sqrt(eps / (1 - rho)) = 1.4e-3; float32 keeps 6e-8
    # of the weight's size: 1e-4 of the update.
    assert_same_updates(got, want, rel=1e-4)
    (state,) = opt.state.values()
    assert int(state["step"]) == 3
    a = sum(0.05 * 0.95 ** (2 - i) * g * g for i, g in enumerate(GRADS))
    np.testing.assert_allclose(state["square_avg"].double().numpy(), a, rtol=1e-6)


def test_adadelta_eager_step_is_the_keras_formula_to_float64_precision():
    got, _ = torch_steps("Adadelta", {})
    assert_same_updates(got, keras_adadelta(), rel=1e-12)


def _waited(opt):
    step = optimizer_step(opt, compile=True)
    assert step.wait_compiled() is False
    return step


@pytest.mark.parametrize("compiler, named", [
    (None, "OSError: no C compiler ($CC, cc, gcc or clang)"),
    ("cc-full-disk", "OSError: {cc} could not build the kernel: cc1: error: No space left on "
                     "device")], ids=["none", "failing"])
def test_adadelta_without_a_compiler_warns_once_and_gives_the_same_numbers(
        monkeypatch, tmp_path, compiler, named):
    """No C compiler on PATH, or one that fails (a full disk), with nothing built yet: one
    warning naming why, then the kernel's eager form: bit for bit the fused kernel's numbers,
    three steps counted."""
    fused, _ = torch_steps("Adadelta", {}, dtype=torch.float32, channels_last=True,
                           step_fn=compiled_step(monkeypatch))
    monkeypatch.undo()
    monkeypatch.setattr(fastpath, "_kernels", {})  # nothing built in this process yet
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))  # nor on this machine
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    if compiler:
        cc = tmp_path / compiler
        cc.write_text("#!/bin/sh\necho 'cc1: error: No space left on device' >&2\nexit 1\n")
        cc.chmod(0o755)
        monkeypatch.setenv("CC", str(cc))
        named = named.format(cc=cc)
    with pytest.warns(UserWarning) as caught:
        got, opt = torch_steps("Adadelta", {}, dtype=torch.float32, channels_last=True,
                               step_fn=_waited)
    fallback = [str(w.message) for w in caught if "fused Adadelta unavailable" in str(w.message)]
    assert fallback == [f"fused Adadelta unavailable ({named}); its eager form runs (the same "
                        f"numbers, slower)"]
    assert np.array_equal(got, fused)
    (state,) = opt.state.values()
    assert int(state["step"]) == 3


# --- the other optimizers, by their Keras names and defaults --------------------------------

@pytest.mark.parametrize("name, args, keras, rel", [
    ("Adam", {}, keras_adam(), 1e-4),
    ("Adam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99}, keras_adam(
        lr=0.01, beta_1=0.8, beta_2=0.99), 1e-4),
    ("AdamW", {}, keras_adam(weight_decay=0.004), 1e-4),
    ("AdamW", {"weight_decay": 0.5, "learning_rate": 0.1}, keras_adam(
        lr=0.1, weight_decay=0.5), 1e-4),
    ("RMSprop", {}, keras_rmsprop(), 1e-4),
    ("RMSprop", {"momentum": 0.9}, keras_rmsprop(momentum=0.9), 1e-4),
    ("SGD", {}, keras_sgd(), 1e-12),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}, keras_sgd(lr=0.1, momentum=0.9), 1e-12),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
     keras_sgd(lr=0.1, momentum=0.9, nesterov=True), 1e-12),
    ("SGD", {"learning_rate": 0.1, "weight_decay": 0.5},  # no momentum: the same either way
     keras_sgd(lr=0.1, weight_decay=0.5), 1e-12),
], ids=["adam", "adam-args", "adamw", "adamw-decay", "rmsprop", "rmsprop-momentum", "sgd",
        "sgd-momentum", "sgd-nesterov", "sgd-decay"])
def test_optimizer_follows_the_keras_formula_for_three_steps(name, args, keras, rel):
    got, _ = torch_steps(name, args)
    assert_same_updates(got, keras, rel=rel)
    assert not np.allclose(got, P0)  # it moved


def test_rmsprop_differs_from_keras_by_order_epsilon_only_where_gradients_are_tiny():
    """Keras: g / sqrt(v + eps); torch: g / (sqrt(v) + eps). With epsilon 0.01 instead of
    1e-7 the difference becomes visible: the tolerance above is no accident."""
    got, _ = torch_steps("RMSprop", {"epsilon": 0.01})
    err = np.abs(got - keras_rmsprop(eps=0.01)).max()
    assert err > 1e-4 * np.abs(keras_rmsprop(eps=0.01) - P0).max()


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_with_momentum_and_weight_decay_follows_the_keras_formula(nesterov):
    """torch's own weight_decay is an L2 term through the momentum buffer; Keras 3 decays the
    weights apart (p -= p*wd*lr) before the update, as train/sgd.py does."""
    args = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.5, "nesterov": nesterov}
    got, opt = torch_steps("SGD", args)
    assert_same_updates(got, keras_sgd(lr=0.1, momentum=0.9, weight_decay=0.5,
                                       nesterov=nesterov), rel=1e-12)
    assert opt.param_groups[0]["weight_decay"] == 0  # not torch's L2 term as well
    l2 = torch.optim.SGD([p := nn.Parameter(torch.tensor(P0))], lr=0.1, momentum=0.9,
                         weight_decay=0.5, nesterov=nesterov)
    for g in GRADS:  # torch's L2 decay really is another formula: the test can tell them apart
        l2.zero_grad()
        (torch.tensor(g) * p).sum().backward()
        l2.step()
    with pytest.raises(AssertionError):
        assert_same_updates(p.detach().numpy(), keras_sgd(lr=0.1, momentum=0.9,
                                                           weight_decay=0.5,
                                                           nesterov=nesterov), rel=1e-6)


# --- the loss's upper clip -------------------------------------------------------------------

def test_clipped_loss_gives_zero_gradient_above_one_minus_epsilon():
    """p(true) = 1 / (1 + 2 e^-30) rounds to 1 > 1 - 1e-7: clipped, no gradient at all, and
    the loss is -log(1 - 1e-7) = 1.0e-7; at p = 0.99999939 (logit 15) the clip is inactive."""
    logits = torch.tensor([[30.0, 0.0, 0.0], [15.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 0])
    per_sample = clipped_categorical_crossentropy(logits, target, reduction="none")
    one_minus = torch.tensor(1 - 1e-7, dtype=torch.float32).item()  # 0.99999988 in float32
    assert per_sample[0].item() == pytest.approx(-math.log(one_minus), rel=1e-6)
    assert per_sample[1].item() == pytest.approx(2 * math.exp(-15), rel=0.2)  # float32 near 1
    per_sample.sum().backward()
    assert torch.count_nonzero(logits.grad[0]).item() == 0
    # Unclipped: d(-log p0)/dz = p - onehot = (-2e^-15, e^-15, e^-15) to float32 rounding.
    expected = torch.tensor([-2.0, 1.0, 1.0]) * math.exp(-15)
    torch.testing.assert_close(logits.grad[1], expected, rtol=0.2, atol=0)
