"""`cnnbench run --jobs N`: runs trained side by side in worker processes, the driver alone
writing the store; the same numbers as one after the other with the same thread count."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ray import TINY, assert_same_runs, cnnbench, env, study_args

from cnnbench.store.run_store import RunStore


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


INTERRUPTED = {"epochs": 3, "limit": 4096}


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory) -> Path:
    """TINY_A and TINY_B as the interrupted studies below, trained without a stop."""
    store = tmp_path_factory.mktemp("uninterrupted")
    cnnbench(*study_args(store, tiny["TINY_A"], tiny["TINY_B"], **INTERRUPTED), "--jobs", "2")
    return store


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def spawned_children(pid: int) -> set[int]:
    """The multiprocessing workers ``pid`` spawned (not its resource tracker)."""
    found = set()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int(_stat(int(d.name))[1]) == pid and \
                    b"spawn_main" in (d / "cmdline").read_bytes():
                found.add(int(d.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return found


def start_two_jobs(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnbench", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())


def first_checkpoint(store: Path, proc: subprocess.Popen) -> tuple[str, int, set[int]]:
    """When the first run has checkpointed epoch 1 (the other is still in flight: it has not
    checkpointed yet): that run's id, the pid of the worker that wrote the checkpoint (each
    worker reports its own os.getpid() there), and the driver's two worker processes."""
    from cnnbench.train.checkpoint import load_checkpoint
    deadline = time.monotonic() + 240
    while not (found := list((store / "runs").glob("*/checkpoint.pt"))):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint in 240 s"
        time.sleep(0.02)
    rid = found[0].parent.name
    pid = load_checkpoint(found[0].parent)["worker_pid"]
    workers = spawned_children(proc.pid)
    assert len(workers) == 2 and pid in workers and alive(pid), (pid, workers)
    return rid, pid, workers


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_same_command_resumes(tiny, uninterrupted,
                                                                tmp_path: Path):
    args = [*study_args(tmp_path / "s", tiny["TINY_A"], tiny["TINY_B"], **INTERRUPTED),
            "--jobs", "2"]
    proc = start_two_jobs(args)
    try:
        first, _, workers = first_checkpoint(tmp_path / "s", proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert [pid for pid in workers if alive(pid)] == [], "worker processes outlived the driver"
    store = RunStore(tmp_path / "s", create=False)
    assert [r.status for r in store.runs()] == ["interrupted"] * 2
    done = {r.id: r.epochs_done for r in store.runs()}
    assert done[first] >= 1, done
    for rid, k in done.items():
        assert f"run {rid} interrupted after epoch {k}/3" in out, out
    again = cnnbench(*args)
    for rid, k in done.items():
        assert (f"resuming run {rid} after epoch {k}/3" in again.stdout) == (k > 0), again.stdout
    # The same numbers, bit for bit, as the two runs never interrupted.
    assert sorted(assert_same_runs(uninterrupted, tmp_path / "s")) == sorted(done)


@pytest.mark.slow
def test_a_killed_worker_fails_its_run_only_and_the_same_command_resumes_it(
        tiny, uninterrupted, tmp_path: Path):
    """SIGKILL to one worker after its run's first epoch (as the OOM killer would): that run
    is recorded interrupted (resumable) and the user told so; the other run finishes."""
    args = [*study_args(tmp_path / "s", tiny["TINY_A"], tiny["TINY_B"], **INTERRUPTED),
            "--jobs", "2"]
    proc = start_two_jobs(args)
    try:
        victim, pid, workers = first_checkpoint(tmp_path / "s", proc)
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = RunStore(tmp_path / "s", create=False)
    (other,) = {r.id for r in store.runs()} - {victim}
    assert {r.id: r.status for r in store.runs()} == {victim: "interrupted", other: "finished"}
    killed_after = store.get(victim).epochs_done
    assert killed_after >= 1
    assert proc.returncode == 1, out
    assert f"run {victim} failed" in out and "run the same command again to resume" in out
    assert f"run {other} finished" in out
    assert [p for p in workers if alive(p)] == [], "a worker outlived the driver"
    again = cnnbench(*args)
    assert f"resuming run {victim} after epoch {killed_after}/3" in again.stdout, again.stdout
    assert again.stdout.count("Reused from") == 1  # the finished one is not trained again
    assert sorted(assert_same_runs(uninterrupted, tmp_path / "s")) == sorted([victim, other])


def test_runs_are_handed_out_longest_expected_first_and_unknown_ones_before_them():
    from types import SimpleNamespace

    from cnnbench.study.driver import handout_order

    def jobs(*names: str) -> list:
        return [SimpleNamespace(spec=SimpleNamespace(name=n)) for n in names]
    work = [(None, jobs("short", "new", "long")), (None, jobs("long", "short"))]
    order = handout_order(work, {"short": 60.0, "long": 300.0})
    assert order == [(0, 1), (0, 2), (1, 0), (0, 0), (1, 1)]
    assert handout_order(work, {}) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [["--seeds", "1"], []], ids=["fixed", "auto"])
def test_a_process_pool_trains_the_runs_of_every_settings_group_at_once(
        tmp_path, capsys, monkeypatch, seeds):
    # The study's two learning rates are two groups of settings. Handed to the pool group by
    # group, a worker would idle at each group's end while the other trains its last run.
    from test_ablation_cli import _setup
    from test_auto_seeds import STUCK_STUDY

    from cnnbench.cli import main
    from cnnbench.study.executors.process import ProcessExecutor
    busy: list[int] = []  # at each run handed to the pool: how many it was training already
    submit = ProcessExecutor.submit

    def counting(self, job, here):
        busy.append(len(self._pending))
        return submit(self, job, here)
    monkeypatch.setattr(ProcessExecutor, "submit", counting)
    study = _setup(tmp_path, STUCK_STUDY)
    assert main(["run", str(study), "--jobs", "2", *seeds, "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert busy == ([0, 1] if seeds else [0, 1, 1, 1])  # 2 groups x 1 or 2 seeds
