"""effects.py on synthetic results with known effects, checked against statsmodels and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from cnnbench.analysis.effects import (
    Observation,
    factorial_effects,
    held_fixed,
    ofat_effects,
    sentence,
    welch,
)
from cnnbench.analysis.stats import seeds_needed

BASE = {"act": "sigmoid", "norm": "bn"}


def synthetic(effects, sd=0.05, seeds=4, interaction=0.0, seed=0):
    """Test accuracy (fraction) = 0.98 + per-level effect (points) + noise, 2 x 3 cells."""
    rng = np.random.default_rng(seed)
    obs = []
    for act in ("sigmoid", "relu"):
        for norm in ("bn", "dropout", "none"):
            mean = 98.0 + effects.get(("act", act), 0) + effects.get(("norm", norm), 0)
            if act == "relu" and norm == "dropout":
                mean += interaction
            for s in range(seeds):
                acc = (mean + rng.normal(0, sd)) / 100
                obs.append(Observation(f"m[{act},{norm}]", {"act": act, "norm": norm}, s,
                                       acc, 0.05 - acc / 10))
    return obs


def test_main_effects_are_the_marginal_differences_with_statsmodels_intervals():
    obs = synthetic({("act", "relu"): 0.4, ("norm", "dropout"): -1.0})
    effs, inter = factorial_effects(obs, BASE, "acc")
    got = {(e.factor, e.level): e for e in effs}
    assert set(got) == {("act", "relu"), ("norm", "dropout"), ("norm", "none")}
    acc = np.array([100 * o.acc for o in obs])
    act = np.array([o.levels["act"] for o in obs])
    norm = np.array([o.levels["norm"] for o in obs])
    # Balanced design: the additive model's coefficient is the marginal mean difference.
    assert got["act", "relu"].estimate == pytest.approx(
        acc[act == "relu"].mean() - acc[act == "sigmoid"].mean(), abs=1e-9)
    assert got["norm", "dropout"].estimate == pytest.approx(
        acc[norm == "dropout"].mean() - acc[norm == "bn"].mean(), abs=1e-9)
    df = pd.DataFrame({"y": acc, "act": act, "norm": norm})
    fit = smf.ols("y ~ C(act, Treatment('sigmoid')) + C(norm, Treatment('bn'))", df).fit()
    lo, hi = fit.conf_int().loc["C(norm, Treatment('bn'))[T.dropout]"]
    assert got["norm", "dropout"].ci == (pytest.approx(lo), pytest.approx(hi))
    assert lo < -1.0 < hi and hi < 0  # the known effect is inside and clearly negative
    assert got["act", "relu"].ci[0] < 0.4 < got["act", "relu"].ci[1]
    assert got["norm", "dropout"].separable and got["act", "relu"].separable
    assert not got["norm", "none"].separable  # no effect planted: the seeds cannot tell
    assert (got["norm", "dropout"].n, got["norm", "dropout"].n_ref) == (8, 8)
    # Holm over the 3 main effects and the 1 interaction test: 4 tests.
    raw = sorted([e.pvalue for e in effs] + [i.pvalue for i in inter])
    smallest = min(effs + inter, key=lambda x: x.pvalue)
    assert smallest.p_holm == pytest.approx(min(1.0, 4 * raw[0]))


def test_interaction_is_found_only_where_planted():
    _, none = factorial_effects(synthetic({("act", "relu"): 0.4}), BASE, "acc")
    _, some = factorial_effects(synthetic({("act", "relu"): 0.4}, interaction=-2.0), BASE, "acc")
    assert none[0].p_holm > 0.05
    assert some[0].p_holm < 1e-6 and (some[0].a, some[0].b) == ("act", "norm")


def test_loss_is_estimated_on_its_own_scale():
    obs = synthetic({("act", "relu"): 0.4})
    effs, _ = factorial_effects(obs, BASE, "loss")
    relu = next(e for e in effs if e.level == "relu")
    assert relu.estimate == pytest.approx(-0.4 / 100 / 10, abs=5e-5)  # loss = 0.05 - acc/10


def test_welch_matches_scipy_and_the_welch_satterthwaite_interval():
    a, b = [99.1, 98.7, 99.0, 98.9], [98.2, 98.9, 97.8]
    d, (lo, hi), p = welch(a, b)
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    dof = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert (d, lo, hi) == (pytest.approx(np.mean(a) - np.mean(b)), pytest.approx(d - half),
                           pytest.approx(d + half))
    assert math.isnan(welch([99.0], [98.0, 97.0])[2])  # one run: no spread, no test


def test_ofat_compares_each_level_with_the_base_variant_only():
    obs = [o for o in synthetic({("norm", "dropout"): -3.0, ("act", "relu"): 1.0})
           if o.levels["act"] == "sigmoid" or o.levels["norm"] == "bn"]  # an OFAT's cells
    effs = {(e.factor, e.level): e for e in ofat_effects(obs, BASE)}
    base = [100 * o.acc for o in obs if o.levels == BASE]
    drop = [100 * o.acc for o in obs if o.levels == {"act": "sigmoid", "norm": "dropout"}]
    e = effs["norm", "dropout"]
    assert e.pvalue == pytest.approx(stats.ttest_ind(drop, base, equal_var=False).pvalue)
    assert e.estimate == pytest.approx(np.mean(drop) - np.mean(base))
    assert e.ci[1] < 0 and e.method == "welch" and (e.n, e.n_ref) == (4, 4)
    p1, p2, p3 = sorted(x.pvalue for x in effs.values())  # Holm by hand, 3 tests
    adjusted = [min(1, 3 * p1), min(1, max(3 * p1, 2 * p2)), min(1, max(3 * p1, 2 * p2, p3))]
    assert sorted(x.p_holm for x in effs.values()) == pytest.approx(adjusted)
    assert effs["act", "relu"].estimate == pytest.approx(1.0, abs=0.1)


def test_held_fixed_compares_within_each_cell_of_the_other_factors():
    obs = synthetic({("act", "relu"): 0.0}, interaction=-2.0)
    effs = held_fixed(obs, "norm", "dropout", "bn")
    assert [e.within for e in effs] == [{"act": "sigmoid"}, {"act": "relu"}]
    assert abs(effs[0].estimate) < 0.2 and effs[1].estimate == pytest.approx(-2.0, abs=0.2)
    assert not effs[0].separable and effs[1].separable


def test_sentences_say_plainly_when_the_seeds_cannot_separate():
    obs = synthetic({("norm", "dropout"): -1.0})
    effs = {(e.factor, e.level): e for e in factorial_effects(obs, BASE)[0]}
    assert "cannot separate" in sentence(effs["norm", "none"])
    text = sentence(effs["norm", "dropout"])
    assert text.startswith("norm=dropout vs bn: test accuracy -0.96 points (95 % CI -1.00 to")


def test_seeds_needed_is_the_two_sample_normal_formula():
    # 2 (1.96 + 0.84)^2 (0.5 / 0.2)^2 = 98.1 -> 99 seeds a side for 0.2 points at sd 0.5.
    assert seeds_needed(0.2, 0.5) == 99
    assert seeds_needed(2.0, 0.1) == 2
    assert seeds_needed(0.0, 0.5) is None


def _stuck_runs(variant: str, levels: dict[str, str], answers: list[float]) -> list[Observation]:
    """Runs stuck at chance: each answers one class, so its accuracy is that class's share."""
    return [Observation(variant, levels, s, acc / 100, 2.301, stuck=True)
            for s, acc in enumerate(answers)]


def test_two_levels_stuck_in_every_seed_are_set_aside_and_enter_holm_at_p_1():
    base = {"lr": "1.0", "act": "sigmoid"}
    obs = (_stuck_runs("m[1.0,sigmoid]", base, [11.35, 11.35, 11.35])
           + _stuck_runs("m[0.1,sigmoid]", {"lr": "0.1", "act": "sigmoid"}, [9.8, 9.8, 10.1])
           + [Observation("m[1.0,relu]", {"lr": "1.0", "act": "relu"}, s, acc, 0.03)
              for s, acc in enumerate([0.990, 0.991, 0.992])])
    effs = {(e.factor, e.level): e for e in ofat_effects(obs, base)}
    lr, relu = effs["lr", "0.1"], effs["act", "relu"]
    assert lr.both_stuck and not lr.separable and math.isnan(lr.p_holm)
    assert lr.estimate == pytest.approx(-1.45) and lr.pvalue < 0.01  # Welch alone: "certain"
    assert sentence(lr).startswith("lr=0.1 vs 1.0: test accuracy -1.45 points (set aside, not "
                                   "tested: both stuck in all 3 vs 3 runs)")
    assert not relu.both_stuck and relu.separable
    assert relu.p_holm == pytest.approx(min(1.0, 2 * relu.pvalue))  # Holm over 2: p 1 counts
    # one side learning in a single seed: compared as usual
    obs[3] = Observation("m[0.1,sigmoid]", {"lr": "0.1", "act": "sigmoid"}, 0, 0.97, 0.1)
    assert not {(e.factor, e.level): e for e in ofat_effects(obs, base)}["lr", "0.1"].both_stuck
