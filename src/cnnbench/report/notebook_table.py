"""The notebook's single numbers beside this study's seeds: mean ± sd, 95 % interval, range,
and whether each notebook number lies inside the seeds' range."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cnnbench.analysis.stats import ModelStats, clip_interval


def notebook_rows(stats: Sequence[ModelStats], reference: Mapping[str, Any]
                  ) -> list[dict[str, str]]:
    """One row per model the notebook also ran; empty when it ran none of them."""
    rows = []
    for s in stats:
        ref = reference.get(s.model)
        if not ref or not s.n:
            continue
        nb = float(ref["test_accuracy_percent"])
        lo, hi = clip_interval(s.acc_ci)
        lo_r, hi_r = 100 * s.acc_min, 100 * s.acc_max
        # The notebook printed two decimals: inside means within half a unit of the last one.
        inside = lo_r - 0.005 <= nb <= hi_r + 0.005
        rows.append({
            "Model": s.model, "Seeds": str(s.n),
            "Mean ± sd %": f"{100 * s.acc_mean:.2f}" + (
                f" ± {100 * s.acc_std:.2f}" if s.n > 1 else ""),
            "95% CI %": "n/a" if math.isnan(lo) else f"{100 * lo:.2f} – {100 * hi:.2f}",
            "Min – max %": f"{lo_r:.2f} – {hi_r:.2f}",
            "Notebook % (1 run)": f"{nb:.2f}",
            "Notebook inside the seeds' range": "yes" if inside else (
                "no, above" if nb > hi_r else "no, below")})
    return rows
