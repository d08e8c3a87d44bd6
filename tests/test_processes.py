"""`cnnbench run --jobs N`: runs trained side by side in worker processes, the driver alone
writing the store; the same numbers as one after the other with the same thread count."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ray import TINY, assert_same_runs, cnnbench, env, study_args

from cnnbench.store import RunStore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("specs")
    for name, filters in (("TINY_A", 4), ("TINY_B", 6)):
        (d / f"{name}.yaml").write_text(TINY.format(name=name, filters=filters))
    return {name: str(d / f"{name}.yaml") for name in ("TINY_A", "TINY_B")}


@pytest.mark.slow
def test_two_jobs_at_once_give_the_numbers_of_one_after_the_other(tiny, tmp_path: Path):
    models = (tiny["TINY_A"], tiny["TINY_B"])
    side = cnnbench(*study_args(tmp_path / "jobs", *models, epochs=2, limit=512, seeds=2),
                    "--jobs", "2")
    assert "2 runs at once, 1 thread(s) each" in " ".join(side.stdout.split())
    assert side.stdout.count("finished on") == 4
    for label in ("TINY_A, seed 0", "TINY_B, seed 1"):  # every epoch's line, as runs report
        assert re.search(rf"{label}: epoch 1/2 - [\d.]+s - loss: .*\n.*{label}: epoch 2/2 -",
                         side.stdout), side.stdout
    cnnbench(*study_args(tmp_path / "local", *models, epochs=2, limit=512, seeds=2))
    assert len(assert_same_runs(tmp_path / "local", tmp_path / "jobs")) == 4
    config = RunStore(tmp_path / "jobs", create=False)
    assert {config.read_config(r.id)["environment"]["executor"] for r in config.runs()} == {
        "processes"}


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_same_command_resumes(tiny, tmp_path: Path):
    args = [*study_args(tmp_path / "s", tiny["TINY_A"], tiny["TINY_B"], epochs=5, limit=8192),
            "--jobs", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "cnnbench", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "s" / "runs").glob("*/checkpoint.pt")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint in 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert out.count("interrupted after epoch") == 2, out
    gone = subprocess.run(["pgrep", "-f", str(tmp_path / "s")], capture_output=True, text=True)
    assert gone.stdout.strip() == "", "worker processes outlived the driver"
    store = RunStore(tmp_path / "s", create=False)
    assert {r.status for r in store.runs()} == {"interrupted"}
    checkpointed = sum(r.epochs_done > 0 for r in store.runs())
    assert checkpointed >= 1
    again = cnnbench(*args)
    assert again.stdout.count("resuming run") == checkpointed, again.stdout
    assert {r.status for r in RunStore(tmp_path / "s", create=False).runs()} == {"finished"}
