"""Variants of a model, as data: factors that edit a base spec, and the designs that cross them.

An ablation names a base model, a design and its factors::

    base: CNN_MNIST_2
    design: factorial                 # or ofat: one factor at a time around the base
    factors:
      activation: {set: activation, layers: hidden, levels: [sigmoid, relu]}
      norm:                           # the layer after the 4th conv (layer 6 of the base)
        replace: 6
        levels: {batchnorm: {BatchNormalization: {}}, dropout: {Dropout: {rate: 0.5}},
                 none: null}
      depth: {repeat: [4, 5], levels: {conv4: 1, conv2: 0}}   # the block of layers 4-5
      width: {scale: hidden, levels: [0.5, 1, 2]}             # filters / units
      lr: {training: learning_rate, levels: [1.0, 0.1]}

Factor kinds (one key each): ``set`` an argument on the layers ``layers`` selects;
``replace`` a layer by another or remove it (``null``); ``insert_after`` a layer; ``repeat`` a
block of layers 0 (dropped), 1 or more times; ``scale`` the filters/units of selected layers;
``training``: ``learning_rate``, ``batch_size``, ``optimizer`` or ``epochs``. A factor's
``base`` level (default: its first) is the one the other factors vary around.

Layer selectors name layers of the **base** spec: an index (1-based, as the spec's lines are
counted) or a list of distinct ones, a kind (``Conv2D``: all of them), the n-th of a kind
(``Conv2D#1`` .. ``Conv2D#n``, or from the end ``Conv2D#-1`` the last; never ``#0``), or
``hidden``: every layer with an activation but the output layer. A selector that picks no
layer, a ``scale`` of a layer without filters or units, two levels of one value, and a factor
two of whose levels make the same model in every variant are refused.

Each variant is a full, validated spec named ``BASE[factor=level,...]`` (factorial: every
factor; one-factor-at-a-time: the factor changed, ``BASE[base]`` for the base): its name in
its ablation, which What matters uses. Its runs are keyed under the base model's name
(``ModelSpec.run_name``), so the same layers and settings are the same run whatever the
variant is called or whichever design produced it, and they are stored under one name per
model and settings (``ablation.canonical_names``: ``CNN_MNIST_2`` for CNN_MNIST_2 itself).

Bounds (each refusal names its own): :data:`MAX_VARIANTS` variants an ablation, counted before
any is built; :data:`MAX_STUDY_VARIANTS` a study; :data:`MAX_REPEAT` copies of a block;
a scale in (0, :data:`MAX_SCALE`].

Nothing here imports torch.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cnnbench.constraints import check, integer, interval, shown
from cnnbench.model.layers import KINDS as LAYER_KINDS
from cnnbench.model.spec import ModelSpec, SpecError, build_spec, get_spec
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


@dataclass(frozen=True)
class Variant:
    """One cell of a design: a full spec, its level of every factor, its training settings."""

    name: str
    base: str
    spec: ModelSpec
    levels: Mapping[str, str]  # factor -> level label, every factor of its ablation
    training: Mapping[str, Any] = field(default_factory=dict)  # learning_rate, batch_size, ...


@dataclass(frozen=True)
class Ablation:
    """A base model, a design, its factors and the variants they make."""

    name: str
    base: ModelSpec
    design: str
    factors: tuple[Factor, ...]
    variants: tuple[Variant, ...]

    @property
    def base_levels(self) -> dict[str, str]:
        return {f.name: f.base for f in self.factors}

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(name)


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


# --- applying it ----------------------------------------------------------------------------

def _layer_kind(entry: Any) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


_NTH = re.compile(r"-?[1-9][0-9]{0,5}")  # Conv2D#4, Dense#-1: never #0, #+1, #01 or # 1


def select(layers: Sequence[Any], selector: Any, where: str) -> list[int]:
    """1-based indices of the base layers a selector names; never none, never one twice."""
    n = len(layers)
    kinds = [_layer_kind(e) for e in layers]
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


@dataclass
class _Slot:
    base_index: int | None  # the base layer this came from; None for an inserted one
    entry: Any  # {Kind: {args}}


def _entry(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    return {kind: dict(args)}


def _normalise(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {entry: {}}
    kind = next(iter(entry))
    return {kind: dict(entry[kind] or {})}


def apply_levels(base: ModelSpec, factors: Sequence[Factor], levels: Mapping[str, str],
                 name: str) -> tuple[ModelSpec, dict[str, Any]]:
    """The base spec with each factor at its level: the variant's spec and training edits.

    Argument edits come first, then replacements and insertions, then repeats (so a repeated
    block carries the edited arguments); selectors always name the base's layers.
    """
    raw = base.raw or {"name": base.name, "input_shape": list(base.input_shape),
                       "layers": [{lay.kind: lay.args} for lay in base.layers]}
    base_layers = list(raw["layers"])
    slots = [_Slot(i + 1, _normalise(copy.deepcopy(e))) for i, e in enumerate(base_layers)]
    training: dict[str, Any] = {}
    where = f"variant {name}"
    order = {"set": 0, "scale": 0, "training": 0, "replace": 1, "insert_after": 1, "repeat": 2}
    for f in sorted(factors, key=lambda f: order[f.kind]):
        value = copy.deepcopy(f.value(levels[f.name]))
        fw = f"{where}: factor '{f.name}'"
        if f.kind == "training":
            training[f.target] = value
        elif f.kind in ("set", "scale"):
            chosen = set(select(base_layers, f.target, fw))
            if f.kind == "scale":
                chosen = _scalable(base_layers, chosen, f.target, fw)
            for s in slots:
                if s.base_index not in chosen:
                    continue
                kind = next(iter(s.entry))
                args = s.entry[kind]
                if f.kind == "set":
                    args[f.argument] = value
                else:
                    key = LAYER_KINDS[kind].width  # filters, units
                    args[key] = max(1, int(round(args[key] * value)))
        elif f.kind in ("replace", "insert_after"):
            chosen_one = select(base_layers, f.target, fw)
            if len(chosen_one) != 1:
                raise SpecError(f"{fw}: '{f.kind}' needs one layer; {f.target!r} selects "
                                f"{len(chosen_one)}.")
            index = chosen_one[0]
            at = next(i for i, s in enumerate(slots) if s.base_index == index)
            new = [] if value is None else [_Slot(None, _normalise(value))]
            if f.kind == "replace":
                slots[at:at + 1] = new
            else:
                slots[at + 1:at + 1] = new
        elif f.kind == "repeat":
            first, last = f.target
            select(base_layers, [first, last], fw)
            block = [i for i, s in enumerate(slots) if s.base_index is not None
                     and first <= s.base_index <= last]
            if not block:
                raise SpecError(f"{fw}: layers {first}-{last} were removed by another factor.")
            lo, hi = block[0], block[-1] + 1
            slots[lo:hi] = [copy.deepcopy(s) for _ in range(value) for s in slots[lo:hi]]
    data = {"name": name, "input_shape": list(raw.get("input_shape", base.input_shape)),
            "layers": [s.entry for s in slots]}
    try:
        spec = build_spec(data, source=where)
    except SpecError as e:
        raise SpecError(f"{e} (levels: {dict(levels)})") from e
    return replace(spec, run_name=base.run_name or base.name), training


def _scalable(layers: Sequence[Any], chosen: set[int], selector: Any, where: str) -> set[int]:
    """The chosen layers a scale multiplies: those with filters or units. 'hidden' skips the
    others (an Activation layer); a selector that names one of them is refused."""
    def width(i: int) -> bool:
        kind = _layer_kind(layers[i - 1])
        return kind in LAYER_KINDS and LAYER_KINDS[kind].width is not None
    without = sorted(i for i in chosen if not width(i))
    if not chosen - set(without) or (without and selector != "hidden"):
        i = without[0]
        raise SpecError(f"{where}: 'scale' multiplies filters or units, but layer {i} "
                        f"({_layer_kind(layers[i - 1])}) has neither; select layers with "
                        f"filters or units (Conv2D, SeparableConv2D, Dense).")
    return chosen - set(without)


# --- designs ------------------------------------------------------------------------------

def variant_name(base: str, levels: Mapping[str, str]) -> str:
    """``CNN_MNIST_2[activation=relu,norm=none]``; ``CNN_MNIST_2[base]`` when none is named."""
    inner = ",".join(f"{k}={v}" for k, v in levels.items()) or "base"
    return f"{base}[{inner}]"


def design_cells(factors: Sequence[Factor], design: str) -> list[tuple[dict[str, str],
                                                                        dict[str, str]]]:
    """(every factor's level, the levels named in the variant's name) for each cell."""
    base = {f.name: f.base for f in factors}
    if design == "factorial":
        cells = [dict(zip(base, combo, strict=True))
                 for combo in itertools.product(*(f.labels for f in factors))]
        return [(c, c) for c in cells]
    if design == "ofat":
        out = [(dict(base), {})]
        for f in factors:
            for label in f.labels:
                if label != f.base:
                    out.append((base | {f.name: label}, {f.name: label}))
        return out
    raise SpecError(f"unknown design {design!r}; known: {', '.join(DESIGNS)}.")


def build_ablation(data: Any, where: str, base_dir: Any = None,
                   budget: int = MAX_STUDY_VARIANTS) -> Ablation:
    """Validate one ablation mapping (base, design, factors) and make its variants, at most
    ``budget`` of them (what the study's other ablations left of MAX_STUDY_VARIANTS)."""
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping with 'base', 'design' and 'factors'. "
                        f"Got {data!r}.")
    unknown = sorted(set(data) - {"name", "base", "design", "factors", "description"})
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; an ablation has name, base, "
                        f"design, factors and optionally description.")
    base_name = data.get("base")
    if not isinstance(base_name, str):
        raise SpecError(f"{where}: 'base' must name a model (built-in or spec file). "
                        f"Got {base_name!r}.")
    if base_dir is not None and base_name.endswith((".yaml", ".yml")):
        base_name = str(base_dir / base_name)
    base = get_spec(base_name)
    design = data.get("design", "factorial")
    if design not in DESIGNS:
        raise SpecError(f"{where}: design must be one of {', '.join(DESIGNS)}. Got {design!r}.")
    raw_factors = data.get("factors")
    if not isinstance(raw_factors, dict) or not raw_factors:
        raise SpecError(f"{where}: 'factors' must be a non-empty mapping of factor name to "
                        f"its edit and levels. Got {raw_factors!r}.")
    factors = tuple(parse_factor(str(k), v, where) for k, v in raw_factors.items())
    _check_size(factors, design, where, budget)
    variants = []
    for levels, named in design_cells(factors, design):
        name = variant_name(base.name, named)
        try:
            spec, training = apply_levels(base, factors, levels, name)
        except SpecError as e:  # name the study file and the ablation too
            raise SpecError(f"{where}: {e}") from None
        variants.append(Variant(name, base.name, spec, levels, training))
    _check_levels_matter(factors, variants, where)
    name = data.get("name") or f"{base.name}-{design}"
    return Ablation(str(name), base, design, factors, tuple(variants))


def design_size(factors: Sequence[Factor], design: str, cap: int = 10**9) -> int:
    """How many variants a design makes, counted before any is built; past ``cap`` the count
    stops there (a product of many factors' levels is never computed in full)."""
    if design != "factorial":
        return 1 + sum(len(f.levels) - 1 for f in factors)
    n = 1
    for f in factors:
        n *= len(f.levels)
        if n > cap:
            return cap + 1
    return n


def _check_size(factors: Sequence[Factor], design: str, where: str, budget: int) -> None:
    n = design_size(factors, design)
    if n <= min(MAX_VARIANTS, budget):
        return
    count = f"{n:,}" if n <= 10**9 else "over 1,000,000,000"
    levels = " x ".join(str(len(f.levels)) for f in factors)
    if n > MAX_VARIANTS:
        raise SpecError(f"{where}: the {design} design of {len(factors)} factor(s) ({levels} "
                        f"levels) makes {count} variants; an ablation makes at most "
                        f"{MAX_VARIANTS} (cnnbench.study.variants.MAX_VARIANTS): use fewer "
                        f"levels, design: ofat, or several ablations.")
    raise SpecError(f"{where}: its {count} variants take the study past "
                    f"{MAX_STUDY_VARIANTS:,} variants in all (cnnbench.study.variants."
                    f"MAX_STUDY_VARIANTS): split the ablations into several studies.")


def identity(variant: Variant) -> str:
    """What a variant's runs are made of, spelled one way: its layers (keyed under its base's
    name, as the run key is) and its training edits."""
    from cnnbench.store.run_store import canonical_json, resolved_spec
    return canonical_json([resolved_spec(variant.spec), _training_key(variant.training)])


def _training_key(training: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in training.items():
        if key == "optimizer":  # 'Adadelta' and {Adadelta: {}} are one optimizer
            from cnnbench.train.optim import optimizer_of
            name, args = optimizer_of(value, "")
            out[key] = [name, sorted(args.items())]
        else:
            out[key] = float(value) if key == "learning_rate" else value
    return out


def _check_levels_matter(factors: Sequence[Factor], variants: Sequence[Variant],
                         where: str) -> None:
    """Refuse a factor two of whose levels make the same model and settings in every pair of
    variants that differ in it alone: a selector that picks nothing it changes, a scale of
    layers it rounds back, an edit the base already has."""
    keyed = [(v.levels, identity(v)) for v in variants]
    for f in factors:
        pairs: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for levels, key in keyed:
            rest = tuple((k, x) for k, x in levels.items() if k != f.name)
            pairs.setdefault(rest, {})[levels[f.name]] = key
        for a, b in itertools.combinations(f.labels, 2):
            if not any(a in g and b in g and g[a] != g[b] for g in pairs.values()):
                raise SpecError(f"{where}: factor '{f.name}': levels {a!r} and {b!r} make the "
                                f"same model with the same settings in every variant; each "
                                f"level must change something (does the factor select the "
                                f"layers meant?).")


def unique_runs(ablations: Sequence[Ablation]) -> list[Variant]:
    """Every variant once per distinct (layers, training edits): the runs to train."""
    seen: dict[str, Variant] = {}
    for a in ablations:
        for v in a.variants:
            seen.setdefault(identity(v), v)
    return list(seen.values())


def same_run(a: Variant, b: Variant) -> bool:
    """Whether two variants are one run: the same layers and the same training edits."""
    return identity(a) == identity(b)


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


def params_table(ablation: Ablation) -> list[tuple[str, int, str]]:
    """(variant, parameters, layers) for listing."""
    return [(v.name, v.spec.params, v.spec.shorthand()) for v in ablation.variants]
