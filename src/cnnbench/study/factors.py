"""Factors of an ablation, as data: parsing a factor and its levels, and the layer selectors.

A factor edits a base spec (one key each): ``set`` an argument on the layers ``layers``
selects; ``replace`` a layer by another or remove it (``null``); ``insert_after`` a layer;
``repeat`` a block of layers 0 (dropped), 1 or more times; ``scale`` the filters/units of
selected layers; ``training``: ``learning_rate``, ``batch_size``, ``optimizer`` or ``epochs``.
A factor's ``base`` level (default: its first) is the one the other factors vary around.

Layer selectors name layers of the **base** spec: an index (1-based, as the spec's lines are
counted) or a list of distinct ones, a kind (``Conv2D``: all of them), the n-th of a kind
(``Conv2D#1`` .. ``Conv2D#n``, or from the end ``Conv2D#-1`` the last; never ``#0``), or
``hidden``: every layer with an activation but the output layer. A selector that picks no
layer and two levels of one value are refused.

``parse_vary`` reads the short form of a factor, ``cnnbench ablate BASE --vary
activation=sigmoid,relu``. What the levels do to a spec, and the designs that cross factors,
are in variants.py.

Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnnbench.constraints import check, integer, interval, shown
from cnnbench.model.layers import KINDS as LAYER_KINDS
from cnnbench.model.spec import ModelSpec, SpecError
from cnnbench.train.optim import LEARNING_RATE

DESIGNS = ("factorial", "ofat")
KINDS = ("set", "replace", "insert_after", "repeat", "scale", "training")
TRAINING_TARGETS = ("learning_rate", "batch_size", "optimizer", "epochs")
# Bounds on what a few lines of a study file can ask for; each refusal names its bound.
MAX_VARIANTS = 256  # cells of one ablation's design (factorial: the product of level counts)
MAX_STUDY_VARIANTS = 1_024  # variants of all a study's ablations together
MAX_REPEAT = 16  # copies of a repeated block
MAX_SCALE = 64.0  # a scale factor's largest level (widths stay under layers.MAX_WIDTH too)
REPEAT_COUNT = integer(0, MAX_REPEAT)
SCALE = interval(0, MAX_SCALE, "right")


@dataclass(frozen=True)
class Factor:
    """One factor: what it edits and its levels as (label, value) pairs."""

    name: str
    kind: str
    target: Any  # selector, layer index, block, or training field
    levels: tuple[tuple[str, Any], ...]
    base: str  # label of the level the others vary around
    argument: str | None = None  # for 'set'

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.levels]

    def value(self, label: str) -> Any:
        return dict(self.levels)[label]


# --- parsing a factor ---------------------------------------------------------------------

def level_label(value: Any) -> str:
    """A level's readable label: ``relu``, ``0.1``, ``true``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    return str(value)


def parse_factor(name: str, data: Any, where: str, min_levels: int = 2) -> Factor:
    """Validate one factor's mapping (see the module docstring)."""
    where = f"{where}: factor '{name}'"
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping with one of {', '.join(KINDS)} and "
                        f"'levels'. Got {shown(data)}.")
    kinds = [k for k in KINDS if k in data]
    if len(kinds) != 1:
        raise SpecError(f"{where} must have exactly one of {', '.join(KINDS)}. "
                        f"Got {sorted(map(str, data))}.")
    kind = kinds[0]
    allowed = {kind, "levels", "base"} | ({"layers"} if kind == "set" else set())
    extra = sorted(map(str, set(data) - allowed))
    if extra:
        raise SpecError(f"{where}: unknown field(s) {extra}; a '{kind}' factor has "
                        f"{', '.join(sorted(allowed))}.")
    levels = _levels(data.get("levels"), where, min_levels)
    labels = [lb for lb, _ in levels]
    base = data.get("base", labels[0])
    base = level_label(base) if not isinstance(base, str) else base
    if base not in labels:
        raise SpecError(f"{where}: base level {shown(base)} is not one of its levels {labels}.")
    target = data[kind]
    argument = None
    if kind == "set":
        if not isinstance(target, str):
            raise SpecError(f"{where}: 'set' names the argument to set, e.g. 'activation'. "
                            f"Got {shown(target)}.")
        argument, target = target, data.get("layers", "hidden")
    elif kind == "training":
        if target not in TRAINING_TARGETS:
            raise SpecError(f"{where}: 'training' must be one of "
                            f"{', '.join(TRAINING_TARGETS)}. Got {shown(target)}.")
        for label, v in levels:  # a bad level fails here, before any run of the study
            _check_training_level(target, v, f"{where}: level {label!r}")
    elif kind == "repeat":
        if not (isinstance(target, list) and len(target) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) for i in target)
                and target[0] <= target[1]):
            raise SpecError(f"{where}: 'repeat' takes the block's first and last layer, "
                            f"e.g. [3, 4]. Got {shown(target)}.")
        for label, v in levels:
            check(v, REPEAT_COUNT, "repeat", "a factor", f"{where}: level {label!r}",
                  SpecError)
    elif kind == "scale":
        for label, v in levels:
            check(v, SCALE, "scale", "a factor", f"{where}: level {label!r}", SpecError)
    elif kind in ("replace", "insert_after"):
        for label, v in levels:
            _check_layer_level(kind, v, f"{where}: level {label!r}")
    _distinct_values(levels, kind, target, where)
    return Factor(name, kind, target, levels, base, argument)


def _levels(raw: Any, where: str, min_levels: int) -> tuple[tuple[str, Any], ...]:
    """A factor's (label, value) pairs: distinct labels, at least ``min_levels`` of them and
    at most :data:`MAX_VARIANTS` (a design of one factor has as many variants)."""
    if isinstance(raw, dict):
        levels = tuple((str(k), v) for k, v in raw.items())
    elif isinstance(raw, list):
        levels = tuple((level_label(v), v) for v in raw)
    else:
        raise SpecError(f"{where}: 'levels' must be a list of values or a mapping of "
                        f"label: value. Got {shown(raw)}.")
    labels = [lb for lb, _ in levels]
    if len(levels) > MAX_VARIANTS:
        raise SpecError(f"{where}: {len(levels):,} levels; a factor has at most "
                        f"{MAX_VARIANTS} (split it into several ablations).")
    if len(levels) < min_levels or len(set(labels)) != len(labels):
        raise SpecError(f"{where}: 'levels' needs {min_levels} or more distinct levels. "
                        f"Got {shown(labels)}.")
    return levels


def _distinct_values(levels: Sequence[tuple[str, Any]], kind: str, target: Any,
                     where: str) -> None:
    """Two labels of one value would be one model under two names, compared with itself."""
    def norm(v: Any) -> Any:
        if kind == "training" and target == "optimizer":
            from cnnbench.train.optim import optimizer_of
            name, args = optimizer_of(v, where)
            return [name, sorted(args.items())]
        return v
    seen: list[tuple[str, Any]] = []
    for label, v in levels:
        value = norm(v)
        same = next((lb for lb, x in seen if type(x) is type(value) and x == value), None)
        if same is not None:
            raise SpecError(f"{where}: levels {same!r} and {label!r} have the same value "
                            f"{shown(v)}; each level must be a different model or setting.")
        seen.append((label, value))


def _check_layer_level(kind: str, value: Any, where: str) -> None:
    """A ``replace`` or ``insert_after`` level: a layer as a spec writes it (``Flatten`` or
    ``{Dropout: {rate: 0.5}}``), or none (remove the layer, insert nothing)."""
    if value is None or (isinstance(value, str) and value):
        return
    if (isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str)
            and isinstance(next(iter(value.values())), dict | None)):
        return
    raise SpecError(f"{where}: a '{kind}' level is a layer, e.g. Flatten or "
                    f"{{Dropout: {{rate: 0.5}}}}, or null. Got {shown(value)}.")


def _check_training_level(target: str, value: Any, where: str) -> None:
    """A training factor's level: a learning rate, a batch size or epochs by the constraint
    TrainConfig and the optimizers apply, an optimizer as a study file writes it."""
    if target == "optimizer":
        from cnnbench.train.optim import OptimizerError, optimizer_of
        try:
            optimizer_of(value, where)
        except OptimizerError as e:
            raise SpecError(str(e)) from None
    else:
        from cnnbench.settings import SETTING
        c = LEARNING_RATE if target == "learning_rate" else SETTING[target].constraint
        check(value, c, target, "training", where, SpecError)


# --- layer selectors -----------------------------------------------------------------------

def layer_kind(entry: Any) -> str:
    """A spec entry's kind: ``Conv2D`` for ``Conv2D`` and for ``{Conv2D: {...}}``."""
    return entry if isinstance(entry, str) else next(iter(entry))


_NTH = re.compile(r"-?[1-9][0-9]{0,5}")  # Conv2D#4, Dense#-1: never #0, #+1, #01 or # 1


def select(layers: Sequence[Any], selector: Any, where: str) -> list[int]:
    """1-based indices of the base layers a selector names; never none, never one twice."""
    n = len(layers)
    kinds = [layer_kind(e) for e in layers]
    if isinstance(selector, int) and not isinstance(selector, bool):
        selector = [selector]
    if isinstance(selector, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                          for i in selector):
        bad = [i for i in selector if not 1 <= i <= n]
        if bad:
            raise SpecError(f"{where}: layer index {shown(bad[0])} is outside the base's "
                            f"layers 1..{n}.")
        if not selector or len(set(selector)) != len(selector):
            raise SpecError(f"{where}: a list of layers names each layer once and at least "
                            f"one. Got {selector}.")
        return list(selector)
    if isinstance(selector, str):
        if selector == "hidden":  # every layer with an activation, the output excepted
            chosen = [i + 1 for i, k in enumerate(kinds[:-1])
                      if k in LAYER_KINDS and "activation" in LAYER_KINDS[k].args]
            if not chosen:
                raise SpecError(f"{where}: 'hidden' selects no layer: the base has no layer "
                                f"with an activation before its output layer.")
            return chosen
        return _of_kind(selector, kinds, where)
    raise SpecError(f"{where}: a layer selector is an index, a list of indices, a kind "
                    f"(Conv2D), the n-th of a kind (Conv2D#4) or 'hidden'. "
                    f"Got {shown(selector)}.")


def _of_kind(selector: str, kinds: Sequence[str], where: str) -> list[int]:
    """``Conv2D``: every Conv2D; ``Conv2D#k``: the k-th (1..n) or, k negative, from the end."""
    kind, hash_, nth = selector.partition("#")
    of_kind = [i + 1 for i, k in enumerate(kinds) if k == kind]
    if not of_kind:
        raise SpecError(f"{where}: the base has no {kind} layer (its layers: "
                        f"{', '.join(kinds)}).")
    if not hash_:
        return of_kind
    k = int(nth) if _NTH.fullmatch(nth) else 0
    if not 1 <= abs(k) <= len(of_kind):
        raise SpecError(f"{where}: {shown(selector)}: the base has {len(of_kind)} {kind} "
                        f"layer(s); write {kind}#1..{kind}#{len(of_kind)}, or {kind}#-1 "
                        f"for the last.")
    return [of_kind[k - 1 if k > 0 else k]]


# --- the short form: `cnnbench ablate BASE --vary activation=sigmoid,relu` -----------------

# Factors known by name, for --vary; a name with a dot is SELECTOR.argument (Conv2D#4.use_bias).
SHORTCUTS: dict[str, dict[str, Any]] = {
    "activation": {"set": "activation", "layers": "hidden"},
    "lr": {"training": "learning_rate"},
    "learning_rate": {"training": "learning_rate"},
    "batch_size": {"training": "batch_size"},
    "optimizer": {"training": "optimizer"},
    "width": {"scale": "hidden"},
}
NORM_LEVELS = {"batchnorm": {"BatchNormalization": {}}, "dropout": {"Dropout": {"rate": 0.5}},
               "none": None}


def _scalar(text: str) -> Any:
    from cnnbench.model.spec import parse_yaml
    value = parse_yaml(text, "--vary")
    return text if isinstance(value, dict | list) else value


def parse_vary(text: str, base: ModelSpec) -> tuple[str, dict[str, Any]]:
    """``activation=sigmoid,relu`` -> the factor's name and its study-file mapping.

    ``norm`` replaces the BatchNormalization/Dropout layer right after the last Conv2D (or
    inserts one there) by batchnorm, dropout (rate 0.5), dropout0.2 or none.
    """
    name, eq, values = text.partition("=")
    if not eq or not name or not values:
        raise SpecError(f"--vary {text!r}: expected FACTOR=LEVEL,LEVEL,..., e.g. "
                        f"activation=sigmoid,relu.")
    levels = [_scalar(v) for v in values.split(",")]
    if name == "norm":
        convs = [lay.index for lay in base.layers if lay.kind == "Conv2D"]
        if not convs:
            raise SpecError(f"--vary norm: {base.name} has no Conv2D layer.")
        after = convs[-1]
        nxt = base.layers[after] if after < len(base.layers) else None
        table = NORM_LEVELS | {"dropout0.2": {"Dropout": {"rate": 0.2}}}
        bad = [lv for lv in levels if str(lv) not in table]
        if bad:
            raise SpecError(f"--vary norm: unknown level {bad[0]!r}; known: "
                            f"{', '.join(table)}.")
        lv = {str(k): table[str(k)] for k in levels}
        if nxt is not None and nxt.kind in ("BatchNormalization", "Dropout"):
            return name, {"replace": nxt.index, "levels": lv}
        return name, {"insert_after": after, "levels": lv}
    if name in SHORTCUTS:
        return name, SHORTCUTS[name] | {"levels": levels}
    selector, dot, argument = name.rpartition(".")
    if dot:
        sel: Any = int(selector) if selector.isdigit() else selector
        return name, {"set": argument, "layers": sel, "levels": levels}
    raise SpecError(f"--vary {text!r}: unknown factor '{name}'. Known: "
                    f"{', '.join([*SHORTCUTS, 'norm'])}, or SELECTOR.argument (e.g. "
                    f"Conv2D#4.use_bias=true,false).")
