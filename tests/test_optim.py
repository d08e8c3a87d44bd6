"""Optimizer choice: Adadelta exactly as before by default, step by step as Keras 2.2; the others
by their Keras names."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
from test_cli_run_files import SPEC, make_dataset
from torch import nn

from cnnbench.cli import main
from cnnbench.errors import ConstraintError
from cnnbench.store.run_store import RunStore
from cnnbench.train.engine import TrainConfig, make_train_step
from cnnbench.train.optim import (
    OptimizerError,
    label_of,
    make_optimizer,
    resolve_optimizer,
    with_learning_rate,
)


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
    with pytest.raises(ConstraintError, match=re.escape(
            "TrainConfig: the 'rho' parameter of Adadelta must be a number in [0, 1). "
            "Got 1.5 instead.")):
        TrainConfig(optimizer_args=(("rho", 1.5),))


def test_nesterov_needs_momentum():
    with pytest.raises(OptimizerError, match="nesterov: true needs a momentum > 0"):
        resolve_optimizer("SGD", {"nesterov": True}, "study.yaml")


# --- Adadelta, step by step as Keras 2.2 ------------------------------------------------------

def test_adadelta_steps_match_keras_formula():
    """Two steps of p <- p - lr*u on loss = g*p with g = 2 then g = -1, lr 1, rho .95, eps 1e-7.

    Keras 2.2: a <- rho a + (1-rho) g^2; u = g sqrt(d+eps)/sqrt(a+eps); p <- p - lr u;
    d <- rho d + (1-rho) u^2, from a = d = 0.
    """
    p = nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    holder = nn.Module()
    holder.p = p
    opt = make_optimizer(holder)  # Keras' defaults: Adadelta(lr=1.0, rho=0.95, epsilon=1e-7)

    # Step 1, g = 2: a1 = 0.05 * 4 = 0.2; u1 = 2 * sqrt(1e-7) / sqrt(0.2 + 1e-7)
    #   = 2 * 3.16227766e-4 / 0.447213707 = 1.41421321e-3; p1 = 0.5 - u1 = 0.498585787;
    #   d1 = 0.05 * u1^2 = 9.99999500e-8.
    (2.0 * p).sum().backward()
    opt.step()
    u1 = 2 * math.sqrt(1e-7) / math.sqrt(0.2 + 1e-7)
    assert u1 == pytest.approx(1.41421321e-3, rel=1e-8)
    assert p.item() == pytest.approx(0.5 - u1, rel=1e-12)
    assert p.item() == pytest.approx(0.498585787, rel=1e-8)
    d1 = 0.05 * u1 ** 2

    # Step 2, g = -1: a2 = 0.95 * 0.2 + 0.05 * 1 = 0.24;
    #   u2 = -1 * sqrt(d1 + 1e-7) / sqrt(0.24 + 1e-7) = -sqrt(1.99999950e-7) / 0.489898051
    #      = -9.12870625e-4; p2 = p1 - u2 = 0.499498657.
    opt.zero_grad()
    (-1.0 * p).sum().backward()
    opt.step()
    u2 = -1 * math.sqrt(d1 + 1e-7) / math.sqrt(0.24 + 1e-7)
    assert u2 == pytest.approx(-9.12870625e-4, rel=1e-8)
    assert p.item() == pytest.approx(0.5 - u1 - u2, rel=1e-12)
    assert p.item() == pytest.approx(0.499498657, rel=1e-8)
    state = opt.state[p]
    assert state["square_avg"].item() == pytest.approx(0.24, rel=1e-12)
    assert state["acc_delta"].item() == pytest.approx(0.95 * d1 + 0.05 * u2 ** 2, rel=1e-12)


# --- one description: a name and its complete Keras-named arguments, Adadelta included ------

def test_adadelta_is_described_like_any_other_optimizer():
    default = TrainConfig()
    assert (default.optimizer, default.optimizer_args) == (
        "Adadelta", (("learning_rate", 1.0), ("rho", 0.95), ("epsilon", 1e-7)))
    some = TrainConfig(optimizer_args=(("rho", 0.9),))  # the others filled in, Keras' order
    assert some.optimizer_args == (("learning_rate", 1.0), ("rho", 0.9), ("epsilon", 1e-7))
    spelled = TrainConfig(optimizer="Adadelta", optimizer_args=(
        ("epsilon", 1e-7), ("learning_rate", 1), ("rho", 0.95)))
    assert spelled == default and hash(spelled) == hash(default)  # one setting, one config
    assert pickle.loads(pickle.dumps(some)) == some  # it travels to worker processes and Ray
    assert default.to_dict()["optimizer_args"] == {"learning_rate": 1.0, "rho": 0.95,
                                                   "epsilon": 1e-7}
    assert not {"lr", "rho", "epsilon"} & set(default.to_dict())


def test_the_train_step_builds_the_configured_optimizer_with_its_arguments():
    step = make_train_step(nn.Linear(2, 2), TrainConfig(optimizer="RMSprop", optimizer_args=(
        ("learning_rate", 0.02), ("rho", 0.8))), compile_optimizer=False)
    group = step.optimizer.param_groups[0]
    assert type(step.optimizer) is torch.optim.RMSprop
    assert (group["lr"], group["alpha"], group["eps"]) == (0.02, 0.8, 1e-7)


@pytest.mark.parametrize("name", ["Adadelta", "SGD", "Adam", "AdamW", "RMSprop"])
def test_with_learning_rate_sets_the_rate_of_whichever_optimizer(name):
    config = TrainConfig(optimizer=name).with_learning_rate(0.05)
    assert config.learning_rate == 0.05 and config.optimizer == name
    assert dict(config.optimizer_args) == resolve_optimizer(name, {"learning_rate": 0.05}, "")
    step = make_train_step(nn.Linear(2, 2), config, compile_optimizer=False)
    assert step.optimizer.param_groups[0]["lr"] == 0.05
    with pytest.raises(OptimizerError, match="'learning_rate' parameter of " + name):
        with_learning_rate(name, (), -1.0, "--lr")


def test_label_of_describes_stored_settings_of_either_key_version():
    assert label_of(TrainConfig(optimizer="SGD").to_dict()) == (
        "SGD(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0)")
    # config.json of a run stored before KEY_VERSION 2: Adadelta as lr/rho/epsilon
    old = {"epochs": 12, "lr": 0.5, "rho": 0.9, "epsilon": 1e-6, "optimizer": "Adadelta",
           "optimizer_args": []}
    assert label_of(old) == "Adadelta(learning_rate=0.5, rho=0.9, epsilon=1e-06)"
    assert label_of({"optimizer": "SGD", "optimizer_args": [["learning_rate", 0.1]],
                     "lr": 1.0}).startswith("SGD(learning_rate=0.1, momentum=0.0")


# --- --lr and the method note of an SGD study -------------------------------------------------

def _study(folder: Path, learning_rate: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.yaml").write_text(SPEC.format(name="m", units=3))
    study = folder / "study.yaml"
    study.write_text(f"models: [m.yaml]\ndata_dir: {folder.parent / 'bars'}\ntraining:\n"
                     f"  optimizer: {{SGD: {{learning_rate: {learning_rate}}}}}\n"
                     f"  epochs: 2\n  batch_size: 32\n")
    return study


def _train(tmp: Path, name: str, learning_rate: float, *extra: str) -> tuple[str, list]:
    """Train the SGD study in a store of its own: (run id, final weights as lists)."""
    from safetensors.numpy import load_file
    store = tmp / name / "store"
    code = main(["run", str(_study(tmp / name, learning_rate)), "--store", str(store),
                 "--out", str(tmp / name / "out"), "--threads", "1", *extra])
    assert code == 0
    (row,) = RunStore(store, create=False).runs()
    weights = load_file(RunStore(store).folder(row.id) / "weights.safetensors")
    return row.id, [(k, weights[k].tolist()) for k in sorted(weights)]


@pytest.fixture(scope="module")
def sgd_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sgd")
    make_dataset(tmp / "bars")
    return tmp, {"file 0.05": _train(tmp, "file", 0.05),
                 "file 0.01, --lr 0.05": _train(tmp, "flag", 0.01, "--lr", "0.05"),
                 "file 0.01": _train(tmp, "plain", 0.01)}


def test_lr_option_sets_the_learning_rate_of_sgd_and_its_run_id(sgd_runs):
    """Before: --lr changed the run id of an SGD study and trained at the file's rate."""
    tmp, runs = sgd_runs
    assert runs["file 0.01, --lr 0.05"] == runs["file 0.05"]  # the same id, the same weights
    assert runs["file 0.01"][0] != runs["file 0.05"][0]
    assert runs["file 0.01"][1] != runs["file 0.05"][1]
    config = json.loads(next((tmp / "flag" / "store" / "runs").glob("*/config.json"))
                        .read_text())
    assert config["training"]["optimizer"] == "SGD"
    assert config["training"]["optimizer_args"]["learning_rate"] == 0.05


def test_an_sgd_studys_report_names_sgd_in_its_method_note(sgd_runs):
    """Before: the method note listed Adadelta's lr, rho and epsilon for an SGD study."""
    tmp, _ = sgd_runs
    (line,) = [ln for ln in (tmp / "flag" / "out" / "report.md").read_text().splitlines()
               if ln.startswith("- **Training.**")]
    assert ("optimizer SGD(learning_rate=0.05, momentum=0.0, nesterov=False, "
            "weight_decay=0.0).") in line
    assert "Adadelta" not in line and "rho" not in line and "lr=" not in line
    results = json.loads((tmp / "flag" / "out" / "results.json").read_text())
    assert results["training"]["optimizer"].startswith("SGD(learning_rate=0.05,")


def test_an_optimizer_kind_is_one_entry_from_schema_to_torch(monkeypatch):
    """A kind added to KINDS alone is resolved, described and built: no other edit."""
    import torch

    from cnnbench.constraints import POSITIVE
    from cnnbench.train import optim

    kind = optim.OptimizerKind("Adagrad", {"learning_rate": (POSITIVE, 0.001)},
                               lambda p, a: torch.optim.Adagrad(p, lr=a["learning_rate"]))
    monkeypatch.setitem(optim.KINDS, "Adagrad", kind)
    config = TrainConfig(optimizer="Adagrad", optimizer_args=(("lr", 0.5),))
    assert config.optimizer_label() == "Adagrad(learning_rate=0.5)"
    built = optim.torch_optimizer([torch.nn.Parameter(torch.zeros(2))], config.optimizer,
                                  config.optimizer_args)
    assert isinstance(built, torch.optim.Adagrad) and built.defaults["lr"] == 0.5
