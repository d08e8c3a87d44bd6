"""``cnnbench run`` with model files, study files and the user's own idx dataset."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnbench.cli import main
from cnnbench.data.datasets import DataError, load_folder

SPEC = """\
name: {name}
layers:
  - Conv2D: {{filters: 4, kernel_size: 3, activation: relu}}
  - MaxPooling2D
  - Flatten
  - Dense: {{units: {units}, activation: softmax}}
"""


def write_idx(path: Path, a: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())


def make_dataset(folder: Path, classes: int = 3, names: bool = True) -> Path:
    """A learnable toy dataset: class k is a bright bar in row band k."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 240), ("t10k", 60)):
        y = np.arange(n) % classes
        x = rng.integers(0, 40, (n, 28, 28))
        for i, k in enumerate(y):
            x[i, 4 + 7 * k: 8 + 7 * k, 4:24] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    if names:
        (folder / "classes.txt").write_text("top\nmiddle\nbottom\n")
    return folder


def test_custom_dataset_records_names_counts_and_hashes(tmp_path):
    ds = load_folder(make_dataset(tmp_path / "bars"), log=lambda m: None)
    assert ds.info.name == "bars" and ds.info.classes == ("top", "middle", "bottom")
    assert ds.class_counts() == {"train": [80, 80, 80], "test": [20, 20, 20]}
    assert set(ds.hashes()) == {"x_train", "y_train", "x_test", "y_test"}


def test_class_names_file_too_short_is_an_error(tmp_path):
    folder = make_dataset(tmp_path / "bars")
    (folder / "classes.txt").write_text("top\nmiddle\n")
    with pytest.raises(DataError, match="classes.txt: 2 class names, but the labels .* go up "
                                        "to 2"):
        load_folder(folder, log=lambda m: None)


@pytest.mark.slow
def test_run_model_file_on_custom_data(tmp_path, capsys):
    data = make_dataset(tmp_path / "bars")
    spec = tmp_path / "bars_net.yaml"
    spec.write_text(SPEC.format(name="bars_net", units=3))
    out = tmp_path / "out"
    rc = main(["run", "--model-file", str(spec), "--data-dir", str(data), "--epochs", "2",
               "--batch-size", "16", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"]["name"] == "bars"
    assert doc["dataset"]["classes"] == ["top", "middle", "bottom"]
    assert doc["dataset"]["class_counts"] == {"train": [80, 80, 80], "test": [20, 20, 20]}
    assert len(doc["dataset"]["sha256"]["x_train"]) == 64
    assert doc["models"]["bars_net"]["test_accuracy_percent"] > 90  # the bars are easy


def test_wrong_class_count_fails_before_training(tmp_path, capsys):
    data = make_dataset(tmp_path / "bars")
    spec = tmp_path / "ten.yaml"
    spec.write_text(SPEC.format(name="ten", units=10))
    rc = main(["run", "--model-file", str(spec), "--data-dir", str(data),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert (f"{spec}: layer 4 (Dense 10 softmax) has 10 units but the dataset has 3 classes"
            in err)
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_study_file_runs_each_seed(tmp_path, capsys):
    make_dataset(tmp_path / "bars")
    (tmp_path / "net.yaml").write_text(SPEC.format(name="net", units=3))
    study = tmp_path / "study.yaml"
    study.write_text("models: [net.yaml]\ndata_dir: bars\ntraining:\n"
                     "  optimizer: {Adam: {learning_rate: 0.01}}\n"
                     "  epochs: 1\n  batch_size: 32\n  seeds: [3, 4]\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0, capsys.readouterr().err
    for seed in (3, 4):
        doc = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        assert doc["training"]["seed"] == seed
        assert doc["training"]["optimizer"].startswith("Adam(learning_rate=0.01, beta_1=0.9")


@pytest.mark.slow
def test_a_model_spec_given_as_the_study_runs_as_a_model_file(tmp_path, capsys):
    data = make_dataset(tmp_path / "bars")
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC.format(name="net", units=3))
    out = tmp_path / "out"
    rc = main(["run", str(spec), "--data-dir", str(data), "--epochs", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert list(json.loads((out / "results.json").read_text())["models"]) == ["net"]
    # Weights for predict and export, with their spec, in the run store; a run id finds them.
    from cnnbench.model.weights import load_weights
    from cnnbench.store.run_store import RunStore
    (run,) = RunStore().runs()
    loaded = load_weights(RunStore().folder(run.id) / "weights.safetensors")
    assert loaded.spec.name == "net" and len(loaded.classes) == 3
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
