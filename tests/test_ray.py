"""Studies on a Ray cluster: a real two-node cluster on loopback (a head and a second node,
each `ray start` as its own process, one CPU each), the same numbers as a local run, and a
worker killed in the middle of a job. Without ray those tests skip and say why."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import cnnbench_cli

from cnnbench.store.run_store import RunStore

SRC = Path(__file__).resolve().parents[1] / "src"
HAVE_RAY = importlib.util.find_spec("ray") is not None
NO_RAY = "ray is not installed here: pip install 'cnnbench[ray]' to run the cluster tests"
TINY = """name: {name}
input_shape: [28, 28, 1]
layers:
  - MaxPooling2D: {{}}  # first: evaluating 10k test images each epoch stays cheap
  - Conv2D: {{filters: {filters}, kernel_size: [3, 3], activation: relu}}
  - BatchNormalization: {{}}
  - Flatten: {{}}
  - Dense: {{units: 32, activation: relu}}
  - Dropout: {{rate: 0.5}}
  - Dense: {{units: 10, activation: softmax}}
"""
METRICS = ("loss", "acc", "val_loss", "val_acc")


# The cluster, its nodes and the drivers share a token of their own: Ray's token
# authentication, on as Ray turns it on for new clusters, and no ~/.ray/auth_token involved.
TOKEN = uuid.uuid4().hex


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
             RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, **extra)
    e.pop("CNNBENCH_STORE", None)
    return e


def cnnbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``cnnbench run ARGS`` in a child process that shares the cluster's token; it must pass."""
    p = cnnbench_cli("run", *args, env=env(), timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("specs")
    out = {}
    for name, filters in (("TINY_A", 4), ("TINY_B", 6)):
        (d / f"{name}.yaml").write_text(TINY.format(name=name, filters=filters))
        out[name] = str(d / f"{name}.yaml")
    return out


# --- without a cluster ---------------------------------------------------------------------

def test_executor_ray_without_ray_says_how_to_install_it(specs, tmp_path, monkeypatch, capsys):
    from cnnbench.cli import main
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is absent
    code = main(["run", "--models", specs["TINY_A"], "--executor", "ray", "--store",
                 str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--executor ray needs the 'ray' package" in err
    assert "pip install 'cnnbench[ray]'" in err


def test_ray_address_without_executor_ray_is_refused(specs, tmp_path, capsys):
    from cnnbench.cli import main
    code = main(["run", "--models", specs["TINY_A"], "--ray-address", "auto", "--store",
                 str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    assert code == 2 and "--ray-address auto is for --executor ray" in capsys.readouterr().err


def test_a_worker_refuses_data_that_does_not_match_the_study_hashes(mnist):
    from cnnbench.data.datasets import DataError
    from cnnbench.study.executors import verified_tensors
    from cnnbench.study.jobs import DataRef
    ref = DataRef.of(mnist)
    arrays = {k: v[:100].copy() for k, v in mnist.arrays().items()}
    with pytest.raises(DataError, match="x_train .* has SHA-256 .* the study's is"):
        verified_tensors(ref, arrays, "cpu")
    good = {k: v.copy() for k, v in mnist.arrays().items()}
    x, y, xt, yt = verified_tensors(ref, good, "cpu")
    assert x.shape == (60000, 1, 28, 28) and yt.shape == (10000,)


def test_a_worker_checkpoints_only_into_a_run_folder_it_can_see(tmp_path):
    from cnnbench.model.spec import get_spec
    from cnnbench.study.executors import reachable_folder
    from cnnbench.study.jobs import DataRef, TrainJob
    from cnnbench.train.engine import TrainConfig
    data = DataRef("mnist", tuple("0123456789"), "-", "fp", {})
    job = TrainJob("abc", get_spec("CNN_MNIST_1"), TrainConfig(), data,
                   checkpoint_dir=str(tmp_path))
    assert reachable_folder(job) is None  # no config.json: another node's filesystem
    (tmp_path / "config.json").write_text(json.dumps({"run_id": "other"}))
    assert reachable_folder(job) is None  # another run's folder at the same path
    (tmp_path / "config.json").write_text(json.dumps({"run_id": "abc"}))
    assert reachable_folder(job) == tmp_path


# --- a real cluster on loopback ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class Cluster:
    """A head node and a worker node, each `ray start --block` in its own session, sharing a
    temp dir of their own, so that teardown stops exactly these processes."""

    def __init__(self) -> None:
        # Short: Ray puts Unix sockets under it, and their paths must stay under 108 bytes.
        self.temp = Path(tempfile.mkdtemp(prefix="cbr", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        beside = Path(sys.executable).with_name("ray")  # the venv's, for the venv's ray
        self.ray = str(beside) if beside.exists() else shutil.which("ray") or "ray"

    def _start(self, *args: str) -> None:
        log = open(self.temp / f"start-{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen(
            [self.ray, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
             "--disable-usage-stats", "--object-store-memory=200000000", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True))

    def start(self) -> None:
        self._start("--head", f"--port={self.port}", f"--temp-dir={self.temp}",
                    "--include-dashboard=false")
        self._wait_for_nodes(1)
        self._start(f"--address={self.address}")
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        code = ("import ray, time, sys\n"
                f"ray.init(address='{self.address}', include_dashboard=False, "
                "log_to_driver=False, logging_level='ERROR')\n"
                f"deadline = time.time() + {timeout}\n"
                f"while len([x for x in ray.nodes() if x['Alive']]) < {n}:\n"
                "    assert time.time() < deadline, ray.nodes()\n"
                "    time.sleep(0.5)\n")
        deadline = time.monotonic() + timeout
        while True:
            for p in self.procs:
                assert p.poll() is None, self.logs()
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=env(), timeout=timeout + 30)
            if p.returncode == 0:
                return
            assert time.monotonic() < deadline, p.stderr[-3000:] + self.logs()
            time.sleep(1)

    def logs(self) -> str:
        return "\n".join(f.read_text()[-2000:] for f in sorted(self.temp.glob("start-*.log")))

    def stop(self) -> None:
        for p in reversed(self.procs):  # `ray start --block` stops its node's processes
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        # Whatever survived (workers, agents) names the temp dir or the session in it.
        for _ in range(20):
            left = _processes_mentioning(str(self.temp))
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    if not HAVE_RAY:
        print(f"\nskipping the Ray cluster tests: {NO_RAY}", file=sys.stderr)
        pytest.skip(NO_RAY)
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def study_args(store: Path, *models: str, epochs: int, limit: int, seeds: int = 1
               ) -> list[str]:
    return ["--models", *models, "--epochs", str(epochs), "--train-limit", str(limit),
            "--seeds", str(seeds), "--threads", "1", "--store", str(store), "--out",
            str(store.parent / f"{store.name}-out")]


def assert_same_runs(a_root: Path, b_root: Path) -> list[str]:
    """Both stores hold the same finished runs with bit-identical numbers; their ids."""
    import torch
    from safetensors import safe_open
    a, b = RunStore(a_root, create=False), RunStore(b_root, create=False)
    ids = sorted(r.id for r in a.runs())
    assert ids == sorted(r.id for r in b.runs())
    for rid in ids:
        ra, rb = a.get(rid), b.get(rid)
        assert ra.status == rb.status == "finished", (ra, rb)
        assert (ra.test_accuracy, ra.test_loss) == (rb.test_accuracy, rb.test_loss), rid
        ha, hb = a.read_history(rid), b.read_history(rid)
        for k in METRICS:
            assert ha[k] == hb[k], (rid, k)
        for name in ("predictions.npy", "probabilities.npy"):
            assert np.array_equal(np.load(a.folder(rid) / name), np.load(b.folder(rid) / name))
        with safe_open(a.folder(rid) / "weights.safetensors", "pt") as wa, \
                safe_open(b.folder(rid) / "weights.safetensors", "pt") as wb:
            assert sorted(wa.keys()) == sorted(wb.keys())
            for k in wa.keys():
                assert torch.equal(wa.get_tensor(k), wb.get_tensor(k)), (rid, k)
        assert b.read_config(rid)["environment"]["threads"] == 1
        assert json.loads((b.folder(rid) / "grad_norms.json").read_text()) == json.loads(
            (a.folder(rid) / "grad_norms.json").read_text())
    assert a.verify() == [] and b.verify() == []
    return ids


@pytest.mark.slow
def test_a_study_on_a_two_node_cluster_gives_the_local_numbers(cluster, specs, tmp_path):
    models = (specs["TINY_A"], specs["TINY_B"])
    cnnbench(*study_args(tmp_path / "local", *models, epochs=1, limit=256, seeds=2))
    remote = cnnbench(*study_args(tmp_path / "ray", *models, epochs=1, limit=256, seeds=2),
                      "--executor", "ray", "--ray-address", cluster.address)
    assert "2 node(s), 2 CPUs; 1 thread(s) a job" in remote.stdout, remote.stdout
    ids = assert_same_runs(tmp_path / "local", tmp_path / "ray")
    assert len(ids) == 4
    for rid in ids:
        assert f"run {rid} finished on" in remote.stdout
    # The driver wrote the same report and results a local run writes.
    for out in ("local", "ray"):
        assert (tmp_path / f"{out}-out" / "report.html").is_file()
    doc_l = json.loads((tmp_path / "local-out/seed-1/results.json").read_text())
    doc_r = json.loads((tmp_path / "ray-out/seed-1/results.json").read_text())
    assert doc_l["models"]["TINY_B"]["test_accuracy_percent"] == \
        doc_r["models"]["TINY_B"]["test_accuracy_percent"]
    # Run again: everything is in the store, nothing goes to the cluster.
    again = cnnbench(*study_args(tmp_path / "ray", *models, epochs=1, limit=256, seeds=2),
                     "--executor", "ray", "--ray-address", cluster.address)
    assert again.stdout.count("reused run") == 4 and "finished on" not in again.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_resumes_from_its_checkpoint(cluster, specs,
                                                                            tmp_path):
    model = specs["TINY_A"]
    args = study_args(tmp_path / "ray", model, epochs=3, limit=1024)
    proc = subprocess.Popen([sys.executable, "-m", "cnnbench", "run", *args, "--executor", "ray",
                             "--ray-address", cluster.address], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env())
    try:
        store = tmp_path / "ray" / "runs"
        deadline = time.monotonic() + 180
        while not list(store.glob("*/checkpoint.pt")):  # epoch 1 done: the job is in epoch 2
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint in 180 s"
            time.sleep(0.01)
        workers = _processes_mentioning("ray::cnnbench TINY_A")
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"pid {workers[0]}); Ray ran it again (1 retry, resumed after epoch" in out, out
    assert "Retried after a worker died: TINY_A (1 retry)" in out
    rid = RunStore(tmp_path / "ray", create=False).runs()[0].id
    attempts = RunStore(tmp_path / "ray", create=False).read_config(rid)["sessions"][-1][
        "attempts"]
    assert [a["pid"] for a in attempts][0] == workers[0] and attempts[1]["resumed_from"] >= 1
    # Resumed bit-exactly: the numbers of an uninterrupted local run.
    cnnbench(*study_args(tmp_path / "local", model, epochs=3, limit=1024))
    assert_same_runs(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_a_driver_without_the_cluster_token_is_told_how_to_connect(cluster, specs, tmp_path):
    e = env()
    e.pop("RAY_AUTH_TOKEN")
    e["RAY_AUTH_MODE"] = "disabled"
    e["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray's own retries: 2 s, not 20
    p = subprocess.run([sys.executable, "-m", "cnnbench", "run", *study_args(
        tmp_path, specs["TINY_A"], epochs=1, limit=128), "--executor", "ray", "--ray-address",
        cluster.address], capture_output=True, text=True, env=e, timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"cannot connect to the Ray cluster at {cluster.address}" in p.stderr
    assert "set RAY_AUTH_MODE=token" in p.stderr
