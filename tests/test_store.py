"""The run store with real processes, real files and real SQLite: resume after SIGKILL,
reuse, two processes at once, divergence, Ctrl-C, an unwritable store, and the commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnbench.store.run_store import KEY_VERSION, RunStore, StoreError, run_id, run_key
from cnnbench.train.callbacks import Callback
from cnnbench.train.checkpoint import load_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
# Small, fast and stateful: BatchNorm statistics and Dropout masks must both survive a resume.
TINY = """name: {name}
input_shape: [28, 28, 1]
layers:
  - MaxPooling2D: {{}}  # first: evaluating 10k test images each epoch stays cheap
  - Conv2D: {{filters: 4, kernel_size: [3, 3], activation: relu}}
  - BatchNormalization: {{}}
  - Flatten: {{}}
  - Dense: {{units: 32, activation: relu}}
  - Dropout: {{rate: 0.5}}
  - Dense: {{units: 10, activation: softmax}}
"""
METRICS = ("loss", "acc", "val_loss", "val_acc")
# As root, file modes bind nobody; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH they bind
# root as the owner of the files it made. Root stays root, so a checkout in a folder only root
# may enter (mktemp -d) still imports (as user nobody it did not: "No module named cnnbench").
AS_OWNER = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
            if os.geteuid() == 0 else [])


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("specs")
    out = {}
    for name in ("TINY_A", "TINY_B"):
        (d / f"{name}.yaml").write_text(TINY.format(name=name))
        out[name] = str(d / f"{name}.yaml")
    return out


def cli_args(store: Path, *models: str, epochs: int = 3, limit: int = 1024,
             extra: tuple[str, ...] = (), out: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "cnnbench", "run", "--models", *models, "--epochs", str(epochs),
            "--train-limit", str(limit), "--store", str(store),
            "--out", str(out or out_of(store)), *extra]


def out_of(store: Path) -> Path:
    """A study's --out beside its store: the store refuses an --out inside it."""
    return store.parent / f"{store.name}-out"


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")
    e.pop("CNNBENCH_STORE", None)
    return e


def cnnbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, env=env(), timeout=timeout)


def run_cli(store: Path, *models: str, **kw) -> subprocess.CompletedProcess:
    p = cnnbench(*cli_args(store, *models, **kw))
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def only_run(store: Path) -> str:
    rows = RunStore(store, create=False).runs()
    assert len(rows) == 1, rows
    return rows[0].id


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def uninterrupted(specs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """TINY_A, 3 epochs, trained once without interruption."""
    store = tmp_path_factory.mktemp("uninterrupted")
    return store, run_cli(store, specs["TINY_A"])


# --- keys and the index --------------------------------------------------------------------

def test_run_id_depends_on_what_determines_the_result_only():
    spec = {"name": "M", "layers": [{"Dense": {"units": 10}}]}
    adadelta = {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-7}
    base = {"epochs": 3, "batch_size": 128, "optimizer": "Adadelta", "optimizer_args": adadelta,
            "seed": 0, "eval_batch_size": 500}
    rid = run_id(run_key(spec, base, "data1"))
    assert rid == run_id(run_key(dict(spec), dict(base), "data1"))  # idempotent
    # Pinned: another hashing of the same key would orphan every run already in a store.
    assert rid == "94781f705ed8"
    assert run_key(spec, base, "data1")["version"] == KEY_VERSION == 2
    assert rid == run_id(run_key(spec, base | {"eval_batch_size": 100}, "data1"))  # speed only
    assert rid != run_id(run_key(spec, base | {"seed": 1}, "data1"))
    assert rid != run_id(run_key(spec, base | {"optimizer_args": adadelta | {
        "learning_rate": 0.5}}, "data1"))
    assert rid != run_id(run_key(spec, base, "data2"))
    assert rid != run_id(run_key({**spec, "layers": [{"Dense": {"units": 11}}]}, base, "data1"))
    # The same settings under the unversioned shape of version 1 hash to another id.
    unversioned = {k: v for k, v in run_key(spec, base, "data1").items() if k != "version"}
    assert run_id(unversioned) != rid


def test_store_round_trip_across_two_store_objects(tmp_path):
    a = RunStore(tmp_path / "s")
    spec = {"name": "M", "input_shape": [28, 28, 1],
            "layers": [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}
    config = {"model": {"name": "M", "source": "M.yaml", "parameters": 7850, "spec": spec,
                        "spec_raw": spec},
              "dataset": {"name": "mnist", "fingerprint": "0" * 64, "source": "test",
                          "train_images": 4, "test_images": 2},
              "seed": 3, "training": {"epochs": 2}, "environment": {}, "key": {}}
    a.begin("abc123def456", config)
    history = {"loss": [0.1 + 0.2, 1 / 3], "acc": [0.5, 0.75], "val_loss": [2.0, 1e-17],
               "val_acc": [0.25, 0.5], "seconds": [1.5, 2.5]}
    a.epoch_done("abc123def456", history)
    a.end("abc123def456", "finished", history, test_loss=1e-17, test_accuracy=0.5)

    b = RunStore(tmp_path / "s", create=False)  # as another process would open it
    row = b.get(b.resolve("abc"))
    assert (row.model, row.dataset, row.seed, row.status) == ("M", "mnist", 3, "finished")
    assert (row.epochs_done, row.epochs_planned, row.test_accuracy) == (2, 2, 0.5)
    assert row.train_seconds == 4.0 and row.finished is not None
    assert b.read_history("abc123def456") == history  # floats exactly, through the CSV
    assert b.read_config("abc123def456") == config
    with pytest.raises(StoreError, match="no run matching 'fff'"):
        b.resolve("fff")
    b.remove("abc123def456")
    assert b.runs() == [] and not b.folder("abc123def456").exists()


def test_opening_a_missing_store_for_reading_names_it(tmp_path):
    with pytest.raises(StoreError, match=f"no run store at {tmp_path / 'nowhere'}"):
        RunStore(tmp_path / "nowhere", create=False)


# --- resume, reuse -------------------------------------------------------------------------

# `cnnbench run`'s runner, printing a line per training step; at step 3 of epoch 2 (of 8) it
# waits there to be killed, so the kill lands in the middle of an epoch, whatever the load.
STEPPER = """
import sys, time, torch
from cnnbench.data.datasets import load_dataset
from cnnbench.train.engine import TrainConfig
from cnnbench.train.precision import resolve_precision
from cnnbench.study.runner import StudyRunner
from cnnbench.model.spec import get_spec
from cnnbench.store.run_store import RunStore
from cnnbench.train.callbacks import Callback

class Steps(Callback):
    def on_epoch_begin(self, epoch, epochs, steps):
        self.epoch = epoch
    def on_step_end(self, step, running):
        print(f"epoch {self.epoch} step {step}", flush=True)
        if (self.epoch, step) == (2, 3):
            time.sleep(600)

store, spec = RunStore(sys.argv[1]), get_spec(sys.argv[2])
# A spec file's study: `cnnbench run` defaults to --precision auto (the fixture's run).
precision = resolve_precision("auto", torch.device("cpu"))
StudyRunner(store, load_dataset("mnist"), TrainConfig(epochs=3, train_limit=1024,
                                                      precision=precision),
            torch.device("cpu"), log=print, callbacks=lambda s: [Steps()]).run([spec])
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_gives_the_uninterrupted_numbers(specs, uninterrupted,
                                                                      tmp_path):
    ref_store, _ = uninterrupted
    store = tmp_path / "killed"
    rid = only_run(ref_store)  # the same key: the same id in another store
    proc = subprocess.Popen([sys.executable, "-c", STEPPER, str(store), specs["TINY_A"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    seen = []
    try:
        for line in proc.stdout:  # the step lines, as they come
            seen.append(line.rstrip())
            if seen[-1] == "epoch 2 step 3":
                proc.send_signal(signal.SIGKILL)  # no chance to clean up
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen[-1] == "epoch 2 step 3", "\n".join(seen)
    assert sum(ln.startswith("epoch 1 step ") for ln in seen) == 8  # 1024 images / 128
    assert proc.returncode == -signal.SIGKILL
    s = RunStore(store, create=False)
    killed = s.get(rid)
    assert killed.status == "running" and s.effective_status(killed) == "interrupted"
    # The checkpoint is the truth (history.csv and the index follow it a moment later).
    assert load_checkpoint(s.folder(rid))["epoch"] == 1, "killed after epoch 1, in epoch 2"
    assert s.read_history(rid)["loss"] == RunStore(ref_store, create=False).read_history(
        rid)["loss"][:1]

    again = run_cli(store, specs["TINY_A"])
    assert f"resuming run {rid} after epoch 1/3" in again.stdout
    assert "Epoch 1/3" not in again.stdout and "Epoch 3/3" in again.stdout

    ref = RunStore(ref_store, create=False)
    resumed_h, ref_h = s.read_history(rid), ref.read_history(rid)
    for k in METRICS:
        assert resumed_h[k] == ref_h[k], k
    assert s.get(rid).test_accuracy == ref.get(rid).test_accuracy
    assert s.get(rid).test_loss == ref.get(rid).test_loss
    for name in ("predictions.npy", "probabilities.npy"):
        assert np.array_equal(np.load(s.folder(rid) / name), np.load(ref.folder(rid) / name))
    # The same tensors, bit for bit, and the same metadata (safetensors writes its metadata
    # map in no fixed order, so the files' headers may differ byte-wise).
    import torch
    from safetensors import safe_open
    with safe_open(s.folder(rid) / "weights.safetensors", "pt") as a, \
            safe_open(ref.folder(rid) / "weights.safetensors", "pt") as b:
        assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
    assert len(s.read_config(rid)["sessions"]) == 2
    assert s.verify() == []


@pytest.mark.slow
def test_a_finished_run_is_reused_not_trained_again(specs, uninterrupted):
    store, first = uninterrupted
    rid = only_run(store)
    weights = RunStore(store, create=False).folder(rid) / "weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    second = run_cli(store, specs["TINY_A"])
    assert "Epoch 1/3" in first.stdout
    assert "Epoch" not in second.stdout
    assert f"TINY_A: reused run {rid}" in second.stdout
    assert weights.stat().st_mtime_ns == mtime
    doc = json.loads((out_of(store) / "results.json").read_text())
    h = RunStore(store, create=False).read_history(rid)
    assert doc["models"]["TINY_A"]["history"]["val_acc"] == h["val_acc"]


def in_process(store: Path, mnist, spec_files, **config) -> tuple[list, list[str]]:
    """The runner as ``cnnbench run`` uses it, in this process; its results and log lines."""
    import torch

    from cnnbench.model.spec import get_spec
    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.engine import TrainConfig
    force = config.pop("force", False)
    log: list[str] = []
    runner = StudyRunner(RunStore(store), mnist, TrainConfig(**config), torch.device("cpu"),
                         force=force, log=log.append)
    return runner.run([get_spec(f) for f in spec_files]), log


@pytest.mark.slow
def test_force_trains_a_finished_run_again(specs, mnist, tmp_path):
    kw = dict(epochs=1, train_limit=256)
    first, _ = in_process(tmp_path, mnist, [specs["TINY_A"]], **kw)
    again, log = in_process(tmp_path, mnist, [specs["TINY_A"]], **kw)
    forced, log_forced = in_process(tmp_path, mnist, [specs["TINY_A"]], force=True, **kw)
    assert [r.origin for r in first + again + forced] == ["trained", "reused", "trained"]
    assert "--force trains it again" in log[0]
    assert forced[0].record.history["val_acc"] == first[0].record.history["val_acc"]
    assert RunStore(tmp_path, create=False).verify() == []


class StopAtEpoch(Callback):
    """Engine callback pressing Ctrl-C when epoch ``n`` begins."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_begin(self, epoch, epochs, steps):
        if epoch == self.n:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_just_after_a_checkpoint_lands_counts_that_epoch(specs, mnist, tmp_path,
                                                               monkeypatch):
    """Ctrl-C after checkpoint.pt is renamed into place but before save_checkpoint returns
    (its folder fsync): the epoch is on disk, so the run is interrupted after it, not before.
    (The race behind test_ctrl_c_stops_after_saving's rare miss: it signals as soon as the
    file appears.)"""
    import torch

    from cnnbench.model.spec import get_spec
    from cnnbench.study import jobs
    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.engine import TrainConfig
    real = jobs.save_checkpoint

    def save_then_ctrl_c(folder, state):
        real(folder, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "save_checkpoint", save_then_ctrl_c)
    store, log = RunStore(tmp_path), []
    config = TrainConfig(epochs=3, train_limit=256)
    with pytest.raises(KeyboardInterrupt):
        StudyRunner(store, mnist, config, torch.device("cpu"), log=log.append).run(
            [get_spec(specs["TINY_A"])])
    rid = only_run(tmp_path)
    assert any(f"run {rid} interrupted after epoch 1/3" in line for line in log), log
    assert store.get(rid).epochs_done == 1 and store.verify() == []
    monkeypatch.setattr(jobs, "save_checkpoint", real)
    log.clear()
    StudyRunner(store, mnist, config, torch.device("cpu"), log=log.append).run(
        [get_spec(specs["TINY_A"])])
    assert any(f"resuming run {rid} after epoch 1/3" in line for line in log), log


@pytest.mark.slow
def test_a_corrupted_checkpoint_resumes_from_the_previous_one_with_the_same_numbers(
        specs, mnist, tmp_path):
    import torch

    from cnnbench.atomic import atomic_write_bytes
    from cnnbench.model.spec import get_spec
    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.checkpoint import PREVIOUS, decode, encode
    from cnnbench.train.engine import TrainConfig
    config, spec = TrainConfig(epochs=3, train_limit=512), get_spec(specs["TINY_A"])
    ref, _ = in_process(tmp_path / "ref", mnist, [specs["TINY_A"]], epochs=3, train_limit=512)

    store = RunStore(tmp_path / "s")
    log: list[str] = []
    stopper = StudyRunner(store, mnist, config, torch.device("cpu"), log=log.append,
                          callbacks=lambda s: [StopAtEpoch(3)])
    with pytest.raises(KeyboardInterrupt):
        stopper.run([spec])
    rid = only_run(tmp_path / "s")
    folder = store.folder(rid)
    assert store.get(rid).status == "interrupted" and store.get(rid).epochs_done == 2
    # The previous checkpoint (epoch 1) as if written with another thread count; the last one
    # (epoch 2) damaged on disk.
    prev = decode((folder / PREVIOUS).read_bytes(), "prev")
    prev["environment"] = prev["environment"] | {"threads": 99}
    atomic_write_bytes(folder / PREVIOUS, encode(prev))
    last = folder / "checkpoint.pt"
    last.write_bytes(last.read_bytes()[:-10])

    log.clear()
    results = StudyRunner(store, mnist, config, torch.device("cpu"), log=log.append).run([spec])
    text = "\n".join(log)
    assert "truncated" in text and "trying the previous checkpoint" in text
    assert f"resuming run {rid} after epoch 1/3" in text
    assert "resuming with threads 99 -> " in text and "may differ in the last bits" in text
    assert results[0].origin == "resumed"
    for k in METRICS:
        assert results[0].record.history[k] == ref[0].record.history[k], k
    assert store.verify() == []


# --- concurrency, failures ------------------------------------------------------------------

WRITER = """
import sys
from cnnbench.store.run_store import RunStore
store, who = RunStore(sys.argv[1]), sys.argv[2]
h = {"loss": [1.0], "acc": [0.5], "val_loss": [1.0], "val_acc": [0.5], "seconds": [0.1]}
for i in range(30):
    rid = f"{who}{i:08d}"
    store.begin(rid, {"model": {"name": who}, "dataset": {"name": "d"}, "seed": i,
                      "training": {"epochs": 1}})
    store.epoch_done(rid, h)
    store.end(rid, "finished", h, 0.1, 0.5)
"""


def test_four_processes_writing_a_fresh_index_at_once_lose_nothing(tmp_path):
    store = tmp_path / "fresh"  # created by whichever process comes first
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), f"p{k}"], env=env(),
                              stderr=subprocess.PIPE, text=True) for k in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    rows = RunStore(store, create=False).runs()
    assert len(rows) == 120 and all(r.status == "finished" and r.epochs_done == 1 for r in rows)


@pytest.mark.slow
def test_two_processes_on_one_store_share_the_work_and_both_finish(specs, tmp_path):
    store = tmp_path / "shared"
    args = cli_args(store, specs["TINY_A"], specs["TINY_B"], epochs=1, limit=512)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env()) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    s = RunStore(store, create=False)
    rows = s.runs()
    assert sorted(r.model for r in rows) == ["TINY_A", "TINY_B"]
    assert all(r.status == "finished" and r.epochs_done == 1 for r in rows)
    assert s.verify() == []
    # Each run trained by exactly one process; the other reused it.
    assert sum(o.count("Epoch 1/1") for o in outs) == 2, outs
    assert sum(o.count(": reused run") for o in outs) == 2, outs


def test_a_diverging_run_is_marked_with_epoch_and_step_and_the_study_goes_on(specs, mnist,
                                                                             tmp_path):
    results, log = in_process(tmp_path, mnist, [specs["TINY_A"], specs["TINY_B"]], epochs=2,
                              train_limit=1024, optimizer_args=(("learning_rate", 1e30),))
    store = RunStore(tmp_path, create=False)
    rows = {r.model: r for r in store.runs()}
    assert [r.record.status for r in results] == ["diverged", "diverged"]
    for name in ("TINY_A", "TINY_B"):  # the second model was trained after the first diverged
        r = rows[name]
        # Step 1 starts from finite weights; its update with lr 1e30 makes step 2's loss NaN.
        assert (r.status, r.diverged_epoch, r.diverged_step) == ("diverged", 1, 2), r
        assert f"{name}: run {r.id} diverged (non-finite loss) at epoch 1, step 2; going on " \
               f"with the next model" in log
    assert store.verify() == []
    runs = cnnbench(sys.executable, "-m", "cnnbench", "runs", "--store", str(tmp_path))
    assert runs.stdout.count("diverged (epoch 1, step 2)") == 2
    # A diverged run is a result too: the same command reuses it rather than diverging again.
    again, log = in_process(tmp_path, mnist, [specs["TINY_A"]], epochs=2, train_limit=1024,
                            optimizer_args=(("learning_rate", 1e30),))
    assert again[0].origin == "reused" and again[0].record.diverged_at == (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_after_saving_and_says_how_to_resume(specs, tmp_path, sig):
    store = tmp_path / "s"
    args = cli_args(store, specs["TINY_A"], epochs=3)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())
    rid = None
    try:
        deadline = time.monotonic() + 120
        while rid is None:
            found = list((store / "runs").glob("*/checkpoint.pt")) if store.exists() else []
            rid = found[0].parent.name if found else None
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "run the same command again to resume" in err
    assert f"run {rid} interrupted after epoch 1/3" in out
    s = RunStore(store, create=False)
    assert s.get(rid).status == "interrupted" and s.get(rid).epochs_done == 1
    assert s.verify() == []


def test_ctrl_c_that_passed_through_exec_still_exits_130_under_python_m(tmp_path):
    """Ctrl-C landing while a dataclass is being defined (exec of a string inside an import)
    is caught like any other; `python -m` must still exit 130, not die by SIGINT (-2)."""
    (tmp_path / "interrupted_cli.py").write_text(
        "import sys\n"
        "from cnnbench import cli\n"
        "from cnnbench.cli import models\n"
        "def run(args):\n"
        "    exec('raise KeyboardInterrupt')  # as dataclasses' exec() meets a Ctrl-C\n"
        "models.run = run\n"
        "sys.exit(cli.main(['models']))\n")
    p = subprocess.run([sys.executable, "-m", "interrupted_cli"], capture_output=True,
                       text=True, env=env(), cwd=tmp_path, timeout=120)
    assert p.returncode == 130, p.stdout + p.stderr
    assert "cnnbench models: interrupted" in p.stderr


@pytest.mark.slow
def test_a_failed_write_names_the_file_and_leaves_the_run_resumable(specs, tmp_path):
    """A real write failure: the process may not write files over 330 kB (RLIMIT_FSIZE, as a
    full disk would refuse), so probabilities.npy (400 kB) fails after the last epoch."""
    import resource
    store = tmp_path / "s"
    args = cli_args(store, specs["TINY_A"], epochs=2, limit=256)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (330_000, 330_000))  # noqa: E731
    p = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=180,
                       preexec_fn=limit)
    assert p.returncode == 1, p.stdout + p.stderr  # the disk refused: a failure, not usage
    assert "probabilities.npy" in p.stderr and "File too large" in p.stderr
    assert "stopped after epoch 2/2 because a file could not be written" in p.stdout
    s = RunStore(store, create=False)
    rid = only_run(store)
    assert s.get(rid).status == "interrupted"

    again = run_cli(store, specs["TINY_A"], epochs=2, limit=256)
    assert f"resuming run {rid} after epoch 2/2" in again.stdout and "Epoch" not in again.stdout
    assert s.get(rid).status == "finished" and s.verify() == []


def test_an_unwritable_store_fails_before_training_and_names_the_path(specs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = blocker / "store"
    p = cnnbench(*cli_args(store, specs["TINY_A"], epochs=1, limit=128, out=tmp_path / "out"))
    assert p.returncode == 1  # the store failed, not the input (errors.py): exit 1, not 2
    assert f"the run store {store} is not writable" in p.stderr
    assert "Epoch" not in p.stdout and "Train on" not in p.stdout


def test_a_read_only_store_fails_before_training(specs, tmp_path):
    """A store folder of mode 0555. Root writes into it regardless, so as root (CI) the command
    runs without the capabilities that override file modes (AS_OWNER)."""
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(0o555)
    try:
        p = cnnbench(*AS_OWNER, *cli_args(store, specs["TINY_A"], epochs=1, limit=128,
                                           out=tmp_path / "out"))
        left = sorted(x.name for x in store.iterdir())
    finally:
        store.chmod(0o755)
    assert p.returncode == 1, p.stdout + p.stderr  # a store failure: exit 1
    assert f"the run store {store} is not writable" in p.stderr
    assert "Train on" not in p.stdout and left == []


# --- runs, show, rm ------------------------------------------------------------------------

@pytest.mark.slow
def test_runs_show_and_rm_commands(uninterrupted, tmp_path):
    src, _ = uninterrupted
    store = tmp_path / "copy"  # rm must not break the fixture other tests share
    subprocess.run(["cp", "-a", str(src), str(store)], check=True)
    rid = only_run(store)
    py = (sys.executable, "-m", "cnnbench")

    runs = cnnbench(*py, "runs", "--store", str(store))
    assert runs.returncode == 0
    line = next(ln for ln in runs.stdout.splitlines() if rid in ln)
    acc = RunStore(store, create=False).get(rid).test_accuracy
    for cell in ("TINY_A", "mnist", "3/3", f"{100 * acc:.2f} %", "finished"):
        assert cell in line, (cell, line)

    show = cnnbench(*py, "show", rid[:5], "--store", str(store))
    assert show.returncode == 0
    assert f"Run {rid}: TINY_A on mnist, seed 0, 3/3 epochs, finished" in show.stdout
    assert "train_limit=1024" in show.stdout and "Dropout" in show.stdout
    epochs = [ln.strip("│ ").split()[0] for ln in show.stdout.splitlines() if "│" in ln]
    assert epochs[-3:] == ["1", "2", "3"], show.stdout

    refused = cnnbench(*py, "rm", rid[:6], "--store", str(store))  # no terminal to ask on
    assert refused.returncode == 1 and "without --yes" in refused.stderr
    assert RunStore(store, create=False).get(rid) is not None

    rm = cnnbench(*py, "rm", rid[:6], "--yes", "--store", str(store))
    assert rm.returncode == 0 and f"Deleted run {rid}" in rm.stdout
    assert RunStore(store, create=False).runs() == []
    assert not (store / "runs" / rid).exists()

    missing = cnnbench(*py, "show", "ffff", "--store", str(store))
    assert missing.returncode == 2 and "no run matching 'ffff'" in missing.stderr
