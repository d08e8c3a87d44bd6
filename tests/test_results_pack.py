"""The README's table of the notebook's study over seeds, and docs/performance.md's fp32 vs
bf16 table, are what the runs committed beside them give: unpacked from results/, they print
those rows digit for digit, and the pack holds the faithful study (the notebook's four models,
fp32, 12 epochs, full data)."""

from __future__ import annotations

import json
from pathlib import Path

from cnnbench.analysis.stats import model_stats
from cnnbench.model.spec import get_spec
from cnnbench.report.figures import notebook_reference
from cnnbench.report.notebook_table import notebook_rows
from cnnbench.store.pack import unpack
from cnnbench.store.run_store import RunStore, resolved_spec, run_id, run_key
from cnnbench.train.engine import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "results" / "notebook-fp32-seeds.tar.gz"
MODELS = ("CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3", "CNN_MNIST_4")


def test_the_readme_table_over_seeds_is_what_the_committed_runs_give(tmp_path, mnist):
    store = RunStore(tmp_path / "s")
    done = unpack(store, PACK)
    assert {u.action for u in done} == {"added"}
    records = [store.record(rid) for rid in store.done_ids()]
    assert store.verify() == []
    seeds = {m: sorted(r.seed for r in records if r.model == m) for m in MODELS}
    assert len(set(map(tuple, seeds.values()))) == 1 and len(seeds["CNN_MNIST_1"]) >= 5, seeds
    # The faithful study: the very runs `cnnbench run --seeds ...` would train (and now reuses)
    # with the built-in models and the default settings, on MNIST's 60k/10k.
    fingerprint = json.loads((store.folder(records[0].run_id) / "config.json").read_text())[
        "dataset"]["fingerprint"]
    assert fingerprint == mnist.fingerprint()  # the real MNIST, as loaded here
    expected = {run_id(run_key(resolved_spec(get_spec(m)), TrainConfig(seed=s).to_dict(),
                               fingerprint)) for m in MODELS for s in seeds[m]}
    assert set(store.done_ids()) == expected
    assert all(r.status == "finished" and r.epochs == 12 for r in records)
    readme = (ROOT / "README.md").read_text()
    rows = notebook_rows(model_stats(records), notebook_reference())
    assert [row["Model"] for row in rows] == list(MODELS)
    for row in rows:
        line = "| " + " | ".join(row.values()) + " |"
        assert line in readme, f"README lacks, or differs from, the row\n{line}"


def test_the_fp32_vs_bf16_table_of_docs_performance_is_what_the_committed_runs_give(
        tmp_path, mnist):
    """The bf16 pack holds `cnnbench run --seeds 0 1 2 --precision bf16` (the faithful study
    otherwise), and bench/bench_precision.py over both packs prints docs/performance.md's
    rows."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_precision import from_runs, markdown_rows
    finally:
        sys.path.remove(str(ROOT / "bench"))
    bf16 = ROOT / "results" / "notebook-bf16-seeds.tar.gz"
    store = RunStore(tmp_path / "s")
    unpack(store, bf16)
    expected = {run_id(run_key(resolved_spec(get_spec(m)),
                               TrainConfig(seed=s, precision="bf16").to_dict(),
                               mnist.fingerprint())) for m in MODELS for s in (0, 1, 2)}
    assert set(store.done_ids()) == expected
    acc, _, what = from_runs([PACK, bf16])
    assert what == "12 epochs, fp32 seeds [0, 1, 2, 3, 4], bf16 seeds [0, 1, 2]"
    page = (ROOT / "docs" / "performance.md").read_text()
    for row in markdown_rows({m: acc[m] for m in MODELS}):
        assert row in page, f"docs/performance.md lacks, or differs from, the row\n{row}"
