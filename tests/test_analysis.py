"""Statistics against scipy/statsmodels on known tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cnnbench.analysis.conclusions import conclusions
from cnnbench.analysis.effects import welch
from cnnbench.analysis.stats import (
    BOTH_STUCK,
    compare_models,
    confusion_matrix,
    holm,
    mcnemar_exact,
    model_stats,
    representative_run,
    t_interval,
)
from cnnbench.model.spec import get_spec
from cnnbench.store.records import RunRecord

sm_contingency = pytest.importorskip("statsmodels.stats.contingency_tables",
                                     reason="statsmodels is in the 'test' extra")
sm_multitest = pytest.importorskip("statsmodels.stats.multitest")


def _correctness_from_table(n11: int, n10: int, n01: int, n00: int):
    """Per-example correctness of runs A and B giving the 2x2 table [[n11, n10], [n01, n00]]."""
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


@pytest.mark.parametrize("table", [
    (9900, 25, 10, 65),   # A clearly better on discordant images
    (9850, 40, 38, 72),   # a coin flip
    (9000, 0, 0, 1000),   # no discordant pairs at all
    (50, 3, 0, 1),        # tiny counts, exact tail matters
    (9800, 57, 31, 112),
])
def test_mcnemar_exact_matches_statsmodels(table):
    a, b = _correctness_from_table(*table)
    ours = mcnemar_exact(a, b)
    theirs = sm_contingency.mcnemar(np.array([[table[0], table[1]], [table[2], table[3]]]),
                                    exact=True)
    assert (ours.b, ours.c) == (table[1], table[2])
    assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-12, abs=1e-15)
    if table[1] + table[2]:
        # The same as scipy's two-sided binomial test on the discordant pairs.
        bt = stats.binomtest(table[1], table[1] + table[2], 0.5).pvalue
        assert ours.pvalue == pytest.approx(bt, rel=1e-9)


def test_mcnemar_known_value_by_hand():
    # b=3, c=0: p = 2 * (1/2)^3 = 0.25.
    a, b = _correctness_from_table(50, 3, 0, 1)
    assert mcnemar_exact(a, b).pvalue == pytest.approx(0.25)


def test_mcnemar_rejects_different_test_sets():
    with pytest.raises(ValueError, match="same test set"):
        mcnemar_exact(np.ones(10, bool), np.ones(9, bool))


@pytest.mark.slow
def test_holm_matches_statsmodels_multipletests():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 9))
        expected = sm_multitest.multipletests(p, alpha=0.05, method="holm")[1]
        np.testing.assert_allclose(holm(p), expected, rtol=1e-12)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_keeps_nan_out_of_the_family():
    out = holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])


def test_t_interval_matches_scipy():
    v = [0.9912, 0.9930, 0.9921]
    lo, hi = t_interval(v)
    exp = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(exp, rel=1e-12)
    assert all(math.isnan(x) for x in t_interval([0.99]))


def _record(model: str, seed: int, acc: float, preds=None, loss: float = 0.03,
            status: str = "finished") -> RunRecord:
    h = {"loss": [0.1, 0.05], "acc": [0.97, 0.98], "val_loss": [0.06, loss],
         "val_acc": [0.97, acc], "seconds": [1.0, 1.0]}
    return RunRecord(model=model, spec=get_spec("CNN_MNIST_1"), seed=seed, history=h,
                     test_loss=loss, test_accuracy=acc, test_predictions=preds, status=status,
                     train_seconds=2.0)


def test_model_stats_mean_std_ci_over_finished_seeds():
    recs = [_record("A", s, a) for s, a in enumerate([0.990, 0.992, 0.994])]
    recs.append(_record("A", 3, math.nan, loss=math.nan, status="diverged"))
    (s,) = model_stats(recs)
    assert s.n == 3 and s.n_failed == 1 and s.seeds == [0, 1, 2, 3]
    assert s.acc_mean == pytest.approx(0.992)
    assert s.acc_std == pytest.approx(0.002)
    assert s.acc_ci == pytest.approx(stats.t.interval(0.95, 2, 0.992, 0.002 / math.sqrt(3)))
    assert (s.acc_min, s.acc_max) == pytest.approx((0.990, 0.994))


def test_compare_models_uses_welch_over_seeds_and_holm():
    accs = {"A": [0.9930, 0.9932, 0.9934], "B": [0.9900, 0.9905, 0.9910],
            "C": [0.9901, 0.9906, 0.9911]}
    recs = [_record(m, s, a) for m, v in accs.items() for s, a in enumerate(v)]
    comps = {(c.a, c.b): c for c in compare_models(recs, np.zeros(10, np.uint8))}
    ab = comps[("A", "B")]
    t = stats.ttest_ind(np.array(accs["A"]) * 100, np.array(accs["B"]) * 100, equal_var=False)
    assert ab.test == "welch" and ab.pvalue == pytest.approx(t.pvalue)
    assert ab.diff == pytest.approx(0.27)
    expected = sm_multitest.multipletests([c.pvalue for c in comps.values()], method="holm")[1]
    np.testing.assert_allclose([c.p_holm for c in comps.values()], expected)
    assert ab.significant() and not comps[("C", "B")].significant()
    text = conclusions(model_stats(recs), list(comps.values()))
    assert any(s.startswith("A beats B by 0.27 ± ") for s in text)
    assert any(s.startswith("C and B are indistinguishable") for s in text)


def test_compare_models_single_seed_uses_mcnemar_on_predictions():
    y = np.arange(1000) % 10
    pa, pb = y.copy(), y.copy()
    pb[:30] = (pb[:30] + 1) % 10  # B wrong on 30 images A gets right
    pa[500:505] = (pa[500:505] + 1) % 10  # A wrong on 5 that B gets right
    recs = [_record("A", 0, float(np.mean(pa == y)), pa),
            _record("B", 0, float(np.mean(pb == y)), pb)]
    (c,) = compare_models(recs, y)
    assert c.test == "mcnemar" and (c.a, c.b) == ("A", "B")
    assert c.pvalue == pytest.approx(stats.binomtest(30, 35, 0.5).pvalue)
    assert c.diff == pytest.approx(2.5)


def test_two_models_stuck_in_every_seed_are_set_aside_not_compared():
    y = np.repeat(np.arange(10), [98, 114, 103, 101, 98, 89, 96, 103, 97, 101])
    answers = {"A": [1, 1, 1], "B": [0, 0, 2]}  # each stuck run answers one class
    recs = [_record(m, s, float(np.mean(y == c)), np.full(len(y), c, np.uint8))
            for m, cs in answers.items() for s, c in enumerate(cs)]
    recs += [_record("C", s, float(np.mean(p == y)), p) for s, p in enumerate(
        [np.where(np.arange(len(y)) < k, (y + 1) % 10, y).astype(np.uint8) for k in (5, 8, 6)])]
    comps = {(c.a, c.b): c for c in compare_models(recs, y)}
    ab = comps[("A", "B")]
    assert ab.test == BOTH_STUCK and math.isnan(ab.p_holm) and not ab.significant()
    assert ab.diff == pytest.approx(11.4 - (9.8 + 9.8 + 10.3) / 3)
    assert ab.significance_label() == "no: both stuck at chance"
    assert welch([11.4] * 3, [9.8, 9.8, 10.3])[2] < 0.05  # what Welch alone would "find"
    ca = comps[("C", "A")]
    assert ca.test == "welch" and ca.p_holm == pytest.approx(
        min(1.0, max(3 * min(ca.pvalue, comps[("C", "B")].pvalue), 2 * ca.pvalue)))
    text = conclusions(model_stats(recs), list(comps.values()))
    assert any(s.startswith("A and B are both stuck at chance in every seed") for s in text)
    # no spread at all (the single-network McNemar path): still set aside, every run counted
    constant = [r for r in recs if r.model == "A"] + [
        _record("B", s, float(np.mean(y == 0)), np.zeros(len(y), np.uint8)) for s in range(3)]
    (c,) = compare_models(constant, y)
    assert c.test == BOTH_STUCK and c.detail.startswith("both stuck at chance in every seed "
                                                        "(3 and 3 runs)")


def test_confusion_matrix_and_representative_run():
    cm = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    runs = [_record("A", s, a, np.zeros(3, np.uint8)) for s, a in ((0, 0.5), (1, 0.9), (2, 0.7))]
    assert representative_run(runs).seed == 2
