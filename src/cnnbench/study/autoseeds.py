"""Seeds in rounds while a comparison is open: which comparisons a study asks, where each
stands after a round, and which models the next round trains.

The comparisons: every pair of models of a plain study (one family, Holm over the pairs, as
the fixed design's table); for an ablation study each variant against its base, a family per
ablation (as What matters adjusts each ablation over its own tests). Each is a
group-sequential test (analysis/sequential.py); models are named as the plan trains them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnbench.analysis.sequential import OPEN, Design, State, evaluate, holm_family
from cnnbench.settings import AutoSeeds

if TYPE_CHECKING:
    from cnnbench.study.variants import Ablation


@dataclass(frozen=True)
class Pair:
    family: str  # '' for a plain study's model pairs, else the ablation's name
    a: str
    b: str

    @property
    def label(self) -> str:
        return f"{self.a} vs {self.b}"


def design_of(auto: AutoSeeds) -> Design:
    return Design(min_seeds=auto.min, max_seeds=auto.max, round_size=auto.round,
                  smallest_effect=auto.smallest_effect)


def pairs(model_names: Sequence[str], ablations: Sequence[Ablation] = (),
          base_training: Mapping[str, Any] | None = None) -> list[Pair]:
    """The comparisons of a study: the model pairs, or each variant against its ablation's
    base (by the names the plan trains them under)."""
    if not ablations:
        return [Pair("", a, b) for a, b in itertools.combinations(model_names, 2)]
    from cnnbench.study.ablation import canonical_names
    names = canonical_names(ablations, base_training or {})
    out = []
    for ab in ablations:
        base = next(v for v in ab.variants if dict(v.levels) == ab.base_levels)
        base_name = names[(ab.name, base.name)]
        for v in ab.variants:
            name = names[(ab.name, v.name)]
            if name != base_name and Pair(ab.name, name, base_name) not in out:
                out.append(Pair(ab.name, name, base_name))
    return out


def _series(acc: Mapping[int, float]) -> list[float]:
    """Accuracies by seed, 0, 1, 2 ... up to the first seed missing or not finite (a look
    needs the same first seeds of both models)."""
    out: list[float] = []
    for seed in itertools.count():
        x = acc.get(seed)
        if x is None or not math.isfinite(x):
            return out
        out.append(x)
    return out  # pragma: no cover


def states(comparisons: Sequence[Pair], accuracy: Mapping[str, Mapping[int, float]],
           design: Design, final: bool = False,
           stuck: Mapping[str, Mapping[int, bool]] | None = None) -> dict[Pair, State]:
    """Each comparison after the looks its seeds allow; Holm within each family once every
    comparison of that family is decided (``final``: at the end, whatever is left open).
    ``stuck``: model -> seed -> whether that run is stuck at chance (a comparison of two
    models stuck in every seed stops: sequential.py)."""
    models = {m for p in comparisons for m in (p.a, p.b)}
    series = {m: _series(accuracy.get(m, {})) for m in models}
    at_chance = {m: [(stuck or {}).get(m, {}).get(seed, False) for seed in range(len(series[m]))]
                 for m in models}
    now = {p: evaluate(series[p.a], series[p.b], design, at_chance[p.a], at_chance[p.b])
           for p in comparisons}
    for family in dict.fromkeys(p.family for p in comparisons):
        members = [p for p in comparisons if p.family == family]
        if final or all(now[p].decided for p in members):
            adjusted = holm_family({p.label: now[p] for p in members}, design.alpha)
            now.update({p: adjusted[p.label] for p in members})
    return now


def next_round(now: Mapping[Pair, State], design: Design, done: int
               ) -> tuple[tuple[int, ...], set[str]]:
    """The seeds of the next round and the models that train them: the models of every open
    comparison, up to its next look. Empty when every comparison is decided."""
    open_ = [p for p, s in now.items() if s.status == OPEN]
    if not open_:
        return (), set()
    target = next((n for n in design.looks if n > done), design.max_seeds)
    return tuple(range(done, target)), {m for p in open_ for m in (p.a, p.b)}


def look_line(now: Mapping[Pair, State], seeds: int) -> str:
    """After a look, in one line: what it decided, and what stays open.

    >>> look_line({Pair("", "a", "b"): State(OPEN)}, 3)
    'Look at 3 seeds: 0 of 1 comparison(s) decided; open: a vs b'
    """
    decided = [p.label for p, s in now.items() if s.status != OPEN]
    still = [p.label for p, s in now.items() if s.status == OPEN]
    return (f"Look at {seeds} seeds: {len(decided)} of {len(now)} comparison(s) decided"
            + (f"; open: {', '.join(still)}" if still else ""))


def lines(now: Mapping[Pair, State], design: Design) -> list[str]:
    """The report's account: the design, then each comparison's looks and why it stopped."""
    out = [f"Seeds chosen as the study went: {design.describe()}; Holm over the comparisons "
           f"of each family on their stage-wise p values. Looks spend alpha "
           + ", ".join(f"{a:.4f}" for a in _spent(design)) + " (cumulative). "
           + _runs_line(now, design)]
    for p, s in now.items():
        where = f"[{p.family}] " if p.family else ""
        last = s.looks[-1] if s.looks else None
        seen = (f"{last.seeds} seeds, {len(s.looks)} look(s), difference {last.diff:+.2f} "
                f"points, alpha spent {last.spent:.4f}" if last else "no look yet")
        verdict = ("separated" if s.separated else s.status if s.status != "separated"
                   else f"crossed, not kept by Holm (adjusted p {s.holm_p:.3g})")
        need = (f"; an effect that size would need about {s.seeds_needed} seeds a model"
                if s.seeds_needed and s.status != "separated" else "")
        out.append(f"{where}{p.label}: {verdict} ({seen}); {s.reason or 'still open'}{need}")
    return out


def _runs_line(now: Mapping[Pair, State], design: Design) -> str:
    """Seeds each model took, against a fixed design of the maximum for every model."""
    took: dict[str, int] = {}
    for p, s in now.items():
        n = s.looks[-1].seeds if s.looks else 0
        for m in (p.a, p.b):
            took[m] = max(took.get(m, 0), n)
    return (f"Runs used: {sum(took.values())} over {len(took)} model(s); a fixed design of "
            f"{design.max_seeds} seeds: {design.max_seeds * len(took)}.") if took else ""


def _spent(design: Design) -> list[float]:
    from cnnbench.analysis.sequential import spent
    return [spent(t, design.alpha) for t in design.fractions]
