"""`cnnbench run` options end to end on tiny data, and `report/predict/export RUN`: --precision
(recorded, in the run id, resumed), --class-names, `report RUN` for a subset, `predict RUN` and
`export RUN` by run id; bad --device, --seed, --seeds values refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cnnbench_main, error_line, run_args, tiny_spec
from PIL import Image
from test_cli_run_files import make_dataset
from test_store import TINY, StopAtEpoch

from cnnbench.cli import main
from cnnbench.data.datasets import load_folder
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


def spec_file(folder: Path, name: str, units: int = 3, filters: int = 4) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, units=units, filters=filters))
    return path


def train(store: Path, spec: Path, data: Path, *extra: str | Path, epochs: int = 1,
          out: Path | None = None) -> str:
    """One run on the bars; its stdout."""
    rc, stdout, err = cnnbench_main("run", "--model-file", spec, "--data-dir", data, "--epochs",
                                    epochs, "--batch-size", "16", "--store", store,
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
    rc, out, err = cnnbench_main("report", a[:6], "--store", study["store"], "--data-dir",
                                 bars, "--out", tmp_path / "r")
    assert rc == 0, out + err
    assert "Report of 1 run(s)" in out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "bars_a" in md and "bars_b" not in md
    rc, out, _ = cnnbench_main("report", "--store", study["store"], "--data-dir", bars,
                               "--out", tmp_path / "all")
    assert rc == 0 and "Report of 2 run(s)" in out
    assert "bars_b" in (tmp_path / "all" / "report.md").read_text()
    rc, _, err = cnnbench_main("report", "fffff", "--store", study["store"], "--out",
                               tmp_path / "x")
    assert rc == 2 and "no run matching 'fffff'" in err
    assert b  # both runs exist; only the named one was reported


@pytest.mark.slow
def test_predict_and_export_take_a_run_id(study, tmp_path):
    rid = study["ids"]["bars_a"]
    image = tmp_path / "digit.png"
    canvas = np.full((56, 56), 255, np.uint8)
    canvas[20:36, 8:48] = 0  # a dark bar on white, as drawn
    Image.fromarray(canvas).save(image)
    rc, out, err = cnnbench_main("predict", rid[:7], str(image), "--store", study["store"])
    assert rc == 0, out + err
    assert "bars_a (bars, 3 classes) from " in out and rid in out  # the run's own weights
    line = next(x for x in out.splitlines() if x.startswith(f"{image}: "))
    shown = line.split(": ", 1)[1].split("  (")[0].split(", ")
    assert sorted(s.rsplit(" ", 2)[0] for s in shown) == ["centre", "down", "up"]
    assert sum(float(s.rsplit(" ", 2)[1]) for s in shown) == pytest.approx(100, abs=0.2)

    copy = tmp_path / "copy.safetensors"
    rc, out, err = cnnbench_main("export", rid[:7], "--format", "safetensors", "--out", copy,
                                 "--store", study["store"])
    assert rc == 0, out + err
    s = RunStore(study["store"], create=False)
    assert copy.read_bytes() == (s.folder(rid) / "weights.safetensors").read_bytes()
    rc, _, err = cnnbench_main("export", "0000000", "--format", "safetensors", "--store",
                               study["store"])
    assert rc == 2 and "no run matching '0000000'" in err


# --- --device, --seed, --seeds: bad values are one line ------------------------------------

@pytest.mark.parametrize("device, says", [
    ("foo", "--device 'foo': expected auto, cpu, cuda or cuda:N"),
    ("cuda", "--device cuda: this torch (" if not __import__("torch").cuda.is_available()
     else "unused"),
])
def test_a_bad_device_is_one_line(tmp_path, device, says):
    if says == "unused":
        pytest.skip("this machine has CUDA")  # CI's has none: the case runs there
    code, out, err = cnnbench_main(*run_args(tmp_path, tiny_spec(tmp_path)), "--device", device)
    assert code == 2
    assert says in error_line(err, "run")
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.csv"))


@pytest.mark.parametrize("option", ["--seed", "--seeds"])
def test_a_seed_beyond_64_bits_is_refused_in_one_line(tmp_path, capsys, option):
    try:
        code = main(["run", option, "99999999999999999999", "--out", str(tmp_path)])
    except SystemExit as e:  # refused by the parser itself
        code = e.code
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("cnnbench run: error: ") and option in line
    assert "9223372036854775807" in line and "99999999999999999999" in line


def test_seeds_k_is_bounded(tmp_path):
    code, out, err = cnnbench_main("run", "--seeds", "100000000000", "--out", tmp_path)
    assert code == 2
    line = error_line(err, "run")
    assert line.startswith("cnnbench run: error: --seeds") and "100000000000" in line
    assert "1000" in line.replace("100000000000", "")


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("specs")
    (d / "TINY_A.yaml").write_text(TINY.format(name="TINY_A"))
    return {"TINY_A": str(d / "TINY_A.yaml")}


def test_repeated_seeds_are_refused(specs, capsys):
    assert main(["run", "--models", specs["TINY_A"], "--seeds", "1", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 1 1: seed(s) 1 given more than once; expected distinct seeds" in err, err
