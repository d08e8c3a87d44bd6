"""Optimizer choice: Adadelta exactly as before by default; the others by their Keras names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnbench.model.build import make_optimizer
from cnnbench.train.engine import TrainConfig
from cnnbench.train.optim import OptimizerError, resolve_optimizer


def test_default_is_keras_adadelta():
    opt = make_optimizer(nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.Adadelta)
    g = opt.param_groups[0]
    assert (g["lr"], g["rho"], g["eps"]) == (1.0, 0.95, 1e-7)


def test_sgd_momentum_follows_the_keras_formula():
    # Keras: v = m*v - lr*g; p = p + v. Loss = p^2/2 has gradient p.
    # p0 = 1: v1 = -0.1*1 = -0.1, p1 = 0.9; v2 = 0.9*-0.1 - 0.1*0.9 = -0.18, p2 = 0.72.
    p = nn.Parameter(torch.tensor([1.0]))
    opt = make_optimizer(nn.ParameterList([p]), name="SGD",
                         args=(("learning_rate", 0.1), ("momentum", 0.9)))
    for _ in range(2):
        opt.zero_grad()
        (p ** 2 / 2).sum().backward()
        opt.step()
    assert p.item() == pytest.approx(0.72, abs=1e-7)


@pytest.mark.parametrize("name, cls, check", [
    ("Adam", torch.optim.Adam, {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7}),
    ("AdamW", torch.optim.AdamW, {"lr": 0.001, "weight_decay": 0.004, "eps": 1e-7}),
    ("RMSprop", torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.9, "eps": 1e-7}),
    ("SGD", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
])
def test_keras_defaults_reach_torch(name, cls, check):
    opt = make_optimizer(nn.Linear(2, 2), name=name)
    assert isinstance(opt, cls)
    for k, v in check.items():
        assert opt.param_groups[0][k] == v


def test_train_config_rejects_a_bad_optimizer_before_training():
    with pytest.raises(OptimizerError, match="RMSprop has no argument 'beta_1'"):
        TrainConfig(optimizer="RMSprop", optimizer_args=(("beta_1", 0.9),))
    with pytest.raises(ValueError, match="Adadelta takes 'lr', 'rho' and 'epsilon'"):
        TrainConfig(optimizer_args=(("rho", 0.9),))


def test_nesterov_needs_momentum():
    with pytest.raises(OptimizerError, match="nesterov: true needs a momentum > 0"):
        resolve_optimizer("SGD", {"nesterov": True}, "study.yaml")
