"""Optimizers by their Keras names and arguments, validated without importing torch.

Each optimizer declares its arguments (Keras names) with a constraint and the Keras default;
:func:`resolve_optimizer` checks what a user wrote and fills in the defaults, and
:func:`torch_optimizer` builds the matching ``torch.optim`` object. ``lr`` is accepted as an
alias of ``learning_rate``, as Keras 2 did.

Where the update rules differ: torch's Adam/AdamW add epsilon to the bias-corrected
sqrt(v), Keras to the uncorrected one (a difference of order epsilon). SGD with momentum,
RMSprop and Adadelta follow the same formulas in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnnbench.errors import UsageError

KERAS_EPSILON = 1e-7


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _unit(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


def _non_negative(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


_DESCRIBE: dict[Callable[[Any], bool], str] = {
    _positive: "a positive number",
    _unit: "a number in [0, 1)",
    _non_negative: "a number >= 0",
    _bool: "true or false",
}

# name -> {argument: (constraint, Keras default)}
OPTIMIZERS: dict[str, dict[str, tuple[Callable[[Any], bool], Any]]] = {
    "Adadelta": {"learning_rate": (_positive, 1.0), "rho": (_unit, 0.95),
                 "epsilon": (_positive, KERAS_EPSILON)},
    "SGD": {"learning_rate": (_positive, 0.01), "momentum": (_unit, 0.0),
            "nesterov": (_bool, False), "weight_decay": (_non_negative, 0.0)},
    "Adam": {"learning_rate": (_positive, 0.001), "beta_1": (_unit, 0.9),
             "beta_2": (_unit, 0.999), "epsilon": (_positive, KERAS_EPSILON),
             "amsgrad": (_bool, False)},
    "AdamW": {"learning_rate": (_positive, 0.001), "weight_decay": (_non_negative, 0.004),
              "beta_1": (_unit, 0.9), "beta_2": (_unit, 0.999),
              "epsilon": (_positive, KERAS_EPSILON), "amsgrad": (_bool, False)},
    "RMSprop": {"learning_rate": (_positive, 0.001), "rho": (_unit, 0.9),
                "momentum": (_unit, 0.0), "epsilon": (_positive, KERAS_EPSILON),
                "centered": (_bool, False)},
}


class OptimizerError(UsageError, ValueError):
    """An optimizer name or argument that cannot be used; the message says which and why."""


def resolve_optimizer(name: Any, args: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Check ``name`` and ``args`` against :data:`OPTIMIZERS`; return every argument.

    >>> resolve_optimizer("SGD", {"lr": 0.1, "momentum": 0.9}, "study.yaml")["learning_rate"]
    0.1
    """
    if name not in OPTIMIZERS:
        close = {k.lower(): k for k in OPTIMIZERS}.get(str(name).lower())
        hint = f" Did you mean {close}?" if close else ""
        raise OptimizerError(f"{where}: unknown optimizer {name!r}.{hint} "
                             f"Known optimizers: {', '.join(OPTIMIZERS)}.")
    known = OPTIMIZERS[name]
    given = dict(args or {})
    if "lr" in given:
        if "learning_rate" in given:
            raise OptimizerError(f"{where}: {name} is given both 'lr' and 'learning_rate'; "
                                 f"'lr' is an alias, keep one.")
        given["learning_rate"] = given.pop("lr")
    resolved: dict[str, Any] = {}
    for arg, value in given.items():
        if arg not in known:
            raise OptimizerError(f"{where}: {name} has no argument '{arg}'. "
                                 f"Its arguments: {', '.join(known)}.")
        check = known[arg][0]
        if not check(value):
            raise OptimizerError(f"{where}: the '{arg}' of {name} must be "
                                 f"{_DESCRIBE[check]}. Got {value!r}.")
    for arg, (_, default) in known.items():
        value = given.get(arg, default)
        resolved[arg] = float(value) if isinstance(value, int) and not isinstance(
            value, bool) else value
    if name == "SGD" and resolved["nesterov"] and resolved["momentum"] == 0:
        raise OptimizerError(f"{where}: SGD with nesterov: true needs a momentum > 0.")
    return resolved


def describe_optimizer(name: str, args: dict[str, Any]) -> str:
    """``Adam(learning_rate=0.001, beta_1=0.9, ...)``, every argument shown."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"


def torch_optimizer(params: Any, name: str, args: dict[str, Any]) -> Any:
    """The ``torch.optim`` optimizer for a resolved Keras optimizer."""
    import torch

    a = resolve_optimizer(name, args, "optimizer")
    lr = a["learning_rate"]
    if name == "Adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=a["rho"], eps=a["epsilon"])
    if name == "SGD":
        # Keras: v = m v - lr g; p += v.  torch: b = m b + g; p -= lr b.  Same for a fixed lr.
        return torch.optim.SGD(params, lr=lr, momentum=a["momentum"], nesterov=a["nesterov"],
                               weight_decay=a["weight_decay"])
    if name in ("Adam", "AdamW"):
        cls = torch.optim.Adam if name == "Adam" else torch.optim.AdamW
        extra = {"weight_decay": a["weight_decay"]} if name == "AdamW" else {}
        return cls(params, lr=lr, betas=(a["beta_1"], a["beta_2"]), eps=a["epsilon"],
                   amsgrad=a["amsgrad"], **extra)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=a["rho"], eps=a["epsilon"],
                                   momentum=a["momentum"], centered=a["centered"])
    raise AssertionError(name)  # resolve_optimizer rejected every other name
