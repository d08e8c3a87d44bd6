"""From the run store to the report: the store is the one source ``run`` and ``report`` read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnbench.data.datasets import Dataset
from cnnbench.errors import UsageError
from cnnbench.store.run_store import RunStore


class ReportError(UsageError, ValueError):
    """Runs that cannot be reported (not in the store, none finished); names them."""


def write_study_report(store: RunStore, run_ids: Sequence[str], dataset: Dataset,
                       out: Path, ablation: tuple[Any, Any, Any] | None = None
                       ) -> tuple[dict[str, Path], list[str]]:
    """report.html and report.md in ``out`` for these runs (finished or diverged ones);
    returns their paths and the report's conclusions and diagnosis, for the terminal.
    ``ablation``: (ablations, claims, run ids by (ablation, variant, seed)) adds the
    "what matters" section."""
    from cnnbench.report.content import collect
    from cnnbench.report.html import write_report

    records = []
    for rid in run_ids:
        row = store.get(rid)
        if row is not None and row.status.done:
            records.append(store.record(rid))
    if not records:
        raise ReportError(f"none of the runs {', '.join(run_ids)} in {store.root} has "
                          f"finished; nothing to report")
    config: dict[str, Any] = records[0].config
    n_train = min(len(dataset.x_train), config.get("train_limit") or len(dataset.x_train))
    info = {"name": dataset.info.name, "n_train": n_train, "n_test": len(dataset.x_test),
            "classes": list(dataset.info.classes)}
    from cnnbench.report.notebook_table import notebook_rows, notebook_scope
    # The notebook only beside its own models at its own settings (notebook_table.py).
    scope = notebook_scope(records, dataset.info.name, len(dataset.x_train))
    reference = scope.reference
    content = collect(records, dataset.y_test, info)
    content.notebook_rows = notebook_rows(content.stats, reference, scope.shipped)
    extra: list[str] = []
    if ablation is not None:
        from cnnbench.report.whatmatters import build
        ablations, claims, ids = ablation
        content.what_matters = build(ablations, claims, ids, {r.run_id: r for r in records},
                                     dataset.y_test, dataset.num_classes)
        extra = content.what_matters.lines()
        # Every variant against every other is not the designed comparison (and Holm over
        # all pairs is the wrong family): the pairwise table stays, its sentences go.
        from cnnbench.analysis.stats import conclusions
        content.conclusions = conclusions(content.stats, []) + [
            f"Every variant against every other: the pairwise table below (Holm over all "
            f"{len(content.comparisons)} pairs); the designed comparisons are in What "
            f"matters."]
    paths = write_report(records, dataset.y_test, dataset.x_test, out, dataset=info,
                         reference=reference, title=f"cnnbench report: {dataset.info.name}",
                         content=content)
    return paths, extra + content.conclusions + content.diagnosis_lines
