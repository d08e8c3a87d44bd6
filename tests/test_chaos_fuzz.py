"""The fuzz benchmark's small version: mutated specs, damaged data folders, damaged images and
mutated Keras sources through the real commands (no traceback, no hang, every refusal one line
naming the file); the newer input classes (study files, packs, export targets, store paths,
huge numbers) run end to end; and the write property the fuzzer checks catches what it must.
The full run is ``python bench/chaos_fuzz.py``."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def chaos():
    sys.path.insert(0, str(BENCH))  # the spawned worker imports chaos_fuzz from here too
    try:
        import chaos_fuzz
        yield chaos_fuzz
    finally:
        sys.path.remove(str(BENCH))


def test_the_small_fuzz_finds_no_traceback_hang_or_unclear_refusal(chaos):
    counts = {"spec": 30, "data": 10, "image": 10, "source": 10}
    table = chaos.fuzz(counts, seed=12, timeout=60, log=lambda m: None)
    report = chaos.format_table(table)
    for family, n in counts.items():
        assert sum(table.rows[family].values()) == n, report
    for kind in chaos.FAILURES:
        assert table.total(kind) == 0, report
    # The mutations must reach both sides: some inputs survive, most are refused.
    assert table.total("refused") >= 40, report
    assert table.total("accepted") >= 2, report


def test_each_newer_input_class_runs_through_the_real_commands(chaos):
    counts = {"study": 2, "pack": 2, "export": 2, "store": 2, "number": 2}
    table = chaos.fuzz(counts, seed=3, timeout=120, log=lambda m: None)
    report = chaos.format_table(table)
    for family, n in counts.items():
        assert sum(table.rows[family].values()) == n, report
    assert set().union(*table.rows.values()) <= set(chaos.KINDS), report
    assert table.total("hang") == 0, report


def test_the_write_property_names_stray_files_and_changed_finished_runs(chaos, tmp_path):
    run = tmp_path / "store" / "runs" / "0123456789ab"
    run.mkdir(parents=True)
    (run / "weights.safetensors").write_bytes(b"trained")
    (run / "history.csv").write_text("epoch\n")
    (tmp_path / "cwd").mkdir()
    before = chaos.snapshot(tmp_path)

    (run / "history.csv").write_text("epoch\n1\n")  # a finished run's file changed
    (tmp_path / "cwd" / "results.json").write_text("{}")  # the current folder: allowed
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.pt").write_bytes(b"export")  # --out: allowed
    (tmp_path / "elsewhere.txt").write_text("stray")  # outside every allowed place
    after = chaos.snapshot(tmp_path)

    argv = ["export", "x", "--out", str(tmp_path / "out" / "m.pt"), "--store",
            str(tmp_path / "store")]
    stray, runs = chaos.breaches(argv, tmp_path / "cwd", before, after)
    assert stray == [str(tmp_path / "elsewhere.txt")]
    assert runs == [str(run / "history.csv")]
    # rm and --force may change a finished run; nothing may write outside.
    for allowed in (["rm", "0123", "--store", str(tmp_path / "store")],
                    ["run", "--force", "--store", str(tmp_path / "store")]):
        assert chaos.breaches(allowed, tmp_path / "cwd", before, after) == (
            [str(tmp_path / "elsewhere.txt"), str(tmp_path / "out" / "m.pt")], [])


def test_the_fuzz_is_reproducible(chaos, tmp_path):
    tpl = tmp_path / "template"
    tpl.mkdir()
    (tpl / "conv.yaml").write_text(chaos.CONV_SPEC)
    texts = []
    for run in range(2):
        d = tmp_path / str(run)
        d.mkdir()
        chaos.make_spec(random.Random("7-spec-3"), d / "s.yaml")
        texts.append((d / "s.yaml").read_bytes()
                     + chaos.make_source(random.Random("7-source-3"), d / "m").read_bytes()
                     + chaos.make_study(random.Random("7-study-3"), d, tpl).read_bytes())
    assert texts[0] == texts[1]
