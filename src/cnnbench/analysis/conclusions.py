"""The statistics of a study in plain sentences, each with its evidence: the ranking by mean
test accuracy, one sentence per comparison (significant, consistent over seeds but not
established, or indistinguishable; with one seed, what two trained networks show and how many
seeds a claim about the architectures would need), and the diverged runs left out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnbench.analysis.stats import ALPHA, BOTH_STUCK, Comparison, ModelStats, fmt_p, seeds_needed


def _single_seed(c: Comparison, spread: dict[str, tuple[float, int]], alpha: float) -> str:
    """A McNemar result in words: about two trained networks, with the seeds a claim about
    the architectures would need."""
    beyond = ("more than test-set noise explains" if c.significant(alpha)
              else "within test-set noise")
    text = (f"One seed each: on this test set, the trained network {c.a} got "
            f"{c.diff:.2f} ± {c.se:.2f} points more images right than the trained network "
            f"{c.b}, {beyond} ({fmt_p(c.p_holm)} {c.holm_label}; {c.detail}). This is about "
            f"these two networks, not about {c.a} and {c.b} as architectures: retrained from "
            f"other seeds, either may come out ahead.")
    sds = [spread[m] for m in (c.a, c.b) if m in spread and math.isfinite(spread[m][0])]
    if not sds:
        return text + (" These runs are too short to show how much accuracy moves between "
                       "epochs; a pilot over 3 or more seeds per model would show how many "
                       "seeds it takes to tell them apart.")
    sd = float(np.mean([s for s, _ in sds]))
    n = seeds_needed(c.diff, sd, alpha)
    need = (f"about {n} seeds per model" if n is not None else "more seeds than any study "
            "can run (no difference to find)")
    return text + (f" Their test accuracy moved by {sd:.2f} points (sd over the last "
                   f"{sds[0][1]} epochs) from epoch to epoch; if retrained networks spread as "
                   f"much, telling {abs(c.diff):.2f} points apart would take {need} (Welch, "
                   f"two-sided 5 %, power 80 %). Run with --seeds to find out.")


def conclusions(model_stats_: Sequence[ModelStats], comparisons: Sequence[Comparison],
                alpha: float = ALPHA, epochs_spread: dict[str, tuple[float, int]] | None = None
                ) -> list[str]:
    """Plain sentences, each with its evidence, generated from the numbers. ``epochs_spread``: per
    model, ``epoch_spread`` of one of its runs, for the single-seed sentences."""
    out = []
    ranked = sorted((s for s in model_stats_ if s.n), key=lambda s: -s.acc_mean)
    if ranked:
        parts = []
        for s in ranked:
            spread = f" ± {100 * s.acc_std:.2f}" if s.n > 1 else ""
            parts.append(f"{s.model} {100 * s.acc_mean:.2f}{spread} %")
        runs = {s.n for s in ranked}
        over = (f"over {runs.pop()} seed{'s' if max(s.n for s in ranked) > 1 else ''}"
                if len(runs) == 1 else "over the finished seeds")
        out.append(f"Mean test accuracy {over}: " + ", ".join(parts) + ".")
    for c in comparisons:
        if c.test == BOTH_STUCK:
            out.append(f"{c.a} and {c.b} are both stuck at chance in every seed: their "
                       f"{c.diff:.2f}-point difference is only the class each stuck network "
                       f"leans to, so they are not compared.")
            continue
        evidence = f"{fmt_p(c.p_holm)} {c.holm_label} ({c.detail}; raw {fmt_p(c.pvalue)})"
        if c.test == "mcnemar":
            out.append(_single_seed(c, epochs_spread or {}, alpha))
            continue
        if c.seeds_matched:
            evidence += (f"; seed by seed, {c.a} was ahead in {c.seeds_ahead} of "
                         f"{c.seeds_matched}, beyond test-set noise in {c.seeds_significant}")
        if c.significant(alpha):
            out.append(f"{c.a} beats {c.b} by {c.diff:.2f} ± {c.se:.2f} points, {evidence}.")
        elif c.consistent:
            out.append(f"{c.a} was ahead of {c.b} on every one of {c.seeds_matched} seeds, "
                       f"each time beyond test-set noise (McNemar p<{alpha:g}), but the "
                       f"seed-to-seed spread is too large for {c.seeds_matched} seeds to "
                       f"establish it: difference {c.diff:.2f} ± {c.se:.2f} points, "
                       f"{fmt_p(c.p_holm)} {c.holm_label} ({c.detail}). More seeds would "
                       f"settle it.")
        else:
            out.append(f"{c.a} and {c.b} are indistinguishable with this data "
                       f"(difference {c.diff:.2f} ± {c.se:.2f} points), {evidence}.")
    for s in model_stats_:
        if s.n_failed:
            out.append(f"{s.model}: {s.n_failed} of {len(s.seeds)} runs diverged and are left "
                       f"out of its statistics.")
    return out
