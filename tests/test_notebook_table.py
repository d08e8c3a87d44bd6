"""The notebook's numbers beside this study's seeds, only for the notebook's models at its
settings; a one-seed study placed against the shipped five seeds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from cnnbench.analysis.stats import ModelStats, model_stats
from cnnbench.model.spec import get_spec
from cnnbench.report.figures import notebook_reference
from cnnbench.report.notebook_table import (
    SEEDS_COMMAND,
    notebook_rows,
    notebook_scope,
    seeds_from_packs,
    shipped_seeds,
)
from cnnbench.store.pack import unpack
from cnnbench.store.run_store import RunStore


def _stats(model, accs):
    n = len(accs)
    mean = sum(accs) / n
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1))
    return ModelStats(model, list(range(n)), n, mean, sd, (mean - 0.001, mean + 0.001),
                      min(accs), max(accs), 0.03, 0.001, 10.0)


def test_each_notebook_number_is_placed_against_the_seeds_range():
    rows = notebook_rows([_stats("CNN_MNIST_1", [0.9925, 0.9931, 0.9940]),
                          _stats("CNN_MNIST_2", [0.9850, 0.9870, 0.9880]),
                          _stats("CNN_MNIST_3", [0.1135, 0.1135, 0.9700]),
                          _stats("mine", [0.5, 0.6])], notebook_reference())
    assert [r["Model"] for r in rows] == ["CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3"]
    one, two, three = rows
    assert one["Notebook % (1 run)"] == "99.32" and one["Min – max %"] == "99.25 – 99.40"
    assert one["Notebook inside the seeds' range"] == "yes"
    assert two["Notebook inside the seeds' range"] == "no, above"  # 99.00 > 98.80
    assert three["Notebook inside the seeds' range"] == "yes"  # stuck at 11.35 on two seeds
    assert one["Mean ± sd %"] == "99.32 ± 0.08"


# --- the shipped seeds, and a one-seed study placed against them --------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKS = [ROOT / "results" / "notebook-fp32-seeds.tar.gz",
         ROOT / "results" / "notebook-bf16-seeds.tar.gz"]
SHIPPED = ROOT / "src" / "cnnbench" / "reference" / "notebook_seeds.json"


def test_the_shipped_seeds_are_what_the_committed_packs_give_and_name_their_command():
    doc = json.loads(SHIPPED.read_text())
    assert doc == seeds_from_packs(PACKS)
    assert doc["command"] == SEEDS_COMMAND and "notebook-fp32-seeds.tar.gz" in SEEDS_COMMAND
    fp32 = shipped_seeds()["fp32"]["models"]
    one = fp32["CNN_MNIST_1"]
    assert one["seeds"] == [0, 1, 2, 3, 4] and one["n"] == 5
    assert one["test_accuracy_percent"] == [99.32, 99.39, 99.35, 99.37, 99.39]
    assert (round(one["mean"], 2), round(one["sd"], 2), one["min"], one["max"]) == \
        (99.36, 0.03, 99.32, 99.39)
    assert (round(fp32["CNN_MNIST_2"]["mean"], 2), round(fp32["CNN_MNIST_2"]["sd"], 2)) == \
        (99.00, 0.15)
    assert fp32["CNN_MNIST_3"]["sd"] == 0.0 and fp32["CNN_MNIST_3"]["mean"] == 11.35
    assert (fp32["CNN_MNIST_4"]["min"], fp32["CNN_MNIST_4"]["max"]) == (98.53, 99.11)
    assert shipped_seeds()["bf16"]["models"]["CNN_MNIST_1"]["seeds"] == [0, 1, 2]


def test_one_seed_is_placed_against_the_five_shipped_seeds_not_a_one_point_range():
    shipped = shipped_seeds()["fp32"]["models"]
    rows = notebook_rows([_one("CNN_MNIST_1", 0.9933), _one("CNN_MNIST_2", 0.9875)],
                         notebook_reference(), shipped)
    one, two = rows
    assert "Notebook inside the seeds' range" not in one
    assert one["Against the shipped seeds"] == \
        "99.33 %: inside the five shipped seeds' range 99.32-99.39 (mean 99.36 ± 0.03)"
    assert one["Notebook against the shipped seeds"] == "inside their range"  # 99.32
    assert two["Against the shipped seeds"] == \
        "98.75 %: below the five shipped seeds' range 98.81-99.16 (mean 99.00 ± 0.15)"


def _one(model, acc):
    return ModelStats(model, [0], 1, acc, math.nan, (math.nan, math.nan), acc, acc, 0.03,
                      math.nan, 10.0)


# --- only the notebook's models at the notebook's settings meet the notebook -------------------

@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The committed runs of the notebook's study, as the store gives them back."""
    store = RunStore(tmp_path_factory.mktemp("packed"))
    for pack in PACKS:
        unpack(store, pack)
    return [store.record(rid) for rid in store.done_ids()]


def _fp32_seed(records, seed):
    return [r for r in records if r.seed == seed and r.config["precision"] == "fp32"]


def test_the_notebooks_study_meets_the_notebook_and_one_seed_is_placed_in_words(packed):
    runs = _fp32_seed(packed, 0)
    scope = notebook_scope(runs, "mnist", 60000)
    assert list(scope.reference) == ["CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3", "CNN_MNIST_4"]
    assert scope.left_out == [] and scope.shipped["CNN_MNIST_1"]["n"] == 5
    notes = scope.notes(model_stats(runs))
    assert "CNN_MNIST_1, one seed: 99.32 %: inside the five shipped seeds' range " \
           "99.32-99.39 (mean 99.36 ± 0.03)." in notes
    rows = notebook_rows(model_stats(runs), scope.reference, scope.shipped)
    assert [r["Model"] for r in rows] == list(scope.reference)
    assert all("Notebook inside the seeds' range" not in r for r in rows)
    # bf16 runs are placed against the bf16 seeds.
    bf16 = [r for r in packed if r.seed == 0 and r.config["precision"] == "bf16"]
    assert notebook_scope(bf16, "mnist", 60000).shipped["CNN_MNIST_1"]["n"] == 3


def _changed(run, **training):
    """The same run as if trained under other settings (its history cut to its epochs)."""
    epochs = training.get("epochs", run.epochs)
    return dataclasses.replace(run, config={**run.config, **training},
                               history={k: v[:epochs] for k, v in run.history.items()})


def test_a_short_run_on_few_images_is_not_held_against_the_notebook_and_says_why(packed):
    run = _changed(_fp32_seed(packed, 0)[0], epochs=1, train_limit=2000)
    scope = notebook_scope([run], "mnist", 60000)
    assert scope.reference == {} and scope.shipped == {}
    assert scope.notes(model_stats([run])) == [
        "CNN_MNIST_1 is not compared with the notebook: 1 epoch(s), not 12; 2,000 training "
        "images, not 60,000."]
    assert notebook_rows(model_stats([run]), scope.reference, scope.shipped) == []


@pytest.mark.parametrize("change, why", [
    ({"validation_split": 0.1}, "validated on a holdout, not on the test set"),
    ({"batch_size": 64}, "batch 64, not 128"),
    ({"optimizer": "Adam", "optimizer_args": {"learning_rate": 0.001}},
     "Adam(learning_rate=0.001), not Adadelta(learning_rate=1, rho=0.95, epsilon=1e-07)"),
])
def test_other_training_settings_keep_the_notebook_out(packed, change, why):
    run = _changed(_fp32_seed(packed, 0)[1], **change)
    scope = notebook_scope([run], "mnist", 60000)
    assert scope.reference == {} and scope.left_out == [("CNN_MNIST_2", why)]


def test_models_the_notebook_never_had_get_no_notebook_curves_or_sentences(packed):
    run = _fp32_seed(packed, 0)[0]
    mine = dataclasses.replace(run, model="mine")
    impostor = dataclasses.replace(run, model="CNN_MNIST_2")  # model 1's layers, 2's name
    scope = notebook_scope([mine, impostor], "mnist", 60000)
    assert scope.reference == {}
    assert scope.notes(model_stats([mine, impostor])) == [
        "CNN_MNIST_2 is not compared with the notebook: its layers differ from the notebook's "
        "CNN_MNIST_2."]
    assert notebook_scope([run], "kmnist", 60000).left_out == [
        ("CNN_MNIST_1", "trained on kmnist, not MNIST")]


def test_a_report_of_a_model_the_notebook_never_had_shows_nothing_of_the_notebook(
        packed, mnist, tmp_path):
    from cnnbench.report.html import write_report
    run = dataclasses.replace(_fp32_seed(packed, 0)[0], model="mine",
                              spec=get_spec("CNN_MNIST_1"))
    paths = write_report([run], mnist.y_test, mnist.x_test, tmp_path,
                         dataset={"name": "mnist", "n_train": 60000, "n_test": 10000,
                                  "classes": list(mnist.info.classes)})
    md, html = paths["md"].read_text(), paths["html"].read_text()
    for text in (md, html):
        assert "notebook's published runs" not in text and "Notebook %" not in text
        assert "The notebook's numbers beside the seeds" not in text


def _store_short_run(store: RunStore, source) -> str:
    """CNN_MNIST_1 stored as trained for 1 epoch on 2,000 images (the committed seed-0 run's
    files, its settings changed)."""
    from cnnbench.store.pack import read_pack
    entry, files = next((e, f) for e, f in read_pack(PACKS[0]) if e["id"] == source.run_id)
    config = json.loads(files["config.json"])
    config["training"].update(epochs=1, train_limit=2000)
    if "key" in config:  # the run key says the same settings, as the store checks
        config["key"]["training"].update(epochs=1, train_limit=2000)
    rid = "0123456789ab"
    config["run_id"] = rid
    store.begin(rid, config)
    history = {k: v[:1] for k, v in source.history.items()}
    store.end(rid, "finished", history, test_loss=history["val_loss"][0],
              test_accuracy=history["val_acc"][0],
              files={"predictions.npy": files["predictions.npy"]})
    return rid


def test_reports_meet_the_notebook_only_at_its_settings_and_place_one_seed(
        packed, mnist, tmp_path):
    from cnnbench.report.build import write_study_report
    store = RunStore(tmp_path / "s")
    unpack(store, PACKS[0])
    seed0 = [r.run_id for r in _fp32_seed(packed, 0)]
    paths, lines = write_study_report(store, seed0, mnist, tmp_path / "full")
    md = paths["md"].read_text()
    placed = ("CNN_MNIST_1, one seed: 99.32 %: inside the five shipped seeds' range "
              "99.32-99.39 (mean 99.36 ± 0.03).")
    assert placed in lines and placed in md
    assert "Against the shipped seeds" in md and "Notebook inside the seeds' range" not in md
    assert "notebook's published runs" in md
    short = _store_short_run(store, _fp32_seed(packed, 0)[0])
    paths, lines = write_study_report(store, [short], mnist, tmp_path / "short")
    md = paths["md"].read_text()
    said = ("CNN_MNIST_1 is not compared with the notebook: 1 epoch(s), not 12; 2,000 "
            "training images, not 60,000.")
    assert said in lines and said in md
    assert "Notebook %" not in md and "notebook's published runs" not in md
