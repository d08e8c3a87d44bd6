"""report/: tables, result files and figures, from results made by hand (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from cnnbench.atomic import atomic_write_text
from cnnbench.model.spec import get_spec, list_models
from cnnbench.report.figures import notebook_reference, plot_history
from cnnbench.report.files import results_document, write_results
from cnnbench.report.table import (
    describe_batchnorm,
    describe_dropout,
    model_summary,
    models_table,
    summary_table,
)
from cnnbench.store.records import RunRecord
from cnnbench.train.engine import EpochLogs, TrainConfig, TrainResult
from cnnbench.train.progress import epoch_line

# The notebook's numbers ship with the package; ../shared/seed/results.json is the same file
# where the shared folder sits beside the checkout.
PACKAGED = Path(__file__).resolve().parents[1] / "src" / "cnnbench" / "reference" / \
    "notebook_results.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "results.json"
SEED_RESULTS = SHARED if SHARED.is_file() else PACKAGED


def render(renderable) -> str:
    console = Console(record=True, width=200, highlight=False)
    console.print(renderable)
    return console.export_text()


def fake_result(name: str, epochs: int = 2) -> RunRecord:
    result = TrainResult()
    for e in range(1, epochs + 1):
        result.append(EpochLogs(e, loss=0.5 / e, acc=0.8 + 0.05 * e, val_loss=0.4 / e,
                                val_acc=0.85 + 0.04 * e, seconds=1.5 * e))
    return RunRecord(name, get_spec(name), 0, result.history, result.history["val_loss"][-1],
                     0.93, np.zeros(10, dtype=np.uint8), train_seconds=4.5,
                     config=TrainConfig(epochs=epochs).to_dict())


def test_notebook_columns_derive_from_the_specs():
    assert [describe_batchnorm(get_spec(n)) for n in list_models()] == ["No", "Yes", "No", "Yes"]
    assert [describe_dropout(get_spec(n)) for n in list_models()] == [
        "Yes (0.5)", "No", "Yes (0.5)", "Yes (0.2)"]


def test_summary_table_shows_the_loss_itself_and_the_status():
    rows = [{"spec": get_spec("CNN_MNIST_1"), "test_loss": 0.0227041, "test_accuracy": 0.9932,
             "seconds": 61.2, "status": "finished"},
            {"spec": get_spec("CNN_MNIST_3"), "test_loss": math.nan, "test_accuracy": math.nan,
             "seconds": 3.0, "status": "diverged"}]
    text = render(summary_table(rows))
    for col in ("Model", "Batch Normalization", "Dropout", "Test Loss", "Test Accuracy",
                "Params", "Train time"):
        assert col in text
    line1 = next(line for line in text.splitlines() if "CNN_MNIST_1" in line)
    assert "0.0227" in line1 and "2.2704" not in line1  # not x100 as the notebook printed
    assert "99.32 %" in line1 and "3,274,634" in line1 and "61 s" in line1
    assert "Yes (0.5)" in line1
    line3 = next(line for line in text.splitlines() if "CNN_MNIST_3" in line)
    assert "diverged" in line3


def test_keras_style_model_summary():
    table, totals = model_summary(get_spec("CNN_MNIST_2"))
    text = render(table)
    assert 'Model: "CNN_MNIST_2"' in text
    assert "conv2d (Conv2D)" in text and "conv2d_3 (Conv2D)" in text
    assert "batch_normalization (BatchNormalization)" in text
    assert "(None, 6, 6, 128)" in text and "(None, 4608)" in text
    assert "4,719,616" in text  # dense: 4608 * 1024 + 1024
    assert totals[0].startswith("Total params: 5,367,950 ")
    assert totals[1].startswith("Trainable params: 5,367,694 ")
    assert totals[2].startswith("Non-trainable params: 256 ")


def test_models_table_lists_every_model_with_shorthand_and_params():
    text = render(models_table([get_spec(n) for n in list_models()]))
    for n, params in (("CNN_MNIST_1", "3,274,634"), ("CNN_MNIST_2", "5,367,950"),
                      ("CNN_MNIST_3", "5,367,566"), ("CNN_MNIST_4", "5,368,078")):
        line = next(line for line in text.splitlines() if line.startswith(n))
        assert params in line and "Conv2D(" in line


def test_results_json_says_where_the_validation_numbers_come_from():
    results = [fake_result("CNN_MNIST_1")]
    env = {"cnnbench": "0.1.0"}

    def validation(**settings):
        doc = results_document(results, TrainConfig(epochs=2, **settings), {}, env)
        return doc["training"]["validation"]
    assert validation() == "test set, every epoch"  # the notebook's protocol
    assert validation(validation_split=0.1) == ("held out: the last 0.1 of the training "
                                                "images, every epoch; the test set once, "
                                                "after training")
    assert validation(validation_size=5000).startswith("held out: the last 5000 training images")


def test_results_json_has_the_seed_schema_and_csv_the_same_history(tmp_path):
    results = [fake_result("CNN_MNIST_1"), fake_result("CNN_MNIST_4")]
    doc = results_document(results, TrainConfig(epochs=2), {"name": "mnist"},
                           {"cnnbench": "0.1.0"})
    json_path, csv_path = write_results(tmp_path / "out", doc)

    got = json.loads(json_path.read_text())
    seed = json.loads(SEED_RESULTS.read_text())
    seed_model = seed["models"]["CNN_MNIST_1"]
    for name in ("CNN_MNIST_1", "CNN_MNIST_4"):
        m = got["models"][name]
        assert set(seed_model) <= set(m)
        assert set(seed_model["history"]) == set(m["history"])
    m1 = got["models"]["CNN_MNIST_1"]
    assert m1["test_accuracy_percent"] == 93.0
    assert m1["test_loss"] == pytest.approx(0.2)
    assert m1["history"]["val_acc"] == pytest.approx([0.89, 0.93])
    assert m1["parameters"] == 3_274_634 and m1["dropout"] == "Yes (0.5)"
    assert got["training"]["batch_size"] == 128
    assert got["training"]["optimizer"] == "Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-07)"

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["CNN_MNIST_1"] * 2 + ["CNN_MNIST_4"] * 2
    assert [int(r["epoch"]) for r in rows] == [1, 2, 1, 2]
    assert float(rows[1]["loss"]) == pytest.approx(0.25)
    assert float(rows[3]["seconds"]) == pytest.approx(3.0)


def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_plot_is_a_real_two_panel_png(tmp_path):
    import matplotlib.image as mpimg

    history = fake_result("CNN_MNIST_1", epochs=3).history
    ref = notebook_reference()["CNN_MNIST_1"]["history"]
    path = plot_history("CNN_MNIST_1", history, tmp_path / "p" / "CNN_MNIST_1.png", ref)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] == 342 and img.shape[1] == 990  # 11 x 3.8 inches at 90 dpi
    assert img[..., :3].var() > 0.01  # not blank: curves, axes and text drawn


def test_notebook_reference_holds_the_notebooks_printed_numbers():
    """The packaged copy against the notebook's final accuracies, typed from its output."""
    ref = notebook_reference()
    assert {n: m["test_accuracy_percent"] for n, m in ref.items()} == {
        "CNN_MNIST_1": 99.32, "CNN_MNIST_2": 99.0, "CNN_MNIST_3": 11.35, "CNN_MNIST_4": 99.09}
    assert {n: len(m["history"]["val_acc"]) for n, m in ref.items()} == dict.fromkeys(ref, 12)
    assert ref["CNN_MNIST_1"]["history"]["val_acc"][-1] == 0.9932


@pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} absent: the shared folder is not "
                    "beside this checkout")
def test_notebook_reference_is_the_shared_seed_results():
    assert PACKAGED.read_bytes() == SHARED.read_bytes()
    ref = notebook_reference()
    seed = json.loads(SHARED.read_text())["models"]
    assert set(ref) == set(seed)
    assert ref["CNN_MNIST_1"]["history"]["val_acc"] == seed["CNN_MNIST_1"]["history"]["val_acc"]


def test_epoch_line_reads_like_keras():
    logs = EpochLogs(3, 0.0353, 0.9892, 0.0253, 0.9915, 12.34)
    assert epoch_line(logs, 12, 469) == ("Epoch 3/12 - 469/469 - 12.3s - loss: 0.0353 - "
                                         "acc: 0.9892 - val_loss: 0.0253 - val_acc: 0.9915")
