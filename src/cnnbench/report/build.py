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
                       out: Path, ablation: tuple[Any, Any, Any] | None = None,
                       sequential: Sequence[str] = ()) -> tuple[dict[str, Path], list[str]]:
    """report.html and report.md in ``out`` for these runs (finished or diverged ones; each
    once, however often it is named); returns their paths and the report's conclusions and
    diagnosis, for the terminal. ``ablation``: (ablations, claims, run ids by (ablation,
    variant, seed)) adds the "what matters" section; without it, the section is rebuilt from
    the studies the runs' config.json keep. ``sequential``: the Sequential seeds section."""
    from cnnbench.report.content import collect
    from cnnbench.report.html import write_report

    run_ids = list(dict.fromkeys(run_ids))
    records, configs = [], {}
    for rid in run_ids:
        row = store.get(rid)
        if row is not None and row.status.done:
            records.append(store.record(rid))
            configs[rid] = _config(store, rid)
    if not records:
        raise ReportError(f"none of the runs {', '.join(run_ids)} in {store.root} has "
                          f"finished; nothing to report")
    limits = {r.config.get("train_limit") for r in records}
    limit = limits.pop() if len(limits) == 1 else None  # per group in the summary otherwise
    n_train = min(len(dataset.x_train), limit or len(dataset.x_train))
    info = {"name": dataset.info.name, "n_train": n_train, "n_test": len(dataset.x_test),
            "classes": list(dataset.info.classes)}
    from cnnbench.report.notebook_table import notebook_rows, notebook_scope
    # The notebook only beside its own models at its own settings (notebook_table.py).
    scope = notebook_scope(records, dataset.info.name, len(dataset.x_train))
    reference = scope.reference
    fingerprints = {rid: fp for rid, c in configs.items()
                    if isinstance(fp := (c.get("dataset") or {}).get("fingerprint"), str)}
    content = collect(records, dataset.y_test, info, fingerprints, reference)
    content.notebook_rows = notebook_rows(content.stats, reference, scope.shipped)
    content.notes += scope.notes(content.stats)
    extra = _what_matters(content, records, configs, ablation, dataset)
    content.sequential = list(sequential)
    paths = write_report(records, dataset.y_test, dataset.x_test, out, dataset=info,
                         reference=reference, title=f"cnnbench report: {dataset.info.name}",
                         content=content)
    return paths, extra + content.conclusions + content.notes + content.diagnosis_lines


def _config(store: RunStore, rid: str) -> dict[str, Any]:
    """A run's config.json, or {} where it cannot be read (the report says what it lacks)."""
    try:
        config = store.read_config(rid)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _what_matters(content: Any, records: Sequence[Any], configs: dict[str, dict[str, Any]],
                  ablation: tuple[Any, Any, Any] | None, dataset: Dataset) -> list[str]:
    """The What-matters sections (the study given, else those the runs keep) into
    ``content``; their lines for the terminal."""
    from cnnbench.report.content import grouped_conclusions
    from cnnbench.report.whatmatters import build, stored_studies
    studies, notes = ([ablation], []) if ablation is not None else stored_studies(configs)
    content.notes += notes
    by_id = {r.run_id: r for r in records}
    content.what_matters = []
    for a, c, ids in studies:
        try:
            wm = build(a, c, ids, by_id, dataset.y_test, dataset.num_classes)
        except (KeyError, ValueError, TypeError) as e:  # a stored study at odds with itself
            if ablation is not None:
                raise
            content.notes.append(f"What matters: a study stored with these runs does not fit "
                                 f"them ({type(e).__name__}: {e}); its section is left out.")
            continue
        if wm.curves:  # a study none of whose runs is reported here has nothing to say
            content.what_matters.append(wm)
    if not content.what_matters:
        return []
    # Every variant against every other is not the designed comparison (and Holm over all
    # pairs is the wrong family): the pairwise table stays, its sentences go.
    content.conclusions = grouped_conclusions(content, pairs=False) + [
        "Every variant against every other trained under the same settings: the pairwise "
        "table below (Holm over its model pairs, as its 'Holm over' column says); the "
        "designed comparisons, each adjusted over its own ablation's tests, are in What "
        "matters."]
    return [line for wm in content.what_matters for line in wm.lines()]
