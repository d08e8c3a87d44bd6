"""The run store survives kills, crashes and damage: nothing finished is lost, nothing is left
"running", nothing answers with a traceback, and nothing it holds is trusted unchecked. Real
processes, real kills (SIGKILL from an audit hook at an exact file operation), real SQLite."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_store import AS_OWNER, TINY, cli_args, cnnbench, env

from cnnbench.cli import main
from cnnbench.store.run_store import RunStore, StoreError
from cnnbench.train.callbacks import Callback

# A child that SIGKILLs itself when it is about to rename a file onto a path ending with
# TARGET for the NTH time (os.replace raises the "os.rename" audit event), then runs cnnbench.
KILL_AT_RENAME = """
import os, signal, sys
target, nth, seen = sys.argv[1], int(sys.argv[2]), [0]
def hook(event, args):
    if event == "os.rename" and str(args[1]).endswith(target):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
from cnnbench.cli import main
sys.exit(main(sys.argv[3:]))
"""


def killed_at_rename(target: str, nth: int, argv: list[str]) -> subprocess.CompletedProcess:
    """``cnnbench ARGV`` SIGKILLed just before its NTH rename onto ``*TARGET``."""
    p = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, target, str(nth), *argv],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert p.returncode == -9, f"not killed at {target} #{nth}: {p.returncode}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("specs")
    for name in ("TINY_A", "TINY_B"):
        (d / f"{name}.yaml").write_text(TINY.format(name=name))
    return {name: str(d / f"{name}.yaml") for name in ("TINY_A", "TINY_B")}


def runner(store: Path, mnist, force: bool = False, callbacks=lambda s: (), executor=None,
           **config):
    import torch

    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.engine import TrainConfig
    log: list[str] = []
    r = StudyRunner(RunStore(store), mnist, TrainConfig(**{"epochs": 2, "train_limit": 256,
                                                          **config}),
                    torch.device("cpu"), force=force, log=log.append, callbacks=callbacks,
                    executor=executor)
    return r, log


def study(store: Path, mnist, names, specs, **kw):
    from cnnbench.model.spec import get_spec
    r, log = runner(store, mnist, **kw)
    return r.run([get_spec(specs[n]) for n in names]), log


@pytest.fixture(scope="module")
def finished(specs, mnist, tmp_path_factory) -> Path:
    """A store with TINY_A and TINY_B finished (2 epochs on 256 images). Copy it to change it."""
    root = tmp_path_factory.mktemp("finished")
    study(root, mnist, ["TINY_A", "TINY_B"], specs)
    return root


def copy_of(store: Path, tmp_path: Path) -> tuple[Path, RunStore]:
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", RunStore(tmp_path / "store", create=False)


def row_of(s: RunStore, model: str):
    (row,) = [r for r in s.runs() if r.model == model]
    return row


def weights_of(file: Path | bytes) -> tuple[dict, dict]:
    """A weights file's metadata and tensors (as bytes): its header's key order is not fixed."""
    from safetensors import safe_open
    from safetensors.torch import load
    data = file if isinstance(file, bytes) else file.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(data)
        f.flush()
        with safe_open(f.name, framework="pt") as st:
            meta = st.metadata()
    return meta, {k: v.numpy().tobytes() for k, v in load(data).items()}


class RaiseAtEpoch(Callback):
    """Engine callback raising ``exc`` when epoch ``n`` begins (epoch n-1 is checkpointed)."""

    def __init__(self, n: int, exc: BaseException) -> None:
        self.n, self.exc = n, exc

    def on_epoch_begin(self, epoch, epochs, steps):
        if epoch == self.n:
            raise self.exc


# --- --force keeps the finished run until the retrain finishes --------------------------------

def test_an_interrupted_force_retrain_leaves_the_finished_run_whole_and_served(
        specs, mnist, finished, tmp_path):
    from cnnbench.model.weights import load_weights
    root, s = copy_of(finished, tmp_path)
    before = row_of(s, "TINY_A")
    folder = s.folder(before.id)
    files = {n: (folder / n).read_bytes() for n in ("weights.safetensors", "history.csv",
                                                     "predictions.npy", "config.json")}
    with pytest.raises(KeyboardInterrupt):
        study(root, mnist, ["TINY_A"], specs, force=True,
              callbacks=lambda spec: [RaiseAtEpoch(2, KeyboardInterrupt())])
    after = row_of(s, "TINY_A")
    assert (after.status, after.epochs_done, after.test_accuracy, after.finished) == (
        "finished", 2, before.test_accuracy, before.finished)
    assert {n: (folder / n).read_bytes() for n in files} == files
    assert load_weights(folder / "weights.safetensors").spec.name == "TINY_A"  # predict serves it
    assert s.record(before.id).test_accuracy == before.test_accuracy  # report too
    assert s.verify() == []
    # --force again resumes the retrain (epoch 1 is checkpointed beside the finished run) and
    # replaces the finished run with the same numbers, as one set.
    (res,), log = study(root, mnist, ["TINY_A"], specs, force=True)
    assert any("resuming run" in m and "--force retrain" in m for m in log), log
    assert res.origin == "resumed" and row_of(s, "TINY_A").test_accuracy == before.test_accuracy
    assert weights_of(folder / "weights.safetensors") == weights_of(
        files["weights.safetensors"])
    assert not s.attempt_folder(before.id).exists() and s.verify() == []


# --- rm holds the run's lock while it deletes -------------------------------------------------

def test_rm_holds_the_run_lock_until_its_folder_is_gone(finished, tmp_path):
    root, s = copy_of(finished, tmp_path)
    rid = row_of(s, "TINY_A").id
    many = s.folder(rid) / "tensorboard"  # a folder that takes a while to delete
    many.mkdir()
    for i in range(4000):
        (many / f"events.{i}").write_bytes(b"x")
    taken_while_deleting: list[bool] = []
    removing = threading.Event()

    def try_to_start():  # as a `cnnbench run` of the same run would, once rm is under way
        removing.wait()
        db = sqlite3.connect(root / "index.sqlite")
        while db.execute("SELECT count(*) FROM runs WHERE id = ?", (rid,)).fetchone()[0]:
            time.sleep(0.0005)
        db.close()
        while remover.is_alive():
            lock = RunStore(root, create=False).lock(rid)
            if lock.acquire(blocking=False):
                # What a run starting now would find: any of the folder left means rm let go
                # of the lock before it finished. (Not remover.is_alive(): the thread lives a
                # moment after the lock's release, and a loaded machine shows that moment.)
                taken_while_deleting.append(s.folder(rid).exists())
                lock.release()
                return

    remover = threading.Thread(target=s.remove, args=(rid,))
    starter = threading.Thread(target=try_to_start)
    starter.start()
    remover.start()
    removing.set()
    remover.join()
    starter.join()
    assert True not in taken_while_deleting, "another process took the lock while rm deleted"
    assert not s.folder(rid).exists() and s.get(rid) is None
    assert s.verify() == []


def test_rm_of_a_run_being_trained_is_refused(finished, tmp_path):
    root, s = copy_of(finished, tmp_path)
    rid = row_of(s, "TINY_A").id
    with s.lock(rid) as lock:
        assert lock.acquire(blocking=False)
        with pytest.raises(StoreError, match=f"run {rid} is being trained"):
            RunStore(root, create=False).remove(rid)
    assert s.get(rid) is not None and (s.folder(rid) / "weights.safetensors").exists()


# --- export never writes into the store -------------------------------------------------------

def test_export_out_inside_the_store_is_refused_and_the_weights_stay(finished, tmp_path,
                                                                     capsys, monkeypatch):
    root, s = copy_of(finished, tmp_path)
    rid = row_of(s, "TINY_A").id
    weights = s.folder(rid) / "weights.safetensors"
    before = weights.read_bytes()
    for out in (weights, s.folder(rid) / "model.pt"):
        code = main(["export", rid, "--format", "torchscript", "--out", str(out),
                     "--store", str(root)])
        err = capsys.readouterr().err
        assert code == 2 and f"--out {out} " in err and "Traceback" not in err, err
    assert "is inside the run store" in err, err
    assert weights.read_bytes() == before and not (s.folder(rid) / "model.pt").exists()
    # Without --out, a stored run's export lands in the current folder, not in the store.
    monkeypatch.chdir(tmp_path)
    assert main(["export", rid[:6], "--format", "torchscript", "--store", str(root)]) == 0
    assert (tmp_path / f"TINY_A-{rid}.pt").is_file()
    assert sorted(p.name for p in s.folder(rid).iterdir()) == [
        "config.json", "grad_norms.json", "history.csv", "predictions.npy",
        "probabilities.npy", "weights.safetensors"]


# --- files written as a set are all old or all new after a kill -------------------------------

def test_a_kill_between_results_json_and_history_csv_leaves_them_consistent(specs, finished,
                                                                             tmp_path):
    from cnnbench.atomic import roll_forward
    root, _ = copy_of(finished, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("OLD")
    (out / "history.csv").write_text("OLD")
    # Reused, no training: the fixture's runs are fp32 (for spec files the CLI's default is auto).
    argv = cli_args(root, specs["TINY_A"], epochs=2, limit=256, out=out,
                    extra=("--precision", "fp32"))[3:]
    killed_at_rename("history.csv", 1, argv)  # results.json already renamed when it was a pair
    roll_forward(out)  # what the next write into out does first
    assert "OLD" not in {(out / n).read_text() for n in ("results.json", "history.csv")}


def test_a_kill_between_report_html_and_report_md_leaves_them_consistent(finished, tmp_path):
    from cnnbench.atomic import roll_forward
    root, _ = copy_of(finished, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("OLD")
    (out / "report.md").write_text("OLD")
    killed_at_rename("report.md", 1, ["report", "--store", str(root), "--out", str(out)])
    roll_forward(out)
    assert (out / "report.md").read_text().startswith("# cnnbench report")
    assert "OLD" not in (out / "report.html").read_text()


def test_a_kill_while_a_finished_run_is_written_is_completed_not_retrained(specs, tmp_path):
    store = tmp_path / "s"
    argv = cli_args(store, specs["TINY_A"], epochs=1, limit=256)[3:]
    killed_at_rename("probabilities.npy", 1, argv)  # weights and predictions renamed already
    p = cnnbench(*cli_args(store, specs["TINY_A"], epochs=1, limit=256))
    assert p.returncode == 0, p.stderr
    assert "reused run" in p.stdout and "resuming" not in p.stdout, p.stdout
    s = RunStore(store, create=False)
    assert s.runs()[0].status == "finished" and s.verify() == []


# --- temporary files a kill left are swept when the run is opened again -----------------------

def test_a_checkpoint_temp_left_by_sigkill_is_removed_when_the_run_is_next_opened(specs,
                                                                                   tmp_path):
    store = tmp_path / "s"
    argv = cli_args(store, specs["TINY_A"], epochs=3, limit=256)[3:]
    killed_at_rename("checkpoint.pt", 2, argv)  # epoch 2's checkpoint written, not renamed
    (folder,) = (store / "runs").iterdir()
    assert [p.name for p in folder.glob("*.tmp")] != []
    p = cnnbench(*cli_args(store, specs["TINY_A"], epochs=3, limit=256))
    assert p.returncode == 0, p.stderr
    assert list(folder.glob("*.tmp")) == [] and RunStore(store, create=False).verify() == []


# --- a damaged index: one line, no traceback, no leaked connection ----------------------------

@pytest.mark.parametrize("command", ["runs", "run"])
def test_a_corrupt_index_is_one_line_and_a_non_zero_exit(specs, tmp_path, command):
    store = tmp_path / "s"
    (store / "runs").mkdir(parents=True)
    (store / "index.sqlite").write_bytes(b"this is not a database, " * 200)
    args = ["-m", "cnnbench", "runs", "--store", str(store)] if command == "runs" else \
        cli_args(store, specs["TINY_A"], epochs=1, limit=256)[1:]
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env(),
                       timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr  # a store failure
    (line,) = p.stderr.strip().splitlines()
    assert f"the run store index {store / 'index.sqlite'} cannot be read" in line, line


def test_a_corrupt_index_leaks_no_connection(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"garbage " * 512)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(StoreError, match="cannot be read"):
            RunStore(tmp_path, create=False).runs()
    assert len(os.listdir("/proc/self/fd")) == fds


# --- any exception in training leaves the run interrupted, the study going on -----------------

def test_any_exception_in_training_marks_the_run_interrupted_and_the_study_goes_on(
        specs, mnist, tmp_path):
    from cnnbench.study.executors import ExecutorError
    boom = RaiseAtEpoch(2, RuntimeError("boom from a callback"))
    with pytest.raises(ExecutorError, match="TINY_A, seed 0 .RuntimeError: boom from a callback"):
        study(tmp_path, mnist, ["TINY_A", "TINY_B"], specs,
              callbacks=lambda spec: [boom] if spec.name == "TINY_A" else [])
    s = RunStore(tmp_path, create=False)
    a, b = row_of(s, "TINY_A"), row_of(s, "TINY_B")
    assert (a.status, a.epochs_done, b.status) == ("interrupted", 1, "finished")
    assert s.verify() == []


def test_an_exception_past_the_executor_leaves_no_run_running(specs, mnist, tmp_path):
    """SystemExit (a library calling sys.exit) is no Exception: it ends the study, but the
    run in flight is recorded interrupted, not left "running"."""
    with pytest.raises(SystemExit):
        study(tmp_path, mnist, ["TINY_A"], specs,
              callbacks=lambda spec: [RaiseAtEpoch(2, SystemExit(3))])
    row = row_of(RunStore(tmp_path, create=False), "TINY_A")
    assert (row.status, row.epochs_done) == ("interrupted", 1)


# --- --jobs: a dead worker fails its own run; the others go on --------------------------------

def _pool_workers(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(child))
    return out


@pytest.mark.slow
def test_a_killed_worker_fails_its_run_cleanly_and_the_other_runs_finish(specs, tmp_path):
    import signal
    store = tmp_path / "s"
    args = [*cli_args(store, specs["TINY_A"], specs["TINY_B"], epochs=3, limit=4096),
            "--seeds", "2", "--jobs", "2", "--threads", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    try:
        deadline = time.monotonic() + 240
        while not list((store / "runs").glob("*/checkpoint.pt")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint in 240 s"
            time.sleep(0.05)
        workers = _pool_workers(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "Traceback" not in out, out
    s = RunStore(store, create=False)
    rows = s.runs()
    died = [r for r in rows if r.status == "interrupted"]
    assert len(rows) == 4 and len(died) == 1, [(r.model, r.seed, r.status) for r in rows]
    assert sorted(r.status for r in rows) == ["finished"] * 3 + ["interrupted"]
    line = next(m for m in out.splitlines() if "was killed by signal 9 (SIGKILL)" in m)
    assert f"run {died[0].id} failed" in line and f"pid {workers[0]}" in line, line
    again = cnnbench(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r.status for r in s.runs()} == {"finished"} and s.verify() == []


# --- worker output is checked before it enters the store --------------------------------------

def _tampered(kind: str):
    from cnnbench.study.executors import LocalExecutor

    class Tampering(LocalExecutor):
        def next_done(self, timeout=None):
            done = super().next_done(timeout)
            out = done.output if done is not None else None
            if out is not None:
                if kind == "predictions":
                    out.result.test_predictions = out.result.test_predictions[:10]
                elif kind == "run id":
                    out.run_id = "0123456789ab"
                elif kind == "history":
                    out.result.history["val_acc"].pop()
                elif kind == "weights":
                    out.weights = out.weights[:-100]
                elif kind == "probabilities":
                    out.probabilities = out.probabilities[:, :3]
            return done
    return Tampering()


@pytest.mark.parametrize("kind,message", [
    ("predictions", r"predictions of shape \(10,\)"),
    ("run id", "names run 0123456789ab"),
    ("history", "history columns of different lengths"),
    ("weights", "truncated weights file"),
    ("probabilities", r"probabilities of shape \(10000, 3\)"),
])
def test_a_job_output_that_does_not_fit_its_job_never_becomes_a_finished_run(
        specs, mnist, tmp_path, kind, message):
    from cnnbench.study.executors import ExecutorError
    with pytest.raises(ExecutorError, match=message):
        study(tmp_path, mnist, ["TINY_A"], specs, executor=_tampered(kind), epochs=1)
    s = RunStore(tmp_path, create=False)
    row = row_of(s, "TINY_A")
    assert row.status == "interrupted"
    assert not (s.folder(row.id) / "weights.safetensors").exists()


# --- another dataset's report, reads beside a writer, read-only stores ------------------------

def test_a_report_against_other_data_than_the_runs_is_refused(finished, tmp_path, capsys):
    rng = np.random.default_rng(0)
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "digits.npz", x_train=rng.integers(0, 255, (100, 28, 28), np.uint8),
             y_train=rng.integers(0, 10, 100, np.uint8),
             x_test=rng.integers(0, 255, (10000, 28, 28), np.uint8),
             y_test=rng.integers(0, 10, 10000, np.uint8))
    code = main(["report", "--store", str(finished), "--data-dir", str(other),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "was trained on data with fingerprint" in err, err
    assert f"but {other} has" in err and not (tmp_path / "out" / "report.html").exists()


def test_reads_do_not_wait_for_a_writer(finished, tmp_path):
    root, s = copy_of(finished, tmp_path)
    writer = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        got: list = []
        t = threading.Thread(target=lambda: got.append(len(s.runs())), daemon=True)
        t.start()
        t.join(5)
        assert got == [2], "runs() waited for the writer"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_read_only_store_is_still_listed_and_shown(finished, tmp_path):
    ro = tmp_path / "s"
    shutil.copytree(finished, ro)
    rid = row_of(RunStore(ro, create=False), "TINY_A").id
    for path in (ro, *ro.rglob("*")):  # nobody may write: a store shared read-only
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    try:
        for cmd in (["runs"], ["show", rid[:5]]):
            p = subprocess.run([*AS_OWNER, sys.executable, "-m", "cnnbench", *cmd, "--store",
                                str(ro)], capture_output=True, text=True, env=env(),
                               timeout=120)
            assert p.returncode == 0, p.stderr
            assert rid in p.stdout or "TINY_A" in p.stdout, p.stdout
    finally:
        for path in (ro, *ro.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


# --- Ray: a lost journal actor or a lost cluster is an executor error -------------------------

RAY_CHILD = """
import sys
import ray
import torch
from cnnbench.data.datasets import load_dataset
from cnnbench.train.engine import TrainConfig
from cnnbench.study.executors import ExecutorError, RayExecutor
from cnnbench.study.runner import StudyRunner
from cnnbench.model.spec import get_spec
from cnnbench.store.run_store import RunStore

class JournalLost(RayExecutor):
    def start(self, dataset, device):
        super().start(dataset, device)
        ray.kill(self._journal)

class ClusterLost(RayExecutor):
    def submit(self, job, here):
        super().submit(job, here)
        ray.shutdown()

mnist = load_dataset("mnist", log=lambda m: None)
for store, cls in ((sys.argv[2], JournalLost), (sys.argv[3], ClusterLost)):
    executor = cls(None, threads=1, log=print)
    runner = StudyRunner(RunStore(store), mnist, TrainConfig(epochs=1, train_limit=256),
                         torch.device("cpu"), log=print, executor=executor)
    try:
        runner.run([get_spec(sys.argv[1])])
    except ExecutorError as e:
        print(f"executor error: {e}")
    finally:
        executor.close()
    print(cls.__name__, [r.status for r in RunStore(store, create=False).runs()])
"""


@pytest.mark.slow
def test_a_lost_ray_journal_or_cluster_is_an_executor_error_and_no_run_stays_running(
        specs, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed here: pip install 'cnnbench[ray]'")
    p = subprocess.run([sys.executable, "-c", RAY_CHILD, specs["TINY_A"], str(tmp_path / "a"),
                        str(tmp_path / "b")], capture_output=True, text=True,
                       env=env() | {"RAY_USAGE_STATS_ENABLED": "0"}, timeout=400)
    assert p.returncode == 0 and "Traceback" not in p.stdout, p.stdout + p.stderr
    assert "warning: Ray: the journal of attempts is lost" in p.stdout, p.stdout
    assert "JournalLost ['finished']" in p.stdout, p.stdout
    assert "executor error: lost the Ray cluster at (local)" in p.stdout, p.stdout
    assert "ClusterLost ['interrupted']" in p.stdout, p.stdout


# --- the store trusts nothing: run id prefixes, its own index path, numbers, damaged files ----

def one_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize("prefix", ["", "%", "_", "%%", "zz", "3f_a", "a b"])
def test_an_empty_or_non_hex_run_prefix_is_refused_everywhere(finished, tmp_path, capsys,
                                                               prefix):
    root, s = copy_of(finished, tmp_path)
    (only, _) = s.runs()
    with pytest.raises(StoreError, match="hex digits"):
        s.resolve(prefix)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for argv in (["rm", prefix, "--yes"], ["show", prefix],
                 ["pack", prefix, "--out", str(tmp_path / "p.tar.gz")],
                 ["report", prefix, "--out", str(tmp_path / "r")],
                 ["predict", prefix, str(image)],
                 ["export", prefix, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]):
        assert main([*argv, "--store", str(root)]) == 2, argv
        line = one_line(capsys)
        assert f"Got {prefix!r} instead" in line, (argv, line)
    assert len(s.runs()) == 2 and s.folder(only.id).is_dir()  # nothing deleted
    assert s.resolve(only.id[:4].upper()) == only.id  # hex in either case still resolves


def test_an_index_that_is_a_folder_is_one_line_for_every_command(tmp_path, capsys):
    root = tmp_path / "s"
    (root / "runs").mkdir(parents=True)
    (root / "index.sqlite").mkdir()
    for argv in (["runs"], ["show", "abc"], ["rm", "abc", "--yes"],
                 ["pack", "--out", str(tmp_path / "p.tar.gz")],
                 ["report", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--store", str(root)]) == 1, argv
        line = one_line(capsys)
        assert f"the run store index {root / 'index.sqlite'} is a folder" in line, line
    with pytest.raises(StoreError, match="is a folder, not an SQLite file"):
        RunStore(root)


def test_a_dangling_index_link_is_refused_and_no_database_is_made_where_it_points(tmp_path):
    root, elsewhere = tmp_path / "s", tmp_path / "elsewhere.sqlite"
    root.mkdir()
    (root / "index.sqlite").symlink_to(elsewhere)
    with pytest.raises(StoreError, match=f"is a link to {elsewhere}, which does not exist"):
        RunStore(root)
    with pytest.raises(StoreError, match="is a link to"):
        RunStore(root, create=False)
    assert not elsewhere.exists() and not list(tmp_path.glob("elsewhere*"))


CONFIG = {"model": {"name": "M"}, "dataset": {"name": "mnist"}, "seed": 3,
          "training": {"epochs": 2}}


@pytest.mark.parametrize("field, value", [("seed", 10**23), ("seed", -(2**63) - 1),
                                          ("epochs", 10**23), ("epochs", 0)])
def test_a_seed_or_epochs_the_index_cannot_hold_is_refused_before_anything_is_written(
        tmp_path, field, value):
    from cnnbench.store.schema import RunDataError
    s = RunStore(tmp_path / "s")
    config = json_copy(CONFIG)
    if field == "seed":
        config["seed"] = value
    else:
        config["training"]["epochs"] = value
    with pytest.raises(RunDataError, match=f"run abc123def456: its (seed|planned epochs) must "
                                           f"be .*integer.*Got {value} instead"):
        s.begin("abc123def456", config)
    assert s.runs() == [] and list(s.runs_dir.iterdir()) == []


def json_copy(doc):
    import json
    return json.loads(json.dumps(doc))


@pytest.mark.parametrize("name, data, match", [
    ("history.csv", b"epoch,loss\n1,abc\n", "history.csv must start with the line"),
    ("history.csv", None, "history.csv line 2: 'acc' must be a number in \\[0, 1\\]. Got inf"),
    ("predictions.npy", b"\x93NUMPY garbage", "predictions.npy is not a NumPy array file"),
    ("config.json", b'{"model": []}', "config.json's 'model' must be an object. Got \\[\\]"),
    ("grad_norms.json", b'{"dense": -1}', "grad_norms.json's 'dense' must be a number >= 0"),
])
def test_a_damaged_finished_run_is_named_and_trained_again_not_reported(
        finished, tmp_path, capsys, name, data, match):
    from cnnbench.store.run_store import DamagedRun
    root, s = copy_of(finished, tmp_path)
    row = row_of(s, "TINY_A")
    path = s.folder(row.id) / name
    if data is None:  # one number out of range in an otherwise whole file
        lines = path.read_text().splitlines()
        cells = lines[1].split(",")
        cells[2] = "inf"
        data = ("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n").encode()
    path.write_bytes(data)
    with pytest.raises(DamagedRun, match=match):
        s.record(row.id)
    assert not s.final_files_complete(row)  # so `run` trains it again instead of reusing it
    assert any(name in p for p in s.verify())
    from cnnbench.store.pack import pack
    with pytest.raises(DamagedRun, match=match):  # named, never carried to another store
        pack(s, [row.id], tmp_path / "p.tar.gz")
    assert not (tmp_path / "p.tar.gz").exists()
    assert main(["report", row.id, "--store", str(root), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err  # the data's loading, then one line
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("cnnbench report: error: "), err
    assert str(s.folder(row.id)) in line and name in line and f"cnnbench rm {row.id}" in line


@pytest.mark.parametrize("command", ["run", "report"])
def test_an_out_inside_the_store_is_refused_and_the_runs_files_stay(finished, specs, tmp_path,
                                                                    capsys, command):
    root, s = copy_of(finished, tmp_path)
    row = row_of(s, "TINY_A")
    folder = s.folder(row.id)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for out in (folder, root, root / "runs" / "new"):
        argv = (["run", "--models", specs["TINY_B"], "--epochs", "2", "--train-limit", "256"]
                if command == "run" else ["report"])
        assert main([*argv, "--store", str(root), "--out", str(out)]) == 2
        line = one_line(capsys)
        assert f"--out {out} is inside the run store {root}" in line, line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (root / "runs" / "new").exists() and s.record(row.id).history


@pytest.mark.parametrize("command", ["run", "report"])
def test_an_out_inside_another_store_than_the_one_given_is_refused(finished, specs, tmp_path,
                                                                   capsys, command):
    root, s = copy_of(finished, tmp_path)
    row = row_of(s, "TINY_A")
    folder = s.folder(row.id)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    other = tmp_path / "other-store"
    for out in (folder, root, root / "runs" / "new"):
        argv = (["run", "--models", specs["TINY_B"], "--epochs", "2", "--train-limit", "256"]
                if command == "run" else ["report", row.id])
        assert main([*argv, "--store", str(other), "--out", str(out)]) == 2
        line = one_line(capsys)
        assert f"--out {out} is inside the run store {root.resolve()}" in line, line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (root / "runs" / "new").exists()


def test_every_writing_command_shares_the_stores_refusal(tmp_path, monkeypatch):
    from cnnbench.errors import UsageError
    from cnnbench.store.run_store import refuse_inside_store
    monkeypatch.setenv("CNNBENCH_STORE", str(tmp_path / "default"))
    refuse_inside_store(tmp_path / "s", tmp_path / "out", "--out")  # beside it: fine
    refuse_inside_store(tmp_path / "s", None, "--out")  # nothing to write there
    (tmp_path / "link").symlink_to(tmp_path / "s" / "runs")
    for root, out in ((tmp_path / "s", tmp_path / "link" / "x"),
                      (None, tmp_path / "default" / "runs" / "abc")):
        with pytest.raises(UsageError, match="is inside the run store"):
            refuse_inside_store(root, out, "--out")


def test_an_interrupted_run_with_a_damaged_config_is_trained_again(finished, specs, mnist,
                                                                    tmp_path):
    root, s = copy_of(finished, tmp_path)
    row = row_of(s, "TINY_A")
    with sqlite3.connect(s.db_path) as db:  # as a kill in training leaves it
        db.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (row.id,))
    (s.folder(row.id) / "config.json").write_text("{not json")
    results, _ = study(root, mnist, ["TINY_A"], specs)
    assert [r.record.run_id for r in results] == [row.id]
    assert s.get(row.id).status == "finished" and s.verify() == []
    assert s.read_config(row.id)["model"]["name"] == "TINY_A"


def test_import_keras_refuses_an_out_inside_the_store_and_writes_nothing(tmp_path, monkeypatch,
                                                                        capsys):
    from cnnbench.cli import main
    store = tmp_path / "store"
    monkeypatch.setenv("CNNBENCH_STORE", str(store))
    source = tmp_path / "m.py"
    source.write_text("from keras.models import Sequential\nfrom keras.layers import Dense\n"
                      "model = Sequential()\nmodel.add(Dense(10, input_shape=(784,)))\n")
    assert main(["import-keras", str(source), "--out", str(store / "runs")]) == 2
    assert "is inside the run store" in capsys.readouterr().err
    assert not store.exists()
