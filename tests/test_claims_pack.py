"""The README's claims table is what the committed runs of the full-size `notebook-claims`
study give: unpacked from results/ and reported without training, every verdict, effect,
interval bound and p-value of the table is in the report's claims section."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import cnnbench_main

from cnnbench.store.pack import unpack
from cnnbench.store.run_store import RunStore

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "results" / "notebook-claims-runs.tar.gz"
HEADER = "| claim (the notebook's, or about model 3) | verdict |"


def readme_claims() -> list[tuple[str, str]]:
    """(verdict, evidence) of each row of the README's claims table, in its order."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        _, verdict, evidence = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((verdict, evidence))
    return rows


def report_claims(md: str) -> list[tuple[str, str]]:
    """(verdict, its comparisons' lines) of each claim in report.md, in the study's order."""
    section = md.split("### The claims", 1)[1].split("\n### ", 1)[0]
    blocks = re.split(r"\n(?=- Claim )", section.strip())
    return [(re.search(r"\): ([A-Z ]+)\.\n", b + "\n").group(1).lower(), b) for b in blocks]


def test_the_readme_claims_table_is_what_the_committed_runs_give(tmp_path, mnist):
    store = RunStore(tmp_path / "s")
    assert {u.action for u in unpack(store, PACK)} == {"added"}
    assert store.verify() == []
    configs = [json.loads((store.folder(rid) / "config.json").read_text())
               for rid in store.done_ids()]
    assert len(configs) == 56
    assert {c["dataset"]["fingerprint"] for c in configs} == {mnist.fingerprint()}
    assert {(c["training"]["epochs"], c["training"]["validation_split"],
             c["training"]["early_stopping"], c["training"]["precision"])
            for c in configs} == {(12, 0.1, 3, "bf16")}
    rc, _, err = cnnbench_main("report", "--store", tmp_path / "s", "--out", tmp_path / "r")
    assert rc == 0, err
    reported = report_claims((tmp_path / "r" / "report.md").read_text())
    table = readme_claims()
    assert len(table) == len(reported) == 5
    for (verdict, evidence), (said, block) in zip(table, reported, strict=True):
        assert verdict.split(":")[0] == said, (verdict, block)
        for number in re.findall(r"[+-]\d+\.\d+|p[=<]\d*\.\d+", evidence):
            assert number in block, f"README's {number!r} is not in the report:\n{block}"
