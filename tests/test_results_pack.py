"""The README's table of the notebook's study over seeds is what the runs committed beside it
give: unpacked from results/, they print the README's rows digit for digit, and the pack
holds the faithful study (the notebook's four models, fp32, 12 epochs, full data)."""

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
