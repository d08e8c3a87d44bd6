"""Seeds only where the question is open: a group-sequential comparison of two models'
per-seed accuracies.

Design: a two-sided Welch test of "same mean accuracy", looked at after each round of seeds,
with Lan-DeMets O'Brien-Fleming alpha spending, alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)),
over the planned looks. The information fraction of a look is its seeds per model over the
maximum (t = n / max), so the first look, already ``min`` seeds in, counts for what it holds.
Boundaries are computed on the z scale by numerical integration (the recursion of Armitage,
McPherson and Rowe) and applied to the Welch test as nominal two-sided p levels: a look
separates when its Welch p is below the level of that look. With few seeds the Welch
statistic is not normal; the tests prove the error rate of this rule by simulation.

Futility (never declares a difference, so it cannot add false separations): from the second
look on, a comparison stops when, given the evidence so far, even the maximum seeds would
separate an effect of the size that matters with probability below ``futility_power``
(conditional power; the size: ``smallest_effect`` in points, else the observed difference),
or when a ``smallest_effect`` is given and the 95 % interval already excludes effects that
large. It reports the seeds an effect of that size would need.

Both stuck (never declares a difference either): a comparison whose two models are stuck at
chance in every seed so far stops there. Two networks that give nearly the same answer
whatever the image differ only in the class each leans to (11.35 % for "1", 9.8 % for "0" on
MNIST's test set), a gap with little or no spread that Welch's test would "separate"; that is
no comparison of learning.

Holm across the comparisons of one family, at the end, on stage-wise ordered p values
(valid p values of a group-sequential test): only a comparison that crossed its boundary can
be separated, and only if Holm keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import special, stats

from cnnbench.analysis.stats import BOTH_STUCK, holm, seeds_needed

ALPHA = 0.05
MIN_SEEDS = 3  # Welch's test needs 2 per model; 3 gives its spread a first footing
MAX_SEEDS = 10
ROUND = 2  # seeds a round: half the looks of one-at-a-time for the same max, and 2 runs per
# model per round keep a pool of workers busy; O'Brien-Fleming makes the extra looks cheap
FUTILITY_POWER = 0.10
_GRID = 801  # points of the integration grid on the score scale

OPEN, SEPARATED, FUTILE, MAX_REACHED = "open", "separated", "futile", "max reached"


def spent(t: float, alpha: float = ALPHA) -> float:
    """Lan-DeMets O'Brien-Fleming alpha spent by information fraction ``t`` (two-sided)."""
    if t <= 0:
        return 0.0
    return float(math.erfc(_z(alpha) / math.sqrt(min(t, 1)) / math.sqrt(2)))


@lru_cache(maxsize=16)
def _z(alpha: float) -> float:
    """z_{1 - alpha/2}."""
    return float(stats.norm.isf(alpha / 2))


@lru_cache(maxsize=64)
def _levels(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    return tuple(float(math.erfc(c / math.sqrt(2))) for c in boundaries(fractions, alpha))


def _step(density: np.ndarray, grid: np.ndarray, new: np.ndarray, var: float) -> np.ndarray:
    """Density on ``new`` of score + N(0, var), from the surviving density on ``grid``."""
    w = np.gradient(grid) if len(grid) > 1 else np.ones(1)
    sd = math.sqrt(var)
    kern: np.ndarray = stats.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd
    return kern @ (density * w)


def _cross(b: float, density: np.ndarray, grid: np.ndarray, var: float,
           minus: float = 0.0) -> float:
    """P(survived so far and |score + N(0, var)| >= b), less ``minus``."""
    w = np.gradient(grid)
    sd = math.sqrt(var)
    tail = special.ndtr((grid - b) / sd) + special.ndtr((-b - grid) / sd)
    return float(np.sum(density * w * tail)) - minus


@lru_cache(maxsize=64)
def _survivors(fractions: tuple[float, ...], alpha: float = ALPHA
               ) -> tuple[tuple[float, ...], tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """The z boundaries, and after each look the density (on a grid of the score
    S = Z sqrt(t)) of the paths that have not crossed yet."""
    from scipy.optimize import brentq
    out: list[float] = []
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    density, grid, prev_t = np.ones(1), np.zeros(1), 0.0
    for t in fractions:
        var = t - prev_t
        target = spent(t, alpha) - spent(prev_t, alpha)
        if not out:
            b = stats.norm.isf(target / 2) * math.sqrt(t)
        else:
            b = brentq(_cross, 1e-6, 40 * math.sqrt(t), args=(density, grid, var, target))
        out.append(float(b) / math.sqrt(t))
        new = np.linspace(-b, b, _GRID)
        density = (stats.norm.pdf(new / math.sqrt(t)) / math.sqrt(t) if len(out) == 1
                   else _step(density, grid, new, var))
        grid, prev_t = new, t
        kept.append((grid, density))
    return tuple(out), tuple(kept)


def boundaries(fractions: tuple[float, ...], alpha: float = ALPHA) -> tuple[float, ...]:
    """z boundaries c_1..c_K at the information fractions, so that under no difference
    P(|Z_k| >= c_k at some look) = alpha, and alpha(t_k) - alpha(t_{k-1}) is spent at look k.
    (Equal looks, K = 2: the first spends 2 - 2 Phi(1.96 / sqrt(0.5)) = 0.0056.)

    >>> [round(c, 3) for c in boundaries((0.5, 1.0))]
    [2.772, 1.98]
    """
    return _survivors(tuple(fractions), alpha)[0]


def stagewise_p(fractions: Sequence[float], look: int, z: float, alpha: float = ALPHA) -> float:
    """Stage-wise ordered p value of a comparison that stopped at ``look`` (0-based) with
    statistic ``z``: alpha spent before that look plus P(no earlier crossing, |Z| >= |z|)."""
    fr = tuple(fractions)
    if look == 0:
        return float(min(1.0, 2 * special.ndtr(-abs(z))))
    grid, density = _survivors(fr, alpha)[1][look - 1]
    tail = _cross(abs(z) * math.sqrt(fr[look]), density, grid, fr[look] - fr[look - 1])
    return float(min(1.0, spent(fr[look - 1], alpha) + tail))


@dataclass(frozen=True)
class Design:
    """A sequential seeds plan: looks at min, min + round, ..., max seeds per model."""

    min_seeds: int = MIN_SEEDS
    max_seeds: int = MAX_SEEDS
    round_size: int = ROUND
    alpha: float = ALPHA
    smallest_effect: float | None = None  # points; None: futility under the observed trend
    futility_power: float = FUTILITY_POWER

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ValueError(f"seeds: min {self.min_seeds} and max {self.max_seeds}; expected "
                             f"2 <= min <= max")
        if self.round_size < 1:
            raise ValueError(f"seeds: round {self.round_size}; expected at least 1")

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per model at each planned look."""
        n = list(range(self.min_seeds, self.max_seeds, self.round_size)) + [self.max_seeds]
        return tuple(n)

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.max_seeds for n in self.looks)

    @property
    def levels(self) -> tuple[float, ...]:
        """Nominal two-sided p level of each look: Welch p below it separates."""
        return _levels(self.fractions, self.alpha)

    def look_of(self, n: int) -> int | None:
        """The look (0-based) held at ``n`` seeds per model, None between looks."""
        return self.looks.index(n) if n in self.looks else None

    def describe(self) -> str:
        k = len(self.looks)
        return (f"group-sequential, Lan-DeMets O'Brien-Fleming alpha spending, two-sided "
                f"alpha {self.alpha:g}, {k} look{'s' if k > 1 else ''} at "
                f"{', '.join(map(str, self.looks))} seeds per model, Welch's test at each look; "
                f"futility below {self.futility_power:.0%} conditional power"
                + (f" for a {self.smallest_effect:g}-point effect"
                   if self.smallest_effect else " under the observed difference")
                + "; two models stuck at chance in every seed are set aside (both stuck)")


@dataclass(frozen=True)
class Look:
    seeds: int
    diff: float  # points, a - b
    p: float  # Welch, two-sided
    level: float  # this look's nominal level
    spent: float  # alpha spent through this look


@dataclass(frozen=True)
class State:
    """Where one comparison stands: open, separated (at a look), futile (with the seeds an
    effect of the size that matters would need), both stuck or max reached."""

    status: str
    looks: tuple[Look, ...] = ()
    seeds_needed: int | None = None
    reason: str = ""
    p_stagewise: float = math.nan  # for Holm at the end
    holm_p: float = math.nan
    separated: bool = False  # after Holm
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.status != OPEN


@dataclass(frozen=True)
class Welch:
    diff: float  # points, a - b
    p: float  # two-sided
    z: float  # the normal deviate of the same two-sided p
    se: float  # of the difference
    df: float  # Welch-Satterthwaite


def welch(a: np.ndarray, b: np.ndarray) -> Welch:
    """Welch's test of a against b, in points (scipy.special: this runs in simulations)."""
    diff = float(np.mean(a) - np.mean(b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        p, df = (1.0 if diff == 0 else 0.0), float(len(a) + len(b) - 2)
    else:
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        p = float(2 * special.stdtr(df, -abs(diff) / se))
    return Welch(diff, p, float(-special.ndtri(max(p, 1e-300) / 2)), se, float(df))


def _conditional_power(z: float, t: float, effect: float, sd: float, n_max: int,
                       c_final: float) -> float:
    """P(|Z| >= c_final at the last look | Z = z now), if the true difference is ``effect``
    (B-value form: B(t) = z sqrt(t), drift theta = effect / (sd sqrt(2 / n_max)))."""
    if t >= 1 or sd <= 0:
        return 0.0
    theta = abs(effect) / (sd * math.sqrt(2 / n_max))
    bt = abs(z) * math.sqrt(t)  # the effect taken in the observed direction
    rest = math.sqrt(1 - t)
    return float(special.ndtr((bt + theta * (1 - t) - c_final) / rest)
                 + special.ndtr((-c_final - bt - theta * (1 - t)) / rest))


def _futility(design: Design, k: int, w: Welch, sd: float) -> tuple[str, int | None] | None:
    """Why the comparison is futile at look ``k`` (and the seeds it would need), or None."""
    if k == 0 or k == len(design.looks) - 1:  # the first look is too noisy to give up on
        return None
    diff = w.diff
    effect = design.smallest_effect or abs(diff)
    need = seeds_needed(effect, sd, design.alpha)
    c_final = boundaries(design.fractions, design.alpha)[-1]
    t = design.fractions[k]
    if design.smallest_effect:
        half = float(special.stdtrit(w.df, 1 - design.alpha / 2)) * w.se
        if abs(diff) + half < design.smallest_effect:
            return (f"its 95 % interval ({diff - half:+.2f}, {diff + half:+.2f}) excludes "
                    f"differences of {design.smallest_effect:g} points", need)
    cp = _conditional_power(w.z, t, effect, sd, design.max_seeds, c_final)
    if cp < design.futility_power:
        return (f"{design.max_seeds} seeds would separate a {effect:.2f}-point difference "
                f"with probability {cp:.0%}", need)
    return None


def evaluate(a: Sequence[float], b: Sequence[float], design: Design,
             stuck_a: Sequence[bool] = (), stuck_b: Sequence[bool] = ()) -> State:
    """The state of one comparison after the looks its seeds allow (the same number of
    seeds per model, the first ``n`` of each, in seed order). ``stuck_a``, ``stuck_b``:
    whether each of those seeds' runs is stuck at chance (missing: not stuck)."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n_have = min(len(xa), len(xb))
    levels = design.levels
    looks: list[Look] = []
    for k, n in enumerate(design.looks):
        if n > n_have:
            break
        w = welch(xa[:n], xb[:n])
        looks.append(Look(n, w.diff, w.p, levels[k], spent(design.fractions[k], design.alpha)))
        if _all_stuck(stuck_a, n) and _all_stuck(stuck_b, n):
            return State(BOTH_STUCK, tuple(looks), reason=f"both models stuck at chance in "
                         f"all {n} seeds: they differ only in the class a stuck network "
                         f"leans to, which says nothing about learning", p_stagewise=1.0)
        sd = w.se * math.sqrt(n / 2)  # the per-seed spread, pooled over the two models
        p_stage = stagewise_p(design.fractions, k, w.z, design.alpha)
        if w.p <= levels[k]:
            return State(SEPARATED, tuple(looks), reason=f"crossed the boundary at look "
                         f"{k + 1} (p {w.p:.2g} <= {levels[k]:.2g})", p_stagewise=p_stage)
        if k == len(design.looks) - 1:
            need = seeds_needed(design.smallest_effect or w.diff, sd, design.alpha)
            return State(MAX_REACHED, tuple(looks), need,
                         f"{n} seeds, the maximum, did not separate it", p_stage)
        why = _futility(design, k, w, sd)
        if why:
            return State(FUTILE, tuple(looks), why[1], why[0], p_stage)
    return State(OPEN, tuple(looks))


def _all_stuck(flags: Sequence[bool], n: int) -> bool:
    return len(flags) >= n and all(flags[:n])


def holm_family(states: Mapping[str, State], alpha: float = ALPHA) -> dict[str, State]:
    """Holm across one family's comparisons on their stage-wise p values; a comparison is
    separated only if it crossed its boundary and Holm keeps it. Comparisons that did not
    cross enter with p 1 (they are never separated, and must not loosen the others)."""
    from dataclasses import replace
    names = list(states)
    ps = [s.p_stagewise if s.status == SEPARATED else 1.0 for s in states.values()]
    adjusted: np.ndarray | list[float] = holm(ps) if names else []
    return {n: replace(s, holm_p=float(q), separated=s.status == SEPARATED and q <= alpha)
            for n, s, q in zip(names, states.values(), adjusted, strict=True)}
