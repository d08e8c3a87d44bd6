"""The fuzz benchmark's small version (issue 12): 50 mutated specs, 20 damaged data folders,
10 damaged images and 10 mutated Keras sources through the real commands: no traceback, no
hang, every refusal one line naming the file. The full run is ``python bench/chaos_fuzz.py``."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_small_fuzz_finds_no_traceback_hang_or_unclear_refusal():
    counts = {"spec": 50, "data": 20, "image": 10, "source": 10}
    sys.path.insert(0, str(BENCH))  # the spawned worker imports chaos_fuzz from here too
    try:
        from chaos_fuzz import format_table, fuzz
        table = fuzz(counts, seed=12, timeout=60, log=lambda m: None)
    finally:
        sys.path.remove(str(BENCH))
    report = format_table(table)
    for family, n in counts.items():
        assert sum(table.rows[family].values()) == n, report
    assert table.total("traceback") == 0, report
    assert table.total("hang") == 0, report
    assert table.total("bad-refusal") == 0, report
    # The mutations must reach both sides: some inputs survive, most are refused.
    assert table.total("refused") >= 60, report
    assert table.total("accepted") >= 3, report


def test_the_fuzz_is_reproducible(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from chaos_fuzz import make_source, make_spec
    finally:
        sys.path.remove(str(BENCH))
    import random
    texts = []
    for run in range(2):
        d = tmp_path / str(run)
        d.mkdir()
        make_spec(random.Random("7-spec-3"), d / "s.yaml")
        texts.append((d / "s.yaml").read_bytes() + make_source(random.Random("7-source-3"),
                                                                d / "m").read_bytes())
    assert texts[0] == texts[1]
