"""Factor effects with their uncertainty, from a designed set of runs (variants.py).

The methods (stated in the report with :data:`METHOD_NOTE`):

* **full factorial**: an ordinary least squares model of per-run test accuracy (and loss) on
  the categorical factors (statsmodels' formula API, ``C(factor, Treatment(base))``). A
  factor's main effect per level is its coefficient in the additive model: in a balanced
  design, the level's mean minus the base level's, averaged over the other factors' levels.
  Interactions: the F test of each two-factor interaction in the model with all of them
  (type II ANOVA).
* **one factor at a time**: each level's runs against the base variant's runs, Welch's
  t-test (unequal variances), its 95 % interval from the Welch-Satterthwaite degrees of
  freedom.
* Holm's step-down correction over every test of one ablation and one metric.
* Two levels stuck at chance in every seed (each run gives nearly the same answer whatever
  the image) are set aside, not tested: they differ only in the class each leans to, which
  says nothing about learning. Such a comparison enters Holm at p 1, so it never loosens the others.

An interval is a 95 % confidence interval for the difference a retrained network would show
on this test set, with the seed-to-seed spread as the noise; it says nothing about other data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from cnnbench.analysis.stats import ALPHA, fmt_p, holm

METRICS = {"acc": ("test accuracy", "points"), "loss": ("test loss", "")}

METHOD_NOTE = (
    "Full factorial designs: an ordinary least squares model of per-run test accuracy (and "
    "loss) on the factors as categories (statsmodels, C(factor) with the base level as "
    "reference); a level's effect is its coefficient in the additive model, which in a "
    "balanced design is its mean minus the base level's, averaged over the other factors. "
    "Two-factor interactions: F tests in the model with all of them (type II). "
    "One-factor-at-a-time designs: each level's runs against the base variant's, Welch's "
    "t-test. Within a claim, comparisons with the other factors held fixed use Welch's test "
    "in each cell. p-values are Holm-adjusted over every test of one ablation (and of one "
    "claim), each p saying which; the report's pairwise table adjusts over its model pairs "
    "instead (a different family, and Welch's test between two variants rather than a "
    "coefficient of the whole design), so the same two variants can have another p there. "
    "'Not separable' means the adjusted p is 0.05 or more: the seeds cannot tell the "
    "levels apart, which is not the same as the levels being equal. A 95 % interval is for "
    "the difference retrained networks show on this test set, the seed-to-seed spread being "
    "the noise; intervals are not adjusted for the number of tests, the p-values are, so an "
    "interval can exclude 0 while its adjusted p is above 0.05. Two variants stuck in every "
    "seed (Diagnosis' rule) are set aside, not tested (a stuck network scores the share of the "
    "class it leans to, so their gap says nothing about learning); each enters Holm at p 1.")


@dataclass(frozen=True)
class Observation:
    """One finished run of one variant."""

    variant: str
    levels: Mapping[str, str]
    seed: int
    acc: float  # test accuracy, fraction
    loss: float
    stuck: bool = False  # at chance: analysis.diagnosis.detect_stuck


@dataclass
class Effect:
    """``level`` minus ``reference`` of ``factor`` on ``metric`` (accuracy in points)."""

    factor: str
    level: str
    reference: str
    metric: str  # "acc" or "loss"
    estimate: float
    ci: tuple[float, float]
    pvalue: float
    n: int
    n_ref: int
    method: str  # "ols" or "welch"
    within: dict[str, str] = field(default_factory=dict)  # other factors held at
    p_holm: float = math.nan
    # What p_holm is adjusted over, in words ("the 3 tests of ablation depth"): the same two
    # variants get another p in the report's pairwise table, adjusted over its model pairs.
    family: str = ""
    both_stuck: bool = False  # every run of both sides stuck at chance: set aside, untested

    @property
    def separable(self) -> bool:
        return bool(self.p_holm < ALPHA) and not self.both_stuck

    def describe(self) -> str:
        """``+0.52 points (95 % CI 0.10 to 0.94, Holm p=0.03 over the 3 tests of ablation
        depth, 3 vs 3 runs)``."""
        unit = " points" if self.metric == "acc" else ""
        digits = 2 if self.metric == "acc" else 4
        lo, hi = self.ci
        ci = ("no interval (fewer than two runs a side, or no spread)" if math.isnan(lo)
              else f"95 % CI {lo:+.{digits}f} to {hi:+.{digits}f}")
        over = f" over {self.family}" if self.family else ""
        if self.both_stuck:
            return (f"{self.estimate:+.{digits}f}{unit} (set aside, not tested: both stuck in "
                    f"all {self.n} vs {self.n_ref} runs)")
        return (f"{self.estimate:+.{digits}f}{unit} ({ci}, Holm {fmt_p(self.p_holm)}{over}, "
                f"{self.n} vs {self.n_ref} runs)")


@dataclass
class Interaction:
    a: str
    b: str
    metric: str
    pvalue: float
    p_holm: float = math.nan


def _values(obs: Sequence[Observation], metric: str) -> np.ndarray:
    scale = 100.0 if metric == "acc" else 1.0
    return np.array([scale * getattr(o, metric) for o in obs], dtype=float)


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
          ) -> tuple[float, tuple[float, float], float]:
    """Mean of a minus mean of b, its 95 % Welch interval, and Welch's two-sided p."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    if len(x) < 2 or len(y) < 2 or (x.std() == 0 and y.std() == 0):
        return diff, (math.nan, math.nan), math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one side without spread
        t = stats.ttest_ind(x, y, equal_var=False)
        ci = t.confidence_interval(0.95)
    return diff, (float(ci.low), float(ci.high)), float(t.pvalue)


def _frame(obs: Sequence[Observation], factors: Sequence[str], metric: str) -> Any:
    import pandas as pd
    rows = [{**{f: str(o.levels[f]) for f in factors}, "y": v}
            for o, v in zip(obs, _values(obs, metric), strict=True)]
    return pd.DataFrame(rows)


def _term(factor: str, base: str) -> str:
    return f"C(Q('{factor}'), Treatment(reference='{base}'))"


def factorial_effects(obs: Sequence[Observation], base_levels: Mapping[str, str],
                      metric: str = "acc") -> tuple[list[Effect], list[Interaction]]:
    """Main effects (additive OLS) and two-factor interactions (F tests), Holm-adjusted
    together. Factors with one observed level are left out."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    obs = [o for o in obs if math.isfinite(getattr(o, metric))]
    factors = [f for f in base_levels if len({o.levels[f] for o in obs}) > 1]
    if not factors or len(obs) < 2:
        return [], []
    df = _frame(obs, factors, metric)
    terms = [_term(f, base_levels[f]) for f in factors]
    effects: list[Effect] = []
    additive = smf.ols("y ~ " + " + ".join(terms), data=df).fit()
    ci = additive.conf_int(0.05) if additive.df_resid > 0 else None
    for f, term in zip(factors, terms, strict=True):
        base = base_levels[f]
        n_ref = int((df[f] == base).sum())
        for level in sorted(set(df[f]) - {base}, key=list(dict.fromkeys(df[f])).index):
            name = f"{term}[T.{level}]"
            est = float(additive.params[name])
            p = float(additive.pvalues[name]) if ci is not None else math.nan
            interval = ((float(ci.loc[name, 0]), float(ci.loc[name, 1])) if ci is not None
                        else (math.nan, math.nan))
            if not math.isfinite(p):
                p, interval = math.nan, (math.nan, math.nan)
            effects.append(Effect(f, level, base, metric, est, interval, p,
                                  int((df[f] == level).sum()), n_ref, "ols"))
    interactions: list[Interaction] = []
    if len(factors) >= 2:
        pairs = [f"{x}:{y}" for x, y in combinations(terms, 2)]
        full = smf.ols("y ~ " + " + ".join(terms + pairs), data=df).fit()
        if full.df_resid > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = anova_lm(full, typ=2)
            for (fa, ta), (fb, tb) in combinations(zip(factors, terms, strict=True), 2):
                p = float(table.loc[f"{ta}:{tb}", "PR(>F)"])
                interactions.append(Interaction(fa, fb, metric, p))
    adjusted = holm([e.pvalue for e in effects] + [i.pvalue for i in interactions])
    family = tests_family(len(effects), len(interactions))
    tested: list[Effect | Interaction] = [*effects, *interactions]
    for item, p in zip(tested, adjusted, strict=True):
        item.p_holm = float(p)
    for e in effects:
        e.family = family
    return effects, interactions


def tests_family(n_effects: int, n_interactions: int = 0, of: str = "this ablation") -> str:
    """The Holm family of one ablation's tests on one metric, in words: "the 3 tests of
    this ablation (2 effects, 1 interaction)"."""
    n = n_effects + n_interactions
    parts = f" ({n_effects} effect{'s' if n_effects != 1 else ''}, {n_interactions} " \
        f"interaction{'s' if n_interactions != 1 else ''})" if n_interactions else ""
    return f"the {n} test{'s' if n != 1 else ''} of {of}{parts}"


def cell(obs: Sequence[Observation], levels: Mapping[str, str]) -> list[Observation]:
    """The runs whose levels include all of ``levels``."""
    return [o for o in obs if all(o.levels.get(k) == v for k, v in levels.items())]


def ofat_effects(obs: Sequence[Observation], base_levels: Mapping[str, str],
                 metric: str = "acc") -> list[Effect]:
    """Each factor's levels against the base variant (every factor at its base), Welch."""
    obs = [o for o in obs if math.isfinite(getattr(o, metric))]
    base = cell(obs, base_levels)
    out = []
    for f in base_levels:
        for level in dict.fromkeys(o.levels[f] for o in obs):
            if level == base_levels[f]:
                continue
            runs = cell(obs, dict(base_levels) | {f: level})
            if not runs:
                continue
            d, ci, p = welch(_values(runs, metric), _values(base, metric))
            out.append(Effect(f, level, base_levels[f], metric, d, ci, p, len(runs),
                              len(base), "welch", both_stuck=_both_stuck(runs, base)))
    adjust_holm(out, tests_family(len(out)))
    return out


def _both_stuck(a: Sequence[Observation], b: Sequence[Observation]) -> bool:
    return bool(a) and bool(b) and all(o.stuck for o in [*a, *b])


def adjust_holm(out: Sequence[Effect], family: str) -> None:
    """Holm over ``out``, named ``family``: a comparison set aside as both stuck enters at
    p 1 (and keeps no p of its own), so it never loosens the others."""
    ps = [1.0 if e.both_stuck else e.pvalue for e in out]
    for e, p in zip(out, holm(ps), strict=True):
        e.p_holm, e.family = (math.nan if e.both_stuck else float(p)), family


def held_fixed(obs: Sequence[Observation], factor: str, level: str, reference: str,
               metric: str = "acc") -> list[Effect]:
    """``level`` against ``reference`` of ``factor`` in each cell of the other factors
    (Welch), Holm-adjusted over the cells: the comparison with everything else held fixed."""
    obs = [o for o in obs if math.isfinite(getattr(o, metric))]
    others = [f for f in (obs[0].levels if obs else {}) if f != factor]
    cells = list(dict.fromkeys(tuple(o.levels[f] for f in others) for o in obs))
    out = []
    for values in cells:
        within = dict(zip(others, values, strict=True))
        a = cell(obs, within | {factor: level})
        b = cell(obs, within | {factor: reference})
        if not a or not b:
            continue
        d, ci, p = welch(_values(a, metric), _values(b, metric))
        out.append(Effect(factor, level, reference, metric, d, ci, p, len(a), len(b), "welch",
                          within, both_stuck=_both_stuck(a, b)))
    adjust_holm(out, f"the {len(out)} cell{'s' if len(out) != 1 else ''} of the other factors")
    return out


def sentence(e: Effect, what: str = "") -> str:
    """One factor level's effect in words, saying plainly when the seeds cannot tell."""
    name = METRICS[e.metric][0]
    held = (" with " + ", ".join(f"{k}={v}" for k, v in e.within.items()) if e.within else "")
    subject = f"{what}{e.factor}={e.level} vs {e.reference}{held}"
    if e.both_stuck:
        return (f"{subject}: {name} {e.describe()}; a stuck network scores the share of the "
                f"class it leans to, so the gap says nothing about learning.")
    if math.isnan(e.p_holm):
        return (f"{subject}: {name} {e.describe()}; too few runs to estimate the spread, "
                f"so no conclusion.")
    if e.separable:
        return f"{subject}: {name} {e.describe()}."
    return (f"{subject}: the seeds cannot separate the two levels on {name}: "
            f"{e.describe()}.")
