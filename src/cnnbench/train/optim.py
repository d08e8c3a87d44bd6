"""Optimizers by their Keras names and arguments, validated without importing torch.

Every optimizer, Adadelta included, is described the same way: a name and its Keras-named
arguments. Each declares its arguments with a constraint and the Keras default;
:func:`resolve_optimizer` checks what a user wrote and fills in the defaults, and
:func:`torch_optimizer` builds the matching ``torch.optim`` object. ``lr`` is accepted as an
alias of ``learning_rate``, as Keras 2 did.

Where the update rules differ: torch's Adam/AdamW add epsilon to the bias-corrected
sqrt(v), Keras to the uncorrected one (a difference of order epsilon). SGD with momentum,
RMSprop and Adadelta follow the same formulas in both; SGD's weight decay is Keras' (the
weights decayed apart, :mod:`cnnbench.train.sgd`), not torch's L2 term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cnnbench.backend import KERAS_EPSILON
from cnnbench.constraints import BOOLEAN, NON_NEGATIVE, POSITIVE, UNIT, Schema, resolve
from cnnbench.errors import ConstraintError
from cnnbench.settings import DEFAULT_OPTIMIZER

DEFAULT = DEFAULT_OPTIMIZER  # the notebook's: Keras 2.2 Adadelta(), lr 1.0, rho 0.95
LEARNING_RATE = NON_NEGATIVE  # Keras takes 0 (the weights stay: a test of the loop uses it)

@dataclass(frozen=True)
class OptimizerKind:
    """One Keras optimizer: its arguments (constraint, Keras default, in Keras' order) and
    how its ``torch.optim`` twin is built from the resolved arguments. Adding an optimizer is
    one entry of :data:`KINDS`."""

    name: str
    schema: Schema
    build: Callable[[Any, Mapping[str, Any]], Any]  # (params, resolved args) -> optimizer


def _adadelta(params: Any, a: Mapping[str, Any]) -> Any:
    import torch
    return torch.optim.Adadelta(params, lr=a["learning_rate"], rho=a["rho"], eps=a["epsilon"])


def _sgd(params: Any, a: Mapping[str, Any]) -> Any:
    from cnnbench.train.sgd import KerasSGD
    # Keras: v = m v - lr g; p += v.  torch: b = m b + g; p -= lr b.  Same for a fixed lr.
    return KerasSGD(params, lr=a["learning_rate"], momentum=a["momentum"],
                    nesterov=a["nesterov"], weight_decay=a["weight_decay"])


def _adam(params: Any, a: Mapping[str, Any]) -> Any:
    import torch
    return torch.optim.Adam(params, lr=a["learning_rate"], betas=(a["beta_1"], a["beta_2"]),
                            eps=a["epsilon"], amsgrad=a["amsgrad"])


def _adamw(params: Any, a: Mapping[str, Any]) -> Any:
    import torch
    return torch.optim.AdamW(params, lr=a["learning_rate"], betas=(a["beta_1"], a["beta_2"]),
                             eps=a["epsilon"], amsgrad=a["amsgrad"],
                             weight_decay=a["weight_decay"])


def _rmsprop(params: Any, a: Mapping[str, Any]) -> Any:
    import torch
    return torch.optim.RMSprop(params, lr=a["learning_rate"], alpha=a["rho"], eps=a["epsilon"],
                               momentum=a["momentum"], centered=a["centered"])


KINDS: dict[str, OptimizerKind] = {k.name: k for k in (
    OptimizerKind("Adadelta", {"learning_rate": (LEARNING_RATE, 1.0), "rho": (UNIT, 0.95),
                               "epsilon": (POSITIVE, KERAS_EPSILON)}, _adadelta),
    OptimizerKind("SGD", {"learning_rate": (LEARNING_RATE, 0.01), "momentum": (UNIT, 0.0),
                          "nesterov": (BOOLEAN, False), "weight_decay": (NON_NEGATIVE, 0.0)},
                  _sgd),
    OptimizerKind("Adam", {"learning_rate": (LEARNING_RATE, 0.001), "beta_1": (UNIT, 0.9),
                           "beta_2": (UNIT, 0.999), "epsilon": (POSITIVE, KERAS_EPSILON),
                           "amsgrad": (BOOLEAN, False)}, _adam),
    OptimizerKind("AdamW", {"learning_rate": (LEARNING_RATE, 0.001),
                            "weight_decay": (NON_NEGATIVE, 0.004), "beta_1": (UNIT, 0.9),
                            "beta_2": (UNIT, 0.999), "epsilon": (POSITIVE, KERAS_EPSILON),
                            "amsgrad": (BOOLEAN, False)}, _adamw),
    OptimizerKind("RMSprop", {"learning_rate": (LEARNING_RATE, 0.001), "rho": (UNIT, 0.9),
                              "momentum": (UNIT, 0.0), "epsilon": (POSITIVE, KERAS_EPSILON),
                              "centered": (BOOLEAN, False)}, _rmsprop),
)}

Args = Mapping[str, Any] | Iterable[tuple[str, Any]]


class OptimizerError(ConstraintError):
    """An optimizer name or argument that cannot be used; the message says which and why."""


def optimizer_of(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """An optimizer as a study file writes it: a name, or ``{Name: {argument: value}}``;
    its name and every argument.

    >>> optimizer_of({"SGD": {"momentum": 0.9}}, "study.yaml")[1]["momentum"]
    0.9
    """
    args: Any
    if isinstance(value, str):
        name, args = value, {}
    elif isinstance(value, dict) and len(value) == 1:
        name, args = next(iter(value.items()))
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise OptimizerError(f"{where}: the arguments of {name} must be a mapping, e.g. "
                                 f"{{{name}: {{learning_rate: 0.01}}}}. Got {args!r}.")
    else:
        raise OptimizerError(f"{where}: write the optimizer as a name (Adadelta) or as "
                             f"{{Name: {{argument: value}}}}. Got {value!r}.")
    return name, resolve_optimizer(name, args, where)


def resolve_optimizer(name: Any, args: Args | None, where: str) -> dict[str, Any]:
    """Check ``name`` and ``args`` against its kind in :data:`KINDS`; return every argument.

    >>> resolve_optimizer("SGD", {"lr": 0.1, "momentum": 0.9}, "study.yaml")["learning_rate"]
    0.1
    """
    lead = f"{where}: " if where else ""
    if name not in KINDS:
        close = {k.lower(): k for k in KINDS}.get(str(name).lower())
        hint = f" Did you mean {close}?" if close else ""
        raise OptimizerError(f"{lead}unknown optimizer {name!r}.{hint} "
                             f"Known optimizers: {', '.join(KINDS)}.")
    given = dict(args or {})
    if "lr" in given:
        if "learning_rate" in given:
            raise OptimizerError(f"{lead}{name} is given both 'lr' and 'learning_rate'; "
                                 f"'lr' is an alias, keep one.")
        given["learning_rate"] = given.pop("lr")
    resolved = resolve(given, KINDS[name].schema, name, where, OptimizerError)
    # An int written in a file is the same setting as its float: one run key for both.
    resolved = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in resolved.items()}
    if name == "SGD" and resolved["nesterov"] and resolved["momentum"] == 0:
        raise OptimizerError(f"{lead}SGD with nesterov: true needs a momentum > 0.")
    return resolved


def with_learning_rate(name: str, args: Args | None, lr: float, where: str = ""
                       ) -> tuple[tuple[str, Any], ...]:
    """``name``'s resolved arguments with ``learning_rate`` set to ``lr`` (``--lr``, a
    learning-rate factor), whichever optimizer it is."""
    resolved = resolve_optimizer(name, args, where)
    return tuple(resolve_optimizer(name, resolved | {"learning_rate": lr}, where).items())


def describe_optimizer(name: str, args: Mapping[str, Any]) -> str:
    """``Adam(learning_rate=0.001, beta_1=0.9, ...)``, every argument shown."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"


def label_of(training: Mapping[str, Any]) -> str:
    """The optimizer of a stored run's settings (``config.json``'s ``training``), described.

    Runs stored before the run key's version 2 kept Adadelta's arguments as ``lr``, ``rho``
    and ``epsilon`` beside an empty ``optimizer_args`` (a list of pairs for the others).
    """
    name = training.get("optimizer", DEFAULT)
    args = training.get("optimizer_args") or {}
    if isinstance(args, list):
        args = dict(args)
    if name == "Adadelta" and not args and "lr" in training:
        args = {"learning_rate": training["lr"], "rho": training.get("rho", 0.95),
                "epsilon": training.get("epsilon", KERAS_EPSILON)}
    try:
        return describe_optimizer(name, resolve_optimizer(name, args, ""))
    except OptimizerError:  # a hand-edited config: say what it holds
        return describe_optimizer(str(name), dict(args))


def torch_optimizer(params: Any, name: str, args: Args) -> Any:
    """The ``torch.optim`` optimizer for a Keras optimizer and its arguments."""
    return KINDS[name].build(params, resolve_optimizer(name, args, "optimizer"))


def make_optimizer(model: Any, name: str = "Adadelta", args: Args = ()) -> Any:
    """The torch optimizer of ``model``'s parameters for a Keras optimizer and its arguments
    (defaults filled in); Keras 2.2's ``Adadelta()`` by default."""
    return torch_optimizer(model.parameters(), name, args)
