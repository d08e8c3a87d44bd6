"""claims.py: the verdict logic on synthetic results, and claims validated against a study."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cnnbench.analysis.claims import Claim, judge, parse_claims
from cnnbench.analysis.effects import Observation
from cnnbench.model.spec import SpecError
from cnnbench.study.studyfile import load_study

DEPTH = Claim("depth", "accuracy dropped as number of convolutional layers increase", "a",
              "depth", "lower", "conv4", ("conv2",))


def runs(means, sd=0.05, seeds=3, seed=0):
    """means[(depth, act)] in points -> observations, seeds per cell."""
    rng = np.random.default_rng(seed)
    return [Observation(f"m[{d},{a}]", {"depth": d, "act": a}, s,
                        (m + rng.normal(0, sd)) / 100, 0.05)
            for (d, a), m in means.items() for s in range(seeds)]


def test_supported_when_lower_beyond_noise_at_every_level_of_the_others():
    v = judge(DEPTH, runs({("conv4", "sigmoid"): 97.0, ("conv2", "sigmoid"): 98.5,
                           ("conv4", "relu"): 98.0, ("conv2", "relu"): 99.0}))
    assert v.verdict == "supported"
    assert [e.within for e in v.comparisons] == [{"act": "sigmoid"}, {"act": "relu"}]
    assert v.comparisons[0].estimate == pytest.approx(-1.5, abs=0.15)
    assert "SUPPORTED" in v.sentences()[0] and "held fixed" in v.sentences()[0]


def test_contradicted_when_the_other_way_round_beyond_noise():
    v = judge(DEPTH, runs({("conv4", "sigmoid"): 99.0, ("conv2", "sigmoid"): 98.0,
                           ("conv4", "relu"): 99.2, ("conv2", "relu"): 98.8}))
    assert v.verdict == "contradicted"
    assert all(line.endswith("-> contradicted.") for line in v.sentences()[1:])


def test_not_separable_when_the_seeds_cannot_tell_and_mixed_when_levels_disagree():
    noisy = judge(DEPTH, runs({("conv4", "sigmoid"): 98.0, ("conv2", "sigmoid"): 98.3,
                               ("conv4", "relu"): 99.0, ("conv2", "relu"): 98.8}, sd=1.0))
    assert noisy.verdict == "not separable"
    assert all(e.p_holm >= 0.05 for e in noisy.comparisons)
    mixed = judge(DEPTH, runs({("conv4", "sigmoid"): 96.0, ("conv2", "sigmoid"): 98.0,
                               ("conv4", "relu"): 99.0, ("conv2", "relu"): 99.0}))
    assert mixed.verdict == "mixed"
    assert [line.rsplit("-> ", 1)[1] for line in mixed.sentences()[1:]] == [
        "supported.", "not separable."]


def test_one_seed_is_never_enough_to_judge():
    v = judge(DEPTH, runs({("conv4", "sigmoid"): 90.0, ("conv2", "sigmoid"): 99.0}, seeds=1))
    assert v.verdict == "not separable" and "no interval" in v.sentences()[1]


def test_holm_runs_over_all_of_a_claims_comparisons():
    claim = Claim("w", "worst", "a", "depth", "lower", "conv4", ("conv2", "conv3"))
    obs = runs({("conv4", "x"): 97.0, ("conv2", "x"): 97.1, ("conv3", "x"): 98.0}, sd=0.3)
    v = judge(claim, obs)
    p = sorted(e.pvalue for e in v.comparisons)
    assert sorted(e.p_holm for e in v.comparisons) == pytest.approx(
        [min(1, 2 * p[0]), min(1, max(2 * p[0], p[1]))])


def test_claims_are_checked_against_the_ablations_factors_and_levels():
    s = load_study("notebook-claims")
    good = {"name": "x", "says": "y", "ablation": "model-3", "factor": "lr", "expect": "higher",
            "level": "0.1", "than": "1"}
    assert parse_claims([good], s.ablations, "f")[0].than == ("1",)
    for change, message in [({"ablation": "nope"}, "no ablation named 'nope'"),
                            ({"factor": "depth"}, "has no factor 'depth'"),
                            ({"level": "0.5"}, "'0.5' is not a level of factor 'lr'"),
                            ({"expect": "better"}, "expect must be lower or higher")]:
        with pytest.raises(SpecError, match=message):
            parse_claims([good | change], s.ablations, "f")


@pytest.mark.parametrize("change, message", [
    ({"ablation": ["model-3"]}, "f[1]: 'ablation' must be a string (at most 10,000 characters). "
                                "Got ['model-3']."),
    ({"factor": {"lr": 1}}, "f[1]: 'factor' must be a string"),
    ({"says": None}, "f[1]: 'says' must be a string"),
    ({"level": ["0.1"]}, "f[1]: ['0.1'] is not a level of factor 'lr'"),
    ({"than": "0.1"}, "f[1]: compares level '0.1' with itself; 'than' lists the other levels"),
    ({"than": ["1", "0.1"]}, "compares level '0.1' with itself"),
    ({"than": []}, "f[1]: 'than' names no level to compare '0.1' with."),
    ({"than": ["1", "1"]}, "f[1]: 'than' names a level twice: ['1', '1']."),
])
def test_a_claim_that_compares_nothing_or_is_misshapen_is_one_line(change, message):
    s = load_study("notebook-claims")
    good = {"name": "x", "says": "y", "ablation": "model-3", "factor": "lr", "expect": "higher",
            "level": "0.1", "than": ["1"]}
    with pytest.raises(SpecError) as e:
        parse_claims([good | change], s.ablations, "f")
    assert message in str(e.value)


def test_a_comparison_of_two_levels_stuck_in_every_seed_judges_nothing():
    claim = Claim("lr", "a lower learning rate unsticks model 3", "a", "depth", "higher",
                  "conv4", ("conv2",))
    answers = {"conv4": [11.35, 11.35, 11.35], "conv2": [9.8, 9.8, 10.1]}  # one class each
    obs = [Observation(f"m[{d}]", {"depth": d}, s, acc / 100, 2.301, stuck=True)
           for d, accs in answers.items() for s, acc in enumerate(accs)]
    v = judge(claim, obs)
    assert v.verdict == "not separable"
    assert v.sentences()[1].endswith("-> both stuck.") and "set aside" in v.sentences()[1]
    unflagged = judge(claim, [replace(o, stuck=False) for o in obs])
    assert unflagged.verdict == "supported"  # what a constant answer alone would "show"


def test_a_both_stuck_comparison_enters_the_claims_holm_at_p_1():
    # sigmoid: both stuck, a tiny raw Welch p; relu: a real, modest difference
    accs = {("conv4", "sigmoid"): [11.35] * 3, ("conv2", "sigmoid"): [9.8, 9.8, 10.1],
            ("conv4", "relu"): [99.0, 99.1, 99.2], ("conv2", "relu"): [99.3, 99.4, 99.5]}
    obs = [Observation(f"m[{d},{a}]", {"depth": d, "act": a}, s, acc / 100, 0.05,
                       stuck=a == "sigmoid") for (d, a), v in accs.items()
           for s, acc in enumerate(v)]
    stuck, real = judge(DEPTH, obs).comparisons
    assert stuck.both_stuck and stuck.pvalue < real.pvalue / 2  # raw Welch would rank it first
    assert np.isnan(stuck.p_holm) and real.p_holm == pytest.approx(min(1.0, 2 * real.pvalue))
    assert real.family == "the claim's 2 comparisons"
