"""Statistics over seeds and between models: numbers a comparison can be trusted on.

Pure numpy/scipy. The tests chosen (see :data:`METHOD_NOTE`):

* one run per model: McNemar's exact test on per-example correctness. Both models answer the
  same 10,000 test images; only the images on which exactly one of them is right (the
  discordant pairs) carry information, and under "equally good" each such image is a fair
  coin: a two-sided binomial test on them.
* several seeds per model: Welch's t-test on the per-seed test accuracies. A second seed
  changes the trained network far more than a second test set would, so the seed-to-seed
  spread is the noise a claim "A trains better than B" must beat; McNemar on one pair of runs
  ignores it. The seeds of two architectures share only the data order (their weights have
  different shapes, so their initial draws differ), so pairing by seed would cost degrees of
  freedom for little gain; Welch also allows unequal spreads (a model that sometimes gets
  stuck) and unequal counts (a diverged run left out).
* Holm's step-down correction over all pairs, so "significant" keeps a 5 % family-wise error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
from scipy import stats

from cnnbench.store.records import RunRecord

ALPHA = 0.05
BOTH_STUCK = "both stuck"  # a comparison of two models stuck at chance in every seed

METHOD_NOTE = (
    "With one run per model, two models are compared by McNemar's exact test on per-example "
    "correctness: only test images that exactly one of the two gets right carry information, "
    "and if the models were equally good each would be a fair coin (two-sided binomial test). "
    "With two or more seeds per model, they are compared by Welch's t-test on the per-seed "
    "test accuracies: retraining from another seed moves accuracy more than resampling the "
    "test set would, so the seed-to-seed spread is the noise a difference must beat, which a "
    "McNemar test on one pair of runs ignores. Seeds are not paired across models (two "
    "architectures share only the data order, not their initial weights) and Welch's test "
    "allows unequal spreads and counts. The ± after a difference is its standard error. "
    "p-values are adjusted by Holm's step-down method over all pairs of models trained under the "
    "same settings (each p says over how many pairs); a difference is called "
    "significant when its adjusted p is below 0.05. With 3 seeds a t-test has little power: "
    "'indistinguishable' means the data cannot separate the models, not that they are equal. "
    "As secondary evidence, each multi-seed comparison also says on how many matched seeds "
    "the better model was ahead and on how many McNemar's test (unadjusted) found the gap "
    "beyond test-set noise; a model that sometimes gets stuck makes the t-test's spread huge, "
    "so read such a pair together with the diagnosis."
)


# --- per model ---------------------------------------------------------------------------

@dataclass
class ModelStats:
    """Test accuracy (fraction) and loss over the finished seeds of one model."""

    model: str
    seeds: list[int]  # every seed run, finished or not
    n: int  # finished runs the statistics are over
    acc_mean: float
    acc_std: float  # sample standard deviation (ddof=1); nan for one run
    acc_ci: tuple[float, float]  # 95 % t interval of the mean; nan for one run
    acc_min: float
    acc_max: float
    loss_mean: float
    loss_std: float
    train_seconds_mean: float

    @property
    def n_failed(self) -> int:
        return len(self.seeds) - self.n


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95
               ) -> tuple[float, float]:
    """Student-t confidence interval of the mean; (nan, nan) for fewer than two values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def clip_interval(ci: tuple[float, float], lo: float = 0.0, hi: float = 1.0
                  ) -> tuple[float, float]:
    """An accuracy interval cut to what an accuracy can be (a t interval can overshoot)."""
    return max(ci[0], lo), min(ci[1], hi)


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else math.nan


def group_by_model(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records per model, models in order of first appearance, runs sorted by seed."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.model, []).append(r)
    return {m: sorted(rs, key=lambda r: r.seed) for m, rs in groups.items()}


def model_stats(records: Sequence[RunRecord]) -> list[ModelStats]:
    """Mean ± std, 95 % CI and range of test accuracy and loss per model.

    Diverged runs (no finite test accuracy) are left out and counted in ``n_failed``; runs
    stuck at chance stay in: getting stuck is an outcome of training that model.
    """
    out = []
    for model, runs in group_by_model(records).items():
        ok = [r for r in runs if r.finished]
        acc = np.array([r.test_accuracy for r in ok], dtype=float)
        loss = np.array([r.test_loss for r in ok], dtype=float)
        secs = np.array([r.train_seconds for r in ok], dtype=float)
        nan = math.nan
        out.append(ModelStats(
            model=model, seeds=[r.seed for r in runs], n=len(ok),
            acc_mean=float(acc.mean()) if len(ok) else nan, acc_std=_std(acc),
            acc_ci=t_interval(acc), acc_min=float(acc.min()) if len(ok) else nan,
            acc_max=float(acc.max()) if len(ok) else nan,
            loss_mean=float(loss.mean()) if len(ok) else nan, loss_std=_std(loss),
            train_seconds_mean=float(secs.mean()) if len(ok) else nan))
    return out


# --- tests between two models -------------------------------------------------------------

@dataclass
class McNemar:
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    n: int  # test images
    pvalue: float

    @property
    def diff(self) -> float:
        """Accuracy of A minus accuracy of B (fraction)."""
        return (self.b - self.c) / self.n

    @property
    def se(self) -> float:
        """Standard error of the paired difference of proportions."""
        return math.sqrt(max(self.b + self.c - (self.b - self.c) ** 2 / self.n, 0.0)) / self.n


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test: two-sided binomial test on the discordant pairs."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar_exact: per-example correctness of different lengths "
                         f"({a.shape} and {b_.shape}); both runs must answer the same test set.")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    # 2 x the smaller tail of Binomial(b + c, 1/2), capped at 1 (statsmodels' exact=True).
    p = 1.0 if b + c == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
    return McNemar(b, c, len(a), p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given); nan stays nan."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """Model ``a`` against model ``b``; ``diff`` is accuracy of a minus b, in points."""

    a: str
    b: str
    diff: float
    se: float
    test: str  # "mcnemar" or "welch"
    pvalue: float
    n_a: int
    n_b: int
    detail: str  # what the test was run on, for the report
    p_holm: float = math.nan
    # Secondary, with several seeds: on how many matched seeds a was ahead, and ahead beyond
    # test-set noise (McNemar p < 0.05, unadjusted), out of how many.
    seeds_matched: int = 0
    seeds_ahead: int = 0
    seeds_significant: int = 0
    # The comparisons ``p_holm`` is adjusted over, in words ("the 6 model pairs"): the same
    # two models adjusted over another family (an ablation's tests) get another p.
    family: str = ""

    @property
    def holm_label(self) -> str:
        """``Holm-adjusted over the 6 model pairs``."""
        return "Holm-adjusted" + (f" over {self.family}" if self.family else "")

    @property
    def consistent(self) -> bool:
        """Ahead, significantly, on every one of two or more matched seeds."""
        return self.seeds_matched >= 2 and self.seeds_significant == self.seeds_matched

    def significant(self, alpha: float = ALPHA) -> bool:
        return bool(self.p_holm < alpha)

    def significance_label(self, alpha: float = ALPHA) -> str:
        """For tables: a single-seed McNemar result is about two trained networks only."""
        if self.test == BOTH_STUCK:
            return "no: both stuck at chance"
        if not self.significant(alpha):
            return "no"
        return "yes, for these two trained networks" if self.test == "mcnemar" else "yes"


def _correct(run: RunRecord, y_test: np.ndarray) -> np.ndarray | None:
    if run.test_predictions is None or len(run.test_predictions) != len(y_test):
        return None
    correct: np.ndarray = run.test_predictions == y_test
    return correct


def _mcnemar_pair(a: str, b: str, ra: list[RunRecord], rb: list[RunRecord],
                  y_test: np.ndarray) -> Comparison | None:
    """McNemar on the first seed both models ran (else their first runs)."""
    by_seed_b = {r.seed: r for r in rb}
    pairs = [(x, by_seed_b[x.seed]) for x in ra if x.seed in by_seed_b] or [(ra[0], rb[0])]
    for x, y in pairs:
        ca, cb = _correct(x, y_test), _correct(y, y_test)
        if ca is not None and cb is not None:
            m = mcnemar_exact(ca, cb)
            seeds = f"seed {x.seed}" if x.seed == y.seed else f"seeds {x.seed} and {y.seed}"
            return Comparison(a, b, 100 * m.diff, 100 * m.se, "mcnemar", m.pvalue, 1, 1,
                              f"McNemar exact test, {seeds}: {m.b} images only {a} gets "
                              f"right, {m.c} only {b}")
    return None


def _per_seed_mcnemar(ra: list[RunRecord], rb: list[RunRecord],
                      y_test: np.ndarray) -> tuple[int, int, int]:
    """Secondary evidence: McNemar on each seed both models ran, unadjusted."""
    by_seed_b = {r.seed: r for r in rb}
    wins = sig = n = 0
    for x in ra:
        y = by_seed_b.get(x.seed)
        ca = _correct(x, y_test)
        cb = _correct(y, y_test) if y is not None else None
        if ca is None or cb is None:
            continue
        m = mcnemar_exact(ca, cb)
        n += 1
        wins += m.b > m.c
        sig += m.b > m.c and m.pvalue < ALPHA
    return n, wins, sig


def compare_pair(a: str, b: str, ra: list[RunRecord], rb: list[RunRecord],
                 y_test: np.ndarray) -> Comparison | None:
    """Welch over seeds when both have two or more finished runs, else McNemar."""
    ra = [r for r in ra if r.finished]
    rb = [r for r in rb if r.finished]
    if not ra or not rb:
        return None
    va = np.array([r.test_accuracy for r in ra]) * 100
    vb = np.array([r.test_accuracy for r in rb]) * 100
    if len(ra) >= 2 and len(rb) >= 2 and (va.std() > 0 or vb.std() > 0):
        with warnings.catch_warnings():
            # A model stuck at the same accuracy every seed has zero spread up to rounding;
            # scipy warns about precision there, but Welch's test is still well defined.
            warnings.simplefilter("ignore", RuntimeWarning)
            t = stats.ttest_ind(va, vb, equal_var=False)
        se = math.sqrt(va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb))
        n, wins, sig = _per_seed_mcnemar(ra, rb, y_test)
        return Comparison(a, b, float(va.mean() - vb.mean()), se, "welch", float(t.pvalue),
                          len(ra), len(rb), f"Welch t-test over {len(ra)} and {len(rb)} seeds",
                          seeds_matched=n, seeds_ahead=wins, seeds_significant=sig)
    # One run each, or no spread at all between seeds: only the test set can tell them apart.
    return _mcnemar_pair(a, b, ra, rb, y_test)


def compare_models(records: Sequence[RunRecord], y_test: np.ndarray, family: str = "",
                   num_classes: int = 10) -> list[Comparison]:
    """Every pair of models, better-by-mean first in each pair, Holm-adjusted over all pairs.
    ``family`` names the pairs in words (default: "the N model pairs").

    Two models stuck at chance in every finished seed are set aside, not tested: each run
    gives nearly the same answer whatever the image, so they differ only in the class each
    leans to (a gap with little or no spread that a test reads as certain). Such a pair
    enters Holm at p 1."""
    groups = group_by_model(records)
    y_test = np.asarray(y_test)
    means = {s.model: s.acc_mean for s in model_stats(records)}
    at_chance = _stuck_models(groups, y_test, num_classes)
    out = []
    for a, b in combinations(groups, 2):
        if means[b] > means[a]:
            a, b = b, a
        c = compare_pair(a, b, groups[a], groups[b], y_test)
        if c is not None and a in at_chance and b in at_chance:
            n_a, n_b = (sum(r.finished for r in groups[m]) for m in (a, b))
            c = replace(c, test=BOTH_STUCK, pvalue=math.nan, n_a=n_a, n_b=n_b,
                        detail=f"both stuck at chance in every seed ({n_a} and {n_b} runs): "
                               f"set aside, not tested")
        if c is not None:
            out.append(c)
    family = family or f"the {len(out)} model pair{'s' if len(out) != 1 else ''}"
    ps = [1.0 if c.test == BOTH_STUCK else c.pvalue for c in out]
    for c, p in zip(out, holm(ps), strict=True):
        c.p_holm, c.family = (math.nan if c.test == BOTH_STUCK else float(p)), family
    return out


def _stuck_models(groups: dict[str, list[RunRecord]], y_test: np.ndarray,
                  num_classes: int) -> set[str]:
    """The models whose every finished run is stuck at chance."""
    from cnnbench.analysis.diagnosis import detect_stuck
    out = set()
    for model, runs in groups.items():
        done = [r for r in runs if r.finished]
        if done and all(detect_stuck(r, y_test, num_classes) is not None for r in done):
            out.add(model)
    return out


# --- numbers the conclusions quote (sentences: cnnbench.analysis.conclusions) ---------------

def fmt_p(p: float) -> str:
    """A p-value as the report writes it."""
    if math.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def seeds_needed(diff: float, sd: float, alpha: float = ALPHA, power: float = 0.8
                 ) -> int | None:
    """Seeds per model for a two-sided test at ``alpha`` to find ``diff`` with ``power``,
    given a per-run spread ``sd`` (normal approximation: n = 2 (z_a/2 + z_b)^2 sd^2 / d^2).
    None when the difference is zero or the spread unknown."""
    if not (math.isfinite(diff) and math.isfinite(sd)) or diff == 0:
        return None
    z: float = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil(2 * (z * sd / abs(diff)) ** 2))


def epoch_spread(history: dict[str, list[float]]) -> tuple[float, int]:
    """How much validation accuracy moves from epoch to epoch late in a run: the sample sd
    (points) over the last half of its epochs (at least two), and how many epochs that is.
    A stand-in for the seed-to-seed spread when only one seed was run."""
    va = [v for v in history.get("val_acc", []) if math.isfinite(v)]
    k = max(2, len(va) // 2)
    if len(va) < 2:
        return math.nan, len(va)
    return float(100 * np.std(va[-k:], ddof=1)), k


# --- per-example views ----------------------------------------------------------------------

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def representative_run(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The finished run with the median test accuracy (lower middle for an even count)."""
    ok = sorted((r for r in runs if r.finished and r.test_predictions is not None),
                key=lambda r: (r.test_accuracy, r.seed))
    return ok[(len(ok) - 1) // 2] if ok else None
