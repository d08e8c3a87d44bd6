"""``cnnbench report``: stored runs to report.html and report.md, with the runs' own data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cnnbench.data.datasets import Dataset
from cnnbench.data.resolve import open_runs_dataset
from cnnbench.errors import UsageError
from cnnbench.store.run_store import RunStore


def check_same_data(store: RunStore, ids: Sequence[str], dataset: Dataset,
                    data_dir: Path | None) -> None:
    """A report's confusion matrices and tests compare predictions with these labels: refuse
    data other than the runs' (fingerprint of the four arrays)."""
    fp = dataset.fingerprint()
    for rid in ids:
        try:
            theirs = store.read_config(rid)["dataset"]["fingerprint"]
        except (OSError, ValueError, KeyError):
            continue  # a run without its config: the report says what it lacks
        if theirs != fp:
            raise UsageError(f"run {rid} was trained on data with fingerprint {theirs[:16]}..., "
                             f"but {data_dir or dataset.info.name} has {fp[:16]}...; a report "
                             f"needs the runs' own data (give its --data-dir)")


def report_runs(store_root: Path | None, refs: Sequence[str], out: Path,
                data_dir: Path | None, log: Callable[[str], None]
                ) -> tuple[list[str], dict[str, Path], list[str]]:
    """The runs named (each once; default: every finished run), their report written to
    ``out``: (run ids, the report's paths, its conclusions)."""
    from cnnbench.report.build import write_study_report
    store = RunStore(store_root, create=False)
    ids = list(dict.fromkeys(store.resolve(r) for r in refs)) if refs else store.done_ids()
    rows = [store.get(i) for i in ids]
    datasets = sorted({r.dataset for r in rows if r is not None})
    if len(datasets) != 1:
        raise UsageError(f"a report compares runs on one dataset; these runs are on "
                         f"{', '.join(datasets) or 'none'}: name the runs to report")
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    dataset = open_runs_dataset(datasets[0], data_dir, f"run(s) {shown}", log=log)
    check_same_data(store, ids, dataset, data_dir)
    paths, lines = write_study_report(store, ids, dataset, out)
    return ids, paths, lines
