"""The study a run is trained under, as the run's config.json keeps it under "study": written
with each finished or diverged run of an ablation, read back by ``cnnbench report``
(:mod:`cnnbench.report.whatmatters`) to rebuild the What-matters section from stored runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

# The shape of config.json's "study" (study_document); report/whatmatters.py reads it back.
STUDY_FORMAT = 1


def study_document(ablations: Sequence[Any], claims: Sequence[Any],
                   run_ids: Mapping[tuple[str, str, int], str]) -> dict[str, Any]:
    """The study a run is trained under, as its config.json keeps it (``"study"``): every
    ablation (its base and every variant as full specs, its factors and their levels), the
    claims, and the run id of each (ablation, variant, seed), so that ``cnnbench report``
    rebuilds the What-matters section from stored runs alone. Not part of the run key: the
    same run serves every study that asks for it."""
    doc = {
        "format": STUDY_FORMAT,
        "ablations": [{
            "name": a.name, "design": a.design, "base": a.base.raw,
            "factors": [{"name": f.name, "kind": f.kind, "target": f.target,
                         "levels": [[label, value] for label, value in f.levels],
                         "base": f.base, "argument": f.argument} for f in a.factors],
            "variants": [{"name": v.name, "levels": dict(v.levels),
                          "training": dict(v.training), "spec": v.spec.raw}
                         for v in a.variants]} for a in ablations],
        "claims": [dataclasses.asdict(c) for c in claims],
        "runs": [[a, v, seed, rid] for (a, v, seed), rid in run_ids.items()],
    }
    plain: dict[str, Any] = json.loads(json.dumps(doc, default=str))  # as it will be read back
    return plain
