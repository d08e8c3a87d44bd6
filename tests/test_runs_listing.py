"""`cnnbench runs`: names kept whole at 80 columns, the settings that differ as columns,
filters by model, dataset and status, and every column as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from cnnbench.errors import UsageError
from cnnbench.report.runs import runs_json, runs_records, runs_table, select_runs
from cnnbench.store.pack import read_pack
from cnnbench.store.run_store import RunStore

PACK = Path(__file__).resolve().parents[1] / "results" / "notebook-fp32-seeds.tar.gz"
HISTORY = {"loss": [0.3, 0.1], "acc": [0.9, 0.97], "val_loss": [0.2, 0.08],
           "val_acc": [0.94, 0.98], "seconds": [1.0, 1.0]}


def _config() -> dict:
    """A config.json as `cnnbench run` wrote it (the committed pack's first run)."""
    _, files = read_pack(PACK)[0]
    return json.loads(files["config.json"])


def _add(store: RunStore, rid: str, model: str, *, end: bool = True, dataset: str = "mnist",
         **training) -> None:
    """A two-epoch run in the real store, trained under ``training``'s changes."""
    config = _config()
    config["run_id"], config["seed"] = rid, 0
    config["model"]["name"] = model
    config["dataset"]["name"] = dataset
    config["training"].update(epochs=2, **training)
    store.begin(rid, config)
    if end:
        store.end(rid, "finished", HISTORY, test_loss=0.08, test_accuracy=0.98)


def _render(table, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text().splitlines()


def _model_cells(lines: list[str], ids: list[str]) -> list[str]:
    """The Model column's text of each run, its folded lines joined (Id is 12 characters, one
    space apart from Model; Model ends one space before the dataset)."""
    out, current = [], None
    starts = [i for i, ln in enumerate(lines) if ln[:12] in ids]
    for i in starts:
        first = lines[i]
        width = first.index(" mnist ", 13) - 13
        current = first[13:13 + width].strip()
        for ln in lines[i + 1:]:
            if ln[:12] in ids or not ln.startswith(" " * 13) or not ln[13:13 + width].strip():
                break
            current += ln[13:13 + width].strip()
        out.append(current)
    return out


LONG = ("CNN_MNIST_2[depth=conv4,activation=sigmoid]", "CNN_MNIST_2[depth=conv4,activation=relu]")


def test_runs_table_keeps_two_names_differing_only_at_the_end_whole_at_80_columns(tmp_path):
    store = RunStore(tmp_path / "s")
    _add(store, "aaaaaaaaaaa1", LONG[0])
    _add(store, "aaaaaaaaaaa2", LONG[1], precision="bf16")
    lines = _render(runs_table(store, store.runs()))
    assert all(len(ln) <= 80 for ln in lines)
    assert "…" not in "\n".join(lines)
    assert _model_cells(lines, ["aaaaaaaaaaa1", "aaaaaaaaaaa2"]) == list(LONG)


def test_runs_table_shows_the_settings_that_differ_and_names_the_shared_ones_once(tmp_path):
    store = RunStore(tmp_path / "s")
    _add(store, "bbbbbbbbbbb1", "CNN_MNIST_1")
    _add(store, "bbbbbbbbbbb2", "CNN_MNIST_1", precision="bf16", train_limit=2000)
    _add(store, "bbbbbbbbbbb3", "CNN_MNIST_1", validation_split=0.1)
    text = "\n".join(_render(runs_table(store, store.runs()), width=160))
    header = next(ln for ln in text.splitlines() if ln.startswith("Id"))
    for column in ("Precision", "Validation", "Train images"):
        assert column in header
    assert "Optimizer" not in header and "Batch" not in header
    rows = {ln[:12]: ln for ln in text.splitlines() if ln.startswith("bbbbbbbbbbb")}
    assert "bf16" in rows["bbbbbbbbbbb2"] and "2,000" in rows["bbbbbbbbbbb2"]
    assert "holdout 10 %" in rows["bbbbbbbbbbb3"] and "test set" in rows["bbbbbbbbbbb1"]
    assert "Every run: batch 128, optimizer Adadelta lr=1, early stopping off" in text
    # Runs that share every setting get no settings column at all.
    same = "\n".join(_render(runs_table(store, store.runs()[:1]), width=160))
    assert "Precision" not in same and "Every run: precision fp32, validation test set" in same


def test_runs_are_chosen_by_model_name_or_pattern_dataset_and_status(tmp_path):
    store = RunStore(tmp_path / "s")
    _add(store, "ccccccccccc1", "CNN_MNIST_1")
    _add(store, "ccccccccccc2", "CNN_MNIST_2[width=2]")
    _add(store, "ccccccccccc3", "CNN_MNIST_2", dataset="kmnist")
    _add(store, "ccccccccccc4", "mine", end=False)  # began, never ended, nobody holds it

    def ids(**kw):
        return [r.id[-1] for r in select_runs(store, **kw)]

    assert ids() == ["1", "2", "3", "4"]
    assert ids(model="CNN_MNIST_2") == ["3"]  # exact: not the variant
    assert ids(model="CNN_MNIST_2[width=2]") == ["2"]  # brackets are part of the name
    assert ids(model="CNN_MNIST_*") == ["1", "2", "3"]
    assert ids(model="CNN_MNIST_2*") == ["2", "3"]
    assert ids(dataset="kmnist") == ["3"]
    assert ids(status="interrupted") == ["4"]  # a run nobody trains any more
    assert ids(status="finished", dataset="mnist") == ["1", "2"]
    with pytest.raises(UsageError, match=r"--status 'done': expected one of running, "
                                         r"finished, diverged, interrupted"):
        select_runs(store, status="done")


def test_runs_json_is_a_list_of_objects_with_every_column(tmp_path):
    store = RunStore(tmp_path / "s")
    _add(store, "ddddddddddd1", "CNN_MNIST_1", precision="bf16", validation_size=5000)
    (doc,) = json.loads(runs_json(store, store.runs()))
    assert doc == runs_records(store, store.runs())[0]
    assert {k: doc[k] for k in ("id", "model", "dataset", "seed", "epochs_done",
                                "epochs_planned", "test_accuracy", "status")} == {
        "id": "ddddddddddd1", "model": "CNN_MNIST_1", "dataset": "mnist", "seed": 0,
        "epochs_done": 2, "epochs_planned": 2, "test_accuracy": 0.98, "status": "finished"}
    assert doc["precision"] == "bf16" and doc["validation"] == "holdout 5,000"
    assert doc["validation_size"] == 5000 and doc["train_limit"] is None
    assert doc["optimizer"] == "Adadelta" and doc["optimizer_args"] == {
        "learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-07}
    assert doc["started"].startswith("20") and doc["batch_size"] == 128


def test_runs_command_filters_and_prints_json_or_a_table(tmp_path, capsys):
    from cnnbench.cli import main
    store = RunStore(tmp_path / "s")
    _add(store, "eeeeeeeeeee1", "CNN_MNIST_1")
    _add(store, "eeeeeeeeeee2", "CNN_MNIST_2", precision="bf16")
    _add(store, "eeeeeeeeeee3", "CNN_MNIST_2", dataset="kmnist")
    s = ["--store", str(tmp_path / "s")]
    assert main(["runs", *s, "--model", "CNN_MNIST_2", "--dataset", "mnist", "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["id"] == "eeeeeeeeeee2" and doc["precision"] == "bf16"
    assert main(["runs", *s, "--status", "finished", "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == [
        "eeeeeeeeeee1", "eeeeeeeeeee2", "eeeeeeeeeee3"]
    assert main(["runs", *s, "--model", "CNN_MNIST_*"]) == 0
    table = capsys.readouterr().out
    assert "Precision" in table and "eeeeeeeeeee3" in table
    assert main(["runs", *s, "--model", "nope"]) == 0
    assert capsys.readouterr().out.strip().endswith("match.")
    assert main(["runs", *s, "--model", "nope", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_runs_command_refuses_an_unknown_status_in_one_line(tmp_path, capsys):
    from cnnbench.cli import main
    RunStore(tmp_path / "s")
    assert main(["runs", "--store", str(tmp_path / "s"), "--status", "done"]) == 2
    err = capsys.readouterr().err
    assert "--status: invalid choice: 'done'" in err and "Traceback" not in err
