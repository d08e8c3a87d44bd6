"""The store as tables: ``cnnbench runs`` and ``cnnbench show RUN``. No torch needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnbench.errors import UsageError
from cnnbench.report.table import add_whole_column
from cnnbench.store.records import HISTORY_KEYS, STORED, RunStatus
from cnnbench.store.run_store import RunRow, RunStore


def _accuracy(row: RunRow) -> str:
    return f"{100 * row.test_accuracy:.2f} %" if row.test_accuracy is not None else "-"


def _status(store: RunStore, row: RunRow) -> str:
    status = store.effective_status(row)
    if status == RunStatus.DIVERGED and row.diverged_epoch is not None:
        return f"diverged (epoch {row.diverged_epoch}, step {row.diverged_step})"
    return str(status)


def _started(iso: str) -> str:
    """``2026-12-02T03:19:33+00:00`` as ``12-02 03:19``: the year is in ``--json``."""
    return iso[5:16].replace("T", " ")


# --- settings: what a run was trained under, read from its config.json ----------------------

def _optimizer_args(training: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's arguments; runs stored before every argument was spelled out kept
    Adadelta's as top-level ``lr``, ``rho``, ``epsilon``."""
    args = training.get("optimizer_args")
    if isinstance(args, Mapping):
        return dict(args)
    legacy = {"lr": "learning_rate", "rho": "rho", "epsilon": "epsilon"}
    return {new: training[old] for old, new in legacy.items() if old in training}


def _validation(training: Mapping[str, Any]) -> str:
    split, size = training.get("validation_split") or 0, training.get("validation_size") or 0
    if size:
        return f"holdout {size:,}"
    if split:
        return f"holdout {100 * split:g} %"
    return "test set"


def _optimizer(training: Mapping[str, Any]) -> str:
    name = training.get("optimizer") or ("Adadelta" if "lr" in training else "?")
    lr = _optimizer_args(training).get("learning_rate")
    return f"{name} lr={lr:g}" if isinstance(lr, int | float) else str(name)


# name -> (column header, the cell's text from config.json's "training", the JSON value)
SETTINGS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "precision": ("Precision", lambda t: str(t.get("precision", "fp32"))),
    "validation": ("Validation", _validation),
    "train_limit": ("Train images", lambda t: f"{t['train_limit']:,}" if t.get("train_limit")
                    else "all"),
    "batch_size": ("Batch", lambda t: str(t.get("batch_size", "?"))),
    "optimizer": ("Optimizer", _optimizer),
    "early_stopping": ("Early stopping", lambda t: "off" if t.get("early_stopping") is None
                       else f"patience {t['early_stopping']}"),
}


def run_training(store: RunStore, rid: str) -> dict[str, Any]:
    """The run's training settings as config.json holds them; empty when it is unreadable
    (a run whose folder went missing still gets its row)."""
    try:
        training = store.read_config(rid).get("training")
    except (OSError, ValueError, AttributeError):
        return {}
    return training if isinstance(training, dict) else {}


def settings_cells(training: Mapping[str, Any]) -> dict[str, str]:
    """The settings columns' texts for one run (``?`` for each when nothing is known)."""
    if not training:
        return {k: "?" for k in SETTINGS}
    return {k: cell(training) for k, (_, cell) in SETTINGS.items()}


# --- choosing runs ---------------------------------------------------------------------------

def _name_matches(name: str, wanted: str) -> bool:
    """Exact, or a shell pattern when ``wanted`` holds * or ?; brackets stay literal, since
    variant names carry them (``CNN_MNIST_2[width=2]``)."""
    if name == wanted:
        return True
    if "*" not in wanted and "?" not in wanted:
        return False
    return fnmatchcase(name, wanted.replace("[", "[[]"))


def select_runs(store: RunStore, model: str | None = None, dataset: str | None = None,
                status: str | None = None) -> list[RunRow]:
    """The store's runs, oldest first, keeping those of ``model`` (a name or a pattern such as
    ``CNN_MNIST_*``), ``dataset`` and ``status`` (as ``runs`` shows it: a killed run is
    interrupted) where given."""
    if status is not None and status not in {str(s) for s in STORED}:
        raise UsageError(f"--status {status!r}: expected one of "
                         f"{', '.join(str(s) for s in STORED)}")
    return [r for r in store.runs()
            if (model is None or _name_matches(r.model, model))
            and (dataset is None or r.dataset == dataset)
            and (status is None or store.effective_status(r) == status)]


# --- the listing -------------------------------------------------------------------------------

def runs_records(store: RunStore, rows: Sequence[RunRow]) -> list[dict[str, Any]]:
    """Every column of ``runs`` as plain values, one object per run (``runs --json``)."""
    out = []
    for r in rows:
        training = run_training(store, r.id)
        out.append({
            "id": r.id, "model": r.model, "dataset": r.dataset, "seed": r.seed,
            "epochs_done": r.epochs_done, "epochs_planned": r.epochs_planned,
            "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
            "status": str(store.effective_status(r)),
            "diverged_epoch": r.diverged_epoch, "diverged_step": r.diverged_step,
            "started": r.started, "finished": r.finished,
            "precision": training.get("precision"),
            "validation": _validation(training) if training else None,
            "validation_split": training.get("validation_split"),
            "validation_size": training.get("validation_size"),
            "train_limit": training.get("train_limit"),
            "batch_size": training.get("batch_size"),
            "optimizer": training.get("optimizer") or ("Adadelta" if "lr" in training
                                                       else None),
            "optimizer_args": _optimizer_args(training) or None,
            "early_stopping": training.get("early_stopping"),
        })
    return out


def runs_json(store: RunStore, rows: Sequence[RunRow]) -> str:
    """``runs --json``: a JSON list of objects, one per run, with every column."""
    return json.dumps(runs_records(store, rows), indent=1)


def runs_table(store: RunStore, rows: Sequence[RunRow]) -> Table:
    """id, model, dataset, seed, epochs done/planned, test accuracy, status, started, and a
    column for each training setting that differs between the runs listed; the settings they
    share are said once, under the table. Names wrap, never end in an ellipsis."""
    cells = [settings_cells(run_training(store, r.id)) for r in rows]
    differ = [k for k in SETTINGS if len({c[k] for c in cells}) > 1]
    shared = [f"{SETTINGS[k][0].lower()} {cells[0][k]}" for k in SETTINGS
              if k not in differ and cells and cells[0][k] != "?"]
    # Light borders: at 80 columns every character not spent on lines goes to the names.
    caption = ("Every run: " + ", ".join(shared)) if shared else None
    t = Table(title=f"Runs in {store.root}", title_justify="left", box=box.SIMPLE_HEAD,
              show_edge=False, padding=0, caption=caption, caption_justify="left")
    add_whole_column(t, "Id", no_wrap=True)
    add_whole_column(t, "Model")
    add_whole_column(t, "Dataset")
    for header in ("Seed", "Epochs", "Test acc."):
        add_whole_column(t, header, justify="right", no_wrap=True)
    add_whole_column(t, "Status")
    for k in differ:
        add_whole_column(t, SETTINGS[k][0])
    add_whole_column(t, "Started", no_wrap=True)
    for r, c in zip(rows, cells, strict=True):
        t.add_row(r.id, Text(r.model), Text(r.dataset), str(r.seed),
                  f"{r.epochs_done}/{r.epochs_planned}", _accuracy(r), _status(store, r),
                  *(Text(c[k]) for k in differ), _started(r.started))
    return t


# Names and paths printed as they are: a variant's name holds brackets that rich would
# otherwise read as markup and drop (``CNN_MNIST_2[width=2]`` printed as ``CNN_MNIST_2``).
PLAIN: dict[str, Any] = {"highlight": False, "markup": False}


def show_run(console: Console, store: RunStore, rid: str) -> None:
    """A run's row, its config.json and its per-epoch history."""
    row = store.get(rid)
    assert row is not None
    config = store.read_config(rid)
    console.print(f"Run {rid}: {row.model} on {row.dataset}, seed {row.seed}, "
                  f"{row.epochs_done}/{row.epochs_planned} epochs, {_status(store, row)}, "
                  f"test accuracy {_accuracy(row)}", **PLAIN)
    console.print(f"Folder: {store.folder(rid)}", **PLAIN)
    came = store.imported(rid)
    if came is not None:
        console.print(f"Unpacked from {came.get('from', 'a pack')} on {came.get('unpacked', '?')}"
                      + ("" if came.get("weights", True) else
                         "; its weights were not packed (predict and export need them)"),
                      **PLAIN, soft_wrap=True)
    model, ds, env = config["model"], config["dataset"], config["environment"]
    console.print(f"Model: {model['name']} ({model['parameters']:,} parameters) from "
                  f"{model['source']}", **PLAIN)
    for layer in model["spec"]["layers"]:
        (kind, args), = layer.items()
        console.print(f"  {kind} {json.dumps(args, separators=(', ', ': '))}", **PLAIN)
    console.print("Training: " + ", ".join(f"{k}={v}" for k, v in config["training"].items()),
                  **PLAIN)
    console.print(f"Dataset: {ds['name']} {ds['fingerprint'][:16]}, {ds['train_images']} train / "
                  f"{ds['test_images']} test images, from {ds['source']}", **PLAIN)
    console.print("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
                  **PLAIN)
    sessions = config.get("sessions", [])
    if len(sessions) > 1:
        console.print(f"Trained in {len(sessions)} sessions (resumed {len(sessions) - 1} times)",
                      **PLAIN)
    history = store.read_history(rid)
    t = Table(title="History", title_justify="left")
    t.add_column("Epoch", justify="right")
    for k in HISTORY_KEYS:
        t.add_column(k, justify="right")
    for i in range(len(history["loss"])):
        t.add_row(str(i + 1), *(f"{history[k][i]:.4f}" if k != "seconds"
                                else f"{history[k][i]:.1f}" for k in HISTORY_KEYS))
    console.print(t)
