"""An ablation study from plan to verdicts: which runs to train, and what they show.

``cnnbench run STUDY`` with ``ablations`` (and ``cnnbench ablate``) trains every distinct
variant once per seed (grouped by their training settings, since one group shares one
TrainConfig), then :func:`analyse` turns the stored runs into effects, interactions, claim
verdicts and the "what matters" sentences of the report. No torch here: the report reads the
store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cnnbench.analysis import effects
from cnnbench.analysis.claims import Verdict, judge
from cnnbench.analysis.effects import Effect, Interaction, Observation
from cnnbench.analysis.stats import ALPHA, fmt_p
from cnnbench.model.spec import SpecError, check_name
from cnnbench.store.records import RunRecord
from cnnbench.store.run_store import canonical_json, resolved_spec, run_id, run_key
from cnnbench.study.variants import Ablation, Variant, apply_levels, variant_name
from cnnbench.train.optim import DEFAULT as DEFAULT_OPTIMIZER
from cnnbench.train.optim import resolve_optimizer, with_learning_rate


def variant_config(base: Mapping[str, Any], variant: Variant | None = None) -> dict[str, Any]:
    """TrainConfig keyword arguments of a variant (None: the base): the study's, with its
    training edits, the optimizer always named with all its arguments, so one setting is
    one key however it was reached."""
    from cnnbench.train.optim import optimizer_of

    kw = dict(base)
    t = dict(variant.training) if variant is not None else {}
    label = f"variant {variant.name}" if variant is not None else "the base"
    if "optimizer" in t:
        name, args = optimizer_of(t.pop("optimizer"), f"{label}: optimizer")
        kw.update(optimizer=name, optimizer_args=tuple(args.items()))
    name = kw.setdefault("optimizer", DEFAULT_OPTIMIZER)
    kw["optimizer_args"] = tuple(resolve_optimizer(name, kw.get("optimizer_args"), "").items())
    if "learning_rate" in t:  # of whichever optimizer the variant trains with
        kw["optimizer_args"] = with_learning_rate(name, kw["optimizer_args"],
                                                  t.pop("learning_rate"),
                                                  f"{label}: learning_rate")
    kw.update(t)  # batch_size, epochs
    return kw


@dataclass
class Group:
    """Variants that share one TrainConfig (but the seed): one StudyRunner each seed. Each
    variant's ``spec.name`` is its model's one name in the study (:func:`canonical_names`);
    ``aliases``: that name -> the ``ablation: variant`` names it goes by in the study."""

    label: str
    config: dict[str, Any]
    variants: list[Variant]
    aliases: dict[str, list[str]] = field(default_factory=dict)


def groups(ablations: Sequence[Ablation], base: Mapping[str, Any]) -> list[Group]:
    """Every distinct run once (the same layers and the same resolved training settings,
    however the variants are named or whichever ablation made them), grouped by settings,
    each under its one name."""
    names = canonical_names(ablations, base)
    out: dict[str, Group] = {}
    seen: set[tuple[str, str]] = set()
    for a in ablations:
        for v in a.variants:
            kw = variant_config(base, v)
            key = canonical_json(kw)
            spec_key = canonical_json(resolved_spec(v.spec))
            name = names[(a.name, v.name)]
            if key not in out:
                label = ("base" if key == canonical_json(variant_config(base)) else
                         ",".join(f"{k}={x}" for k, x in sorted(v.training.items())))
                out[key] = Group(label, kw, [])
            out[key].aliases.setdefault(name, []).append(f"{a.name}: {v.name}")
            if (key, spec_key) in seen:
                continue
            seen.add((key, spec_key))
            spec = replace(v.spec, name=name, raw=dict(v.spec.raw) | {"name": name})
            out[key].variants.append(replace(v, spec=spec))
    return list(out.values())


def canonical_names(ablations: Sequence[Ablation], base: Mapping[str, Any]
                    ) -> dict[tuple[str, str], str]:
    """(ablation, variant) -> the one name its model and settings go by in the study: the
    base model's own name when it is the base model under the study's settings, else the
    base's name with the levels that change it (``CNN_MNIST_2[activation=relu]``), whichever
    ablation made it. The first name a model gets is its name; its other names are aliases.
    Two different models or settings under one name are refused, naming both ablations."""
    out: dict[tuple[str, str], str] = {}
    by_run: dict[tuple[str, str], str] = {}  # run (spec, settings) -> its name
    by_name: dict[str, tuple[tuple[str, str], str, str]] = {}  # name -> run, ablation, variant
    for a in ablations:
        changes = _levels_that_change(a, base)
        for v in a.variants:
            run = _run_of(v, base)
            parts = {f.name: v.levels[f.name] for f in a.factors
                     if changes[(f.name, v.levels[f.name])]}
            name = variant_name(a.base.name, parts) if parts else a.base.name
            check_name(name, f"ablation '{a.name}': variant {v.name}", "name")
            other = by_name.setdefault(name, (run, a.name, v.name))
            if other[0] != run:
                raise SpecError(_clash(name, (other[1], other[2]), (a.name, v.name)))
            out[(a.name, v.name)] = by_run.setdefault(run, name)
    return out


def _clash(name: str, first: tuple[str, str], second: tuple[str, str]) -> str:
    (a1, v1), (a2, v2) = first, second
    who = (f"ablation '{a1}' makes two different models" if a1 == a2 else
           f"ablations '{a1}' and '{a2}' make two different models")
    return (f"{who} (layers or settings) both named {name}: {a1}'s {v1} and {a2}'s {v2}; "
            f"rename a factor or a level of one so that each model has its own name.")


def _run_of(v: Variant, base: Mapping[str, Any]) -> tuple[str, str]:
    """What a variant trains: its resolved spec and its resolved settings."""
    return canonical_json(resolved_spec(v.spec)), canonical_json(variant_config(base, v))


def _levels_that_change(a: Ablation, base: Mapping[str, Any]) -> dict[tuple[str, str], bool]:
    """(factor, level) -> whether that level alone makes another model or setting than the
    base model's under the study's settings (a level equal to the base's is not named)."""
    plain = Variant(a.base.name, a.base.name, a.base, {})
    reference = _run_of(plain, base)
    out = {}
    for f in a.factors:
        for label in f.labels:
            try:
                spec, training = apply_levels(a.base, [f], {f.name: label}, a.base.name)
            except SpecError:  # valid only with the other factors: it changes the model
                out[(f.name, label)] = True
                continue
            alone = Variant(a.base.name, a.base.name, spec, {f.name: label}, training)
            out[(f.name, label)] = _run_of(alone, base) != reference
    return out


def variant_run_id(variant: Variant, config: Any, fingerprint: str) -> str:
    """The run id a variant trains under with this TrainConfig (seed included)."""
    return run_id(run_key(resolved_spec(variant.spec), config.to_dict(), fingerprint))


@dataclass
class AblationResult:
    """One ablation's runs and what they show."""

    ablation: Ablation
    observations: list[Observation]
    effects: dict[str, list[Effect]]  # metric -> effects
    interactions: dict[str, list[Interaction]]
    seeds_per_cell: dict[str, int]  # variant -> finished runs
    stuck: dict[str, tuple[int, int]] = field(default_factory=dict)  # variant -> (stuck, runs)
    gradient: dict[str, float] = field(default_factory=dict)  # variant -> first/top, median
    best_epochs: dict[str, list[int]] = field(default_factory=dict)  # by validation loss
    # variant -> (epochs trained, epochs asked) of each finished run, seeds in order
    epochs_run: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def stopped_early(self, variant: str) -> list[int]:
        """The epochs after which early stopping ended this variant's runs (those it ended)."""
        return [done for done, asked in self.epochs_run.get(variant, []) if done < asked]

    def sentences(self) -> list[str]:
        a = self.ablation
        cells = sorted(set(self.seeds_per_cell.values()))
        per = (f"{cells[0]}" if len(cells) == 1 else f"{cells[0]}-{cells[-1]}") if cells else "0"
        design = "full factorial" if a.design == "factorial" else "one factor at a time"
        out = [f"{a.name}: {design} around {a.base.name}, {len(a.variants)} variants, "
               f"{per} finished seed(s) per variant."]
        for e in self.effects.get("acc", []):
            loss = next((x for x in self.effects.get("loss", [])
                         if (x.factor, x.level) == (e.factor, e.level)), None)
            s = effects.sentence(e)
            if loss is not None:
                s = s.rstrip(".") + f"; test loss {loss.describe()}."
            out.append(s)
        for i in self.interactions.get("acc", []):
            word = ("the effect of one depends on the other" if i.p_holm < ALPHA
                    else "no interaction the seeds can separate from noise")
            out.append(f"{i.a} x {i.b} interaction on test accuracy: Holm "
                       f"{fmt_p(i.p_holm)} (F test): {word}.")
        for v in self.epochs_run:
            stopped = self.stopped_early(v)
            if stopped:
                asked = self.epochs_run[v][0][1]
                out.append(f"{v}: early stopping ended {len(stopped)} of "
                           f"{len(self.epochs_run[v])} runs, after epoch(s) "
                           f"{', '.join(map(str, stopped))} of {asked}.")
        # the stuck sentences come last: the report's What matters leaves them to Diagnosis
        for v, (k, n) in self.stuck.items():
            if k:
                g = self.gradient.get(v)
                grad = (f"; median gradient at the first layer {g:.1e} of the largest layer's"
                        if g is not None and math.isfinite(g) else "")
                out.append(f"{v}: stuck at chance in {k} of {n} seeds{grad}.")
        return out


def _first_over_top(norms: Mapping[str, float] | None) -> float:
    vals = [v for v in (norms or {}).values() if math.isfinite(v)]
    if len(vals) < 2 or max(vals) <= 0:
        return math.nan
    return vals[0] / max(vals)


def analyse(ablations: Sequence[Ablation], runs: Mapping[tuple[str, str, int], RunRecord],
            y_test: Any, num_classes: int = 10) -> list[AblationResult]:
    """Effects per ablation from its runs: ``runs[(ablation, variant, seed)]`` -> record."""
    import numpy as np

    from cnnbench.analysis.diagnosis import detect_stuck
    from cnnbench.data.holdout import best_epoch

    out = []
    for a in ablations:
        obs, per_cell, stuck, grads, best, ran = [], {}, {}, {}, {}, {}
        for v in a.variants:
            recs = [r for (an, vn, _), r in runs.items() if an == a.name and vn == v.name]
            ok = [r for r in recs if r.finished]
            per_cell[v.name] = len(ok)
            at_chance = [detect_stuck(r, y_test, num_classes) is not None for r in ok]
            stuck[v.name] = (sum(at_chance), len(ok))
            ratios = [_first_over_top(r.grad_norms) for r in recs if r.grad_norms]
            ratios = [x for x in ratios if math.isfinite(x)]
            if ratios:
                grads[v.name] = float(np.median(ratios))
            best[v.name] = [best_epoch(r.history["val_loss"]) for r in ok]
            ran[v.name] = [(len(r.history["loss"]), int(r.config.get("epochs") or
                                                       len(r.history["loss"])))
                           for r in sorted(ok, key=lambda r: r.seed)]
            obs += [effects.Observation(v.name, dict(v.levels), r.seed, r.test_accuracy,
                                        r.test_loss, at)
                    for r, at in zip(ok, at_chance, strict=True)]
        eff, inter = {}, {}
        for metric in effects.METRICS:
            if a.design == "factorial":
                eff[metric], inter[metric] = effects.factorial_effects(obs, a.base_levels, metric)
            else:
                eff[metric], inter[metric] = effects.ofat_effects(obs, a.base_levels, metric), []
        out.append(AblationResult(a, obs, eff, inter, per_cell, stuck, grads, best, ran))
    return out


def verdicts(claims: Sequence[Any], results: Sequence[AblationResult]) -> list[Verdict]:
    by_name = {r.ablation.name: r for r in results}
    return [judge(c, by_name[c.ablation].observations) for c in claims if c.ablation in by_name]


def run_map(ablations: Sequence[Ablation], base: Mapping[str, Any], seeds: Sequence[int],
            precision: str, fingerprint: str) -> dict[tuple[str, str, int], str]:
    """(ablation, variant, seed) -> the run id it trains under: every variant of every
    ablation, so a variant two ablations share maps to the same run from both."""
    from cnnbench.train.engine import TrainConfig

    out = {}
    for a in ablations:
        for v in a.variants:
            kw = variant_config(base, v)
            for seed in seeds:
                cfg = TrainConfig(seed=seed, precision=precision, **kw)
                out[(a.name, v.name, seed)] = variant_run_id(v, cfg, fingerprint)
    return out

