"""A claim about a factor, put to the test on an ablation's runs: supported, contradicted or
not separable, with the effect sizes and intervals behind the verdict.

::

    claims:
      - name: depth
        says: accuracy dropped as number of convolutional layers increase   # the words tested
        ablation: depth-activation
        factor: depth
        expect: lower          # lower | higher: test accuracy of `level` against each `than`
        level: conv4
        than: [conv2]

Each (level, than) pair is compared in every cell of the ablation's other factors (they are
held fixed; Welch's t-test over seeds), Holm-adjusted over all the claim's comparisons. A
comparison **supports** the claim when its adjusted p is below 0.05 in the expected direction,
**contradicts** it when below 0.05 the other way, and is **not separable** otherwise; two
levels stuck at chance in every seed are **both stuck** (set aside: effects.py), which counts as
not separable. The claim:
supported (or contradicted) when every comparison is; not separable when none is separable;
otherwise mixed, and the sentences say where it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnbench.analysis.effects import Effect, Observation, adjust_holm, held_fixed
from cnnbench.analysis.stats import ALPHA
from cnnbench.constraints import shown
from cnnbench.model.spec import SpecError

VERDICTS = ("supported", "contradicted", "not separable", "mixed")
EXPECT = ("lower", "higher")
MAX_SAYS = 10_000  # characters of a claim's text (and of its other strings)


@dataclass(frozen=True)
class Claim:
    name: str
    says: str
    ablation: str
    factor: str
    expect: str
    level: str
    than: tuple[str, ...]


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    comparisons: list[Effect] = field(default_factory=list)

    def sentences(self) -> list[str]:
        c = self.claim
        head = (f"Claim \"{c.says}\" ({c.factor}={c.level} {c.expect} test accuracy than "
                f"{' and '.join(c.than)}"
                + (", the other factors held fixed" if any(e.within for e in self.comparisons)
                   else "") + f"; Holm over its {len(self.comparisons)} comparison(s)): "
                f"{self.verdict.upper()}.")
        out = [head]
        for e in self.comparisons:
            held = ", ".join(f"{k}={v}" for k, v in e.within.items())
            out.append(f"  {e.level} vs {e.reference}" + (f" with {held}" if held else "")
                       + f": {e.describe()} -> {judge_one(e, c.expect)}.")
        if not self.comparisons:
            out.append("  No runs of these levels finished: nothing to judge.")
        return out


def judge_one(e: Effect, expect: str) -> str:
    """One comparison's verdict: its Holm-adjusted p, and the sign of its effect."""
    if e.both_stuck:
        return "both stuck"
    if math.isnan(e.p_holm) or e.p_holm >= ALPHA:
        return "not separable"
    wanted = e.estimate < 0 if expect == "lower" else e.estimate > 0
    return "supported" if wanted else "contradicted"


def judge(claim: Claim, obs: Sequence[Observation]) -> Verdict:
    """The claim's verdict on these runs (one ablation's)."""
    comparisons: list[Effect] = []
    for ref in claim.than:
        comparisons += held_fixed(obs, claim.factor, claim.level, ref, "acc")
    n = len(comparisons)
    adjust_holm(comparisons, f"the claim's {n} comparison{'s' if n != 1 else ''}")
    each = [judge_one(e, claim.expect) for e in comparisons]
    if not each or all(v in ("not separable", "both stuck") for v in each):
        verdict = "not separable"
    elif all(v == "supported" for v in each):
        verdict = "supported"
    elif all(v == "contradicted" for v in each):
        verdict = "contradicted"
    else:
        verdict = "mixed"
    return Verdict(claim, verdict, comparisons)


def parse_claims(value: Any, ablations: Sequence[Any], where: str) -> tuple[Claim, ...]:
    """Validate the study file's claims against its ablations' factors and levels."""
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list of claims. Got {shown(value)}.")
    by_name = {a.name: a for a in ablations}
    fields = ("name", "says", "ablation", "factor", "expect", "level", "than")
    out = []
    for i, c in enumerate(value, start=1):
        w = f"{where}[{i}]"
        if not isinstance(c, dict):
            raise SpecError(f"{w} must be a mapping with {', '.join(fields)}. Got {shown(c)}.")
        missing = [k for k in fields if k not in c]
        extra = sorted(map(str, set(c) - set(fields)))
        if missing or extra:
            raise SpecError(f"{w}: " + (f"missing {missing}" if missing else
                                        f"unknown field(s) {extra}")
                            + f"; a claim has {', '.join(fields)}.")
        for key in ("name", "says", "ablation", "factor", "expect"):
            if not isinstance(c[key], str | int | float) or isinstance(c[key], bool) or len(
                    str(c[key])) > MAX_SAYS:
                raise SpecError(f"{w}: '{key}' must be a string (at most {MAX_SAYS:,} "
                                f"characters). Got {shown(c[key])}.")
            c = c | {key: str(c[key])}
        a = by_name.get(c["ablation"])
        if a is None:
            raise SpecError(f"{w}: no ablation named {c['ablation']!r}; the study's "
                            f"ablations: {', '.join(by_name) or 'none'}.")
        try:
            factor = a.factor(c["factor"])
        except KeyError:
            raise SpecError(f"{w}: ablation {a.name!r} has no factor {c['factor']!r}; its "
                            f"factors: {', '.join(f.name for f in a.factors)}.") from None
        level, than = _compared(c["level"], c["than"], factor, w)
        if c["expect"] not in EXPECT:
            raise SpecError(f"{w}: expect must be lower or higher. Got {c['expect']!r}.")
        out.append(Claim(c["name"], c["says"], a.name, factor.name, c["expect"], level, than))
    return tuple(out)


def _compared(level: Any, than: Any, factor: Any, w: str) -> tuple[str, tuple[str, ...]]:
    """A claim's level and the levels it is compared with: levels of the factor, written as
    the study file labels them, the level never among the others, none twice."""
    others = than if isinstance(than, list) else [than]
    labels = []
    for x in [level, *others]:
        if isinstance(x, dict | list) or str(x) not in factor.labels:
            raise SpecError(f"{w}: {shown(x)} is not a level of factor {factor.name!r} "
                            f"(levels: {', '.join(factor.labels)}).")
        labels.append(str(x))
    if not others:
        raise SpecError(f"{w}: 'than' names no level to compare {labels[0]!r} with.")
    if labels[0] in labels[1:]:
        raise SpecError(f"{w}: compares level {labels[0]!r} with itself; 'than' lists the "
                        f"other levels of {factor.name!r} it is expected to be "
                        f"lower or higher than.")
    if len(set(labels[1:])) != len(labels) - 1:
        raise SpecError(f"{w}: 'than' names a level twice: {labels[1:]}.")
    return labels[0], tuple(labels[1:])
