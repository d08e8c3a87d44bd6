"""The store's chaos benchmark, small: 3 SIGKILLs of a study and 2 processes sharing a store
with rm and --force in between. The full run (50 kills, 4 x 10) is bench/chaos_store.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import env

BENCH = Path(__file__).resolve().parents[1] / "bench" / "chaos_store.py"


@pytest.mark.slow
def test_three_kills_and_two_processes_lose_nothing(tmp_path):
    out = tmp_path / "figures.json"
    p = subprocess.run([sys.executable, str(BENCH), "--kills", "3", "--procs", "2", "--runs",
                        "2", "--seed", "1", "--work", str(tmp_path / "w"), "--json", str(out)],
                       capture_output=True, text=True, env=env(), timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    figures = json.loads(out.read_text())
    kills, conc = figures["kills"], figures["concurrency"]
    assert kills["kills"] == 3 and kills["rounds"] >= 1
    assert (kills["epochs_lost"], kills["mismatches"], kills["verify"], kills["running"],
            kills["tracebacks"]) == (0, [], [], 0, 0)
    assert (conc["verify"], conc["running"], conc["tracebacks"]) == ([], 0, 0)
    assert conc["rows"] == conc["folders"] == conc["finished"] == conc["expected_rows"]
    assert conc["final_exit"] == 0
    assert "| epochs lost | 0 | 0 |" in p.stdout
