"""Variants of a model, as data: the levels of factors applied to a base spec, and the designs
that cross them.

An ablation names a base model, a design and its factors (factors.py parses each one)::

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

A ``scale`` of a layer without filters or units and a factor two of whose levels make the
same model in every variant are refused here; a bad factor or selector in factors.py.

Each variant is a full, validated spec named ``BASE[factor=level,...]`` (factorial: every
factor; one-factor-at-a-time: the factor changed, ``BASE[base]`` for the base): its name in
its ablation, which What matters uses. Its runs are keyed under the base model's name
(``ModelSpec.run_name``), so the same layers and settings are the same run whatever the
variant is called or whichever design produced it, and they are stored under one name per
model and settings (``ablation.canonical_names``: ``CNN_MNIST_2`` for CNN_MNIST_2 itself).

Bounds (each refusal names its own): :data:`MAX_VARIANTS` variants an ablation, counted before
any is built; :data:`MAX_STUDY_VARIANTS` a study; :data:`MAX_REPEAT` copies of a block;
a scale in (0, :data:`MAX_SCALE`]. They live in factors.py and are importable from here.

Nothing here imports torch.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cnnbench.model.layers import KINDS as LAYER_KINDS
from cnnbench.model.spec import ModelSpec, SpecError, build_spec, get_spec
from cnnbench.study.factors import (
    DESIGNS,
    KINDS,
    MAX_REPEAT,
    MAX_SCALE,
    MAX_STUDY_VARIANTS,
    MAX_VARIANTS,
    NORM_LEVELS,
    SHORTCUTS,
    TRAINING_TARGETS,
    Factor,
    layer_kind,
    level_label,
    parse_factor,
    parse_vary,
    select,
)

__all__ = [  # the factor names are importable from here, as before factors.py held them
    "DESIGNS", "KINDS", "MAX_REPEAT", "MAX_SCALE", "MAX_STUDY_VARIANTS", "MAX_VARIANTS",
    "NORM_LEVELS", "SHORTCUTS", "TRAINING_TARGETS", "Ablation", "Factor", "Variant",
    "apply_levels", "build_ablation", "design_cells", "design_size", "identity",
    "level_label", "params_table", "parse_factor", "parse_vary", "same_run", "select",
    "unique_runs", "variant_name",
]



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



# --- applying levels ------------------------------------------------------------------------

@dataclass
class _Slot:
    base_index: int | None  # the base layer this came from; None for an inserted one
    entry: Any  # {Kind: {args}}


def _normalise(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {entry: {}}
    kind = next(iter(entry))
    return {kind: dict(entry[kind] or {})}


# Argument edits first, then replacements and insertions, then repeats.
_ORDER = {"set": 0, "scale": 0, "training": 0, "replace": 1, "insert_after": 1, "repeat": 2}


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
    for f in sorted(factors, key=lambda f: _ORDER[f.kind]):
        value = copy.deepcopy(f.value(levels[f.name]))
        fw = f"{where}: factor '{f.name}'"
        if f.kind == "training":
            training[f.target] = value
        elif f.kind in ("set", "scale"):
            _edit_args(slots, base_layers, f, value, fw)
        elif f.kind in ("replace", "insert_after"):
            _replace_or_insert(slots, base_layers, f, value, fw)
        elif f.kind == "repeat":
            _repeat(slots, base_layers, f, value, fw)
    data = {"name": name, "input_shape": list(raw.get("input_shape", base.input_shape)),
            "layers": [s.entry for s in slots]}
    try:
        spec = build_spec(data, source=where)
    except SpecError as e:
        raise SpecError(f"{e} (levels: {dict(levels)})") from e
    return replace(spec, run_name=base.run_name or base.name), training


def _edit_args(slots: list[_Slot], base_layers: Sequence[Any], f: Factor, value: Any,
               where: str) -> None:
    """A ``set`` or ``scale`` level on the base layers its selector names, wherever they are."""
    chosen = set(select(base_layers, f.target, where))
    if f.kind == "scale":
        chosen = _scalable(base_layers, chosen, f.target, where)
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


def _replace_or_insert(slots: list[_Slot], base_layers: Sequence[Any], f: Factor, value: Any,
                       where: str) -> None:
    """A ``replace`` (``None``: remove) or ``insert_after`` level at the one layer named."""
    chosen_one = select(base_layers, f.target, where)
    if len(chosen_one) != 1:
        raise SpecError(f"{where}: '{f.kind}' needs one layer; {f.target!r} selects "
                        f"{len(chosen_one)}.")
    index = chosen_one[0]
    at = next(i for i, s in enumerate(slots) if s.base_index == index)
    new = [] if value is None else [_Slot(None, _normalise(value))]
    if f.kind == "replace":
        slots[at:at + 1] = new
    else:
        slots[at + 1:at + 1] = new


def _repeat(slots: list[_Slot], base_layers: Sequence[Any], f: Factor, value: int,
            where: str) -> None:
    """A ``repeat`` level: the block's layers (as edited so far) ``value`` times over."""
    first, last = f.target
    select(base_layers, [first, last], where)
    block = [i for i, s in enumerate(slots) if s.base_index is not None
             and first <= s.base_index <= last]
    if not block:
        raise SpecError(f"{where}: layers {first}-{last} were removed by another factor.")
    lo, hi = block[0], block[-1] + 1
    slots[lo:hi] = [copy.deepcopy(s) for _ in range(value) for s in slots[lo:hi]]


def _scalable(layers: Sequence[Any], chosen: set[int], selector: Any, where: str) -> set[int]:
    """The chosen layers a scale multiplies: those with filters or units. 'hidden' skips the
    others (an Activation layer); a selector that names one of them is refused."""
    def width(i: int) -> bool:
        kind = layer_kind(layers[i - 1])
        return kind in LAYER_KINDS and LAYER_KINDS[kind].width is not None
    without = sorted(i for i in chosen if not width(i))
    if not chosen - set(without) or (without and selector != "hidden"):
        i = without[0]
        raise SpecError(f"{where}: 'scale' multiplies filters or units, but layer {i} "
                        f"({layer_kind(layers[i - 1])}) has neither; select layers with "
                        f"filters or units (Conv2D, SeparableConv2D, Dense).")
    return chosen - set(without)


# --- designs ------------------------------------------------------------------------------

def variant_name(base: str, levels: Mapping[str, str]) -> str:
    """``CNN_MNIST_2[activation=relu,norm=none]``; ``CNN_MNIST_2[base]`` when none is named.

    A selector's ``#`` is written ``_`` (``Dense#1.units`` -> ``Dense_1.units``): the name
    becomes file names, and its rule (model.spec.NAME_RULE) has no ``#``."""
    inner = ",".join(f"{k.replace('#', '_')}={v}" for k, v in levels.items()) or "base"
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
        out: list[tuple[dict[str, str], dict[str, str]]] = [(dict(base), {})]
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
    try:
        base = get_spec(base_name)
    except SpecError as e:  # name the study file, the ablation and the field
        raise SpecError(f"{where}.base: {e}") from None
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



def params_table(ablation: Ablation) -> list[tuple[str, int, str]]:
    """(variant, parameters, layers) for listing."""
    return [(v.name, v.spec.params, v.spec.shorthand()) for v in ablation.variants]
