"""`cnnbench run/report/predict/export` options end to end on tiny data: --precision (recorded,
in the run id, resumed), --class-names, --dataset kmnist from the user's files, `report RUN`
for a subset, and `predict RUN` / `export RUN` by run id."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_run_files import make_dataset, write_idx
from test_store import StopAtEpoch

from cnnbench.cli import main
from cnnbench.data.datasets import array_sha256, load_folder
from cnnbench.store.run_store import RunStore
from cnnbench.train import precision as precision_module

SPEC = """\
name: {name}
layers:
  - Conv2D: {{filters: {filters}, kernel_size: 3, activation: relu}}
  - MaxPooling2D
  - Flatten
  - Dense: {{units: {units}, activation: softmax}}
"""


def cli(*args: str | Path) -> tuple[int, str, str]:
    """``cnnbench ARGS`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def spec_file(folder: Path, name: str, units: int = 3, filters: int = 4) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, units=units, filters=filters))
    return path


def train(store: Path, spec: Path, data: Path, *extra: str | Path, epochs: int = 1,
          out: Path | None = None) -> str:
    """One run on the bars; its stdout."""
    rc, stdout, err = cli("run", "--model-file", spec, "--data-dir", data, "--epochs", epochs,
                          "--batch-size", "16", "--store", store,
                          "--out", out or store.parent / f"{store.name}-out",
                          *extra)
    assert rc == 0, stdout + err
    return stdout


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    """3 classes (a bar high, in the middle or low), 240 train and 60 test images."""
    return make_dataset(tmp_path_factory.mktemp("data") / "bars")


# --- --precision -------------------------------------------------------------------------

@pytest.mark.slow
def test_precision_is_recorded_in_the_run_and_its_id_and_auto_follows_the_cpu(
        bars, tmp_path, monkeypatch):
    spec, store = spec_file(tmp_path, "bars_net"), tmp_path / "s"
    out32 = train(store, spec, bars, "--precision", "fp32")
    out16 = train(store, spec, bars, "--precision", "bf16")
    assert ", cpu, fp32, " in out32 and ", cpu, bf16, " in out16  # the "Train on" line
    s = RunStore(store, create=False)
    by_precision = {s.read_config(r.id)["training"]["precision"]: r.id for r in s.runs()}
    assert set(by_precision) == {"fp32", "bf16"}  # two runs: the precision is in the id
    assert by_precision["fp32"] != by_precision["bf16"]
    # auto: the same run as the precision it resolves to, so it is reused, not trained.
    for has_bf16, precision in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda v=has_bf16: v)
        again = train(store, spec, bars, "--precision", "auto")
        assert f", cpu, {precision}, " in again and "Reused from" in again, again
        assert by_precision[precision] in again
    assert len(s.runs()) == 2


@pytest.mark.slow
def test_a_bf16_run_resumes_to_the_numbers_of_one_never_interrupted(bars, tmp_path):
    from cnnbench.model.spec import get_spec
    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.engine import TrainConfig
    spec = spec_file(tmp_path, "bars_net")
    train(tmp_path / "ref", spec, bars, "--precision", "bf16", epochs=3)
    # Ctrl-C as epoch 3 begins, in the runner `cnnbench run` uses, with the command's settings.
    store = RunStore(tmp_path / "s")
    runner = StudyRunner(store, load_folder(bars, log=lambda m: None),
                         TrainConfig(epochs=3, batch_size=16, precision="bf16"),
                         torch.device("cpu"), log=lambda m: None,
                         callbacks=lambda s: [StopAtEpoch(3)])
    with pytest.raises(KeyboardInterrupt):
        runner.run([get_spec(str(spec))])
    (row,) = store.runs()
    assert (row.status, row.epochs_done) == ("interrupted", 2)
    resumed = train(tmp_path / "s", spec, bars, "--precision", "bf16", epochs=3)
    assert f"resuming run {row.id} after epoch 2/3" in resumed
    ref = RunStore(tmp_path / "ref", create=False)
    assert [r.id for r in ref.runs()] == [row.id]  # the same key: the same run
    assert store.read_history(row.id) | {"seconds": None} == \
        ref.read_history(row.id) | {"seconds": None}
    assert store.get(row.id).test_accuracy == ref.get(row.id).test_accuracy
    assert store.read_config(row.id)["training"]["precision"] == "bf16"


# --- --class-names, report RUN, predict RUN, export RUN ------------------------------------

@pytest.fixture(scope="module")
def study(bars, tmp_path_factory) -> dict:
    """Two models on the bars, with class names from a file (not the folder's classes.txt)."""
    root = tmp_path_factory.mktemp("study")
    names = root / "names.txt"
    names.write_text("up\ncentre\ndown\n")
    store = root / "s"
    for name, filters in (("bars_a", 4), ("bars_b", 6)):
        train(store, spec_file(root, name, filters=filters), bars, "--class-names", names,
              out=root / name)
    s = RunStore(store, create=False)
    return {"root": root, "store": store, "ids": {r.model: r.id for r in s.runs()}}


@pytest.mark.slow
def test_class_names_file_names_the_classes_everywhere(study):
    rid = study["ids"]["bars_a"]
    doc = json.loads((study["root"] / "bars_a" / "results.json").read_text())
    assert doc["dataset"]["classes"] == ["up", "centre", "down"]
    s = RunStore(study["store"], create=False)
    from cnnbench.model.weights import load_weights
    weights = load_weights(s.folder(rid) / "weights.safetensors")
    assert list(weights.classes) == ["up", "centre", "down"]


@pytest.mark.slow
def test_report_of_named_runs_reports_those_only(study, bars, tmp_path):
    a, b = study["ids"]["bars_a"], study["ids"]["bars_b"]
    rc, out, err = cli("report", a[:6], "--store", study["store"], "--data-dir", bars,
                       "--out", tmp_path / "r")
    assert rc == 0, out + err
    assert "Report of 1 run(s)" in out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "bars_a" in md and "bars_b" not in md
    rc, out, _ = cli("report", "--store", study["store"], "--data-dir", bars,
                     "--out", tmp_path / "all")
    assert rc == 0 and "Report of 2 run(s)" in out
    assert "bars_b" in (tmp_path / "all" / "report.md").read_text()
    rc, _, err = cli("report", "fffff", "--store", study["store"], "--out", tmp_path / "x")
    assert rc == 2 and "no run matching 'fffff'" in err
    assert b  # both runs exist; only the named one was reported


@pytest.mark.slow
def test_predict_and_export_take_a_run_id(study, tmp_path):
    rid = study["ids"]["bars_a"]
    image = tmp_path / "digit.png"
    canvas = np.full((56, 56), 255, np.uint8)
    canvas[20:36, 8:48] = 0  # a dark bar on white, as drawn
    Image.fromarray(canvas).save(image)
    rc, out, err = cli("predict", rid[:7], str(image), "--store", study["store"])
    assert rc == 0, out + err
    assert "bars_a (bars, 3 classes) from " in out and rid in out  # the run's own weights
    line = next(x for x in out.splitlines() if x.startswith(f"{image}: "))
    shown = line.split(": ", 1)[1].split("  (")[0].split(", ")
    assert sorted(s.rsplit(" ", 2)[0] for s in shown) == ["centre", "down", "up"]
    assert sum(float(s.rsplit(" ", 2)[1]) for s in shown) == pytest.approx(100, abs=0.2)

    copy = tmp_path / "copy.safetensors"
    rc, out, err = cli("export", rid[:7], "--format", "safetensors", "--out", copy,
                       "--store", study["store"])
    assert rc == 0, out + err
    s = RunStore(study["store"], create=False)
    assert copy.read_bytes() == (s.folder(rid) / "weights.safetensors").read_bytes()
    rc, _, err = cli("export", "0000000", "--format", "safetensors", "--store", study["store"])
    assert rc == 2 and "no run matching '0000000'" in err


# --- --dataset kmnist from the user's files ------------------------------------------------

@pytest.mark.slow
def test_kmnist_from_user_files_keeps_its_names_and_records_the_hashes(tmp_path):
    """KMNIST has no pinned array hashes: files given with --data-dir are used, said so,
    and their SHA-256 recorded (10 classes: a block in one of 10 places)."""
    folder = tmp_path / "kmnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 200), ("t10k", 50)):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 12 * (k // 5), 1 + 5 * (k % 5)
            x[i, r:r + 10, c:c + 5] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
        arrays[split] = x
    spec, out = spec_file(tmp_path, "k_net", units=10), tmp_path / "out"
    rc, stdout, err = cli("run", "--dataset", "kmnist", "--data-dir", folder, "--model-file",
                          spec, "--epochs", "1", "--batch-size", "16", "--store",
                          tmp_path / "s", "--out", out)
    assert rc == 0, stdout + err
    assert f"data: user files in {folder}: ok, BUT UNPINNED: kmnist has no published " \
           "checksums" in " ".join(err.split())
    assert "their SHA-256 is recorded with every run" in " ".join(err.split())
    doc = json.loads((out / "results.json").read_text())["dataset"]
    assert doc["name"] == "kmnist" and doc["source"] == f"user files in {folder}"
    assert doc["classes"][0] == "お (o)" and doc["classes"][9] == "を (wo)"
    assert doc["sha256"]["x_train"] == array_sha256(arrays["train"])
    assert doc["sha256"]["x_test"] == array_sha256(arrays["t10k"])
    assert doc["class_counts"] == {"train": [20] * 10, "test": [5] * 10}
