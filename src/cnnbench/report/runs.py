"""The store as tables: ``cnnbench runs`` and ``cnnbench show RUN``. No torch needed."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from cnnbench.store.records import HISTORY_KEYS, RunStatus
from cnnbench.store.run_store import RunRow, RunStore


def _accuracy(row: RunRow) -> str:
    return f"{100 * row.test_accuracy:.2f} %" if row.test_accuracy is not None else "-"


def _status(store: RunStore, row: RunRow) -> str:
    status = store.effective_status(row)
    if status == RunStatus.DIVERGED and row.diverged_epoch is not None:
        return f"diverged (epoch {row.diverged_epoch}, step {row.diverged_step})"
    return str(status)


def runs_table(store: RunStore, rows: Sequence[RunRow]) -> Table:
    """id, model, dataset, seed, epochs done/planned, test accuracy, status, started."""
    t = Table(title=f"Runs in {store.root}", title_justify="left")
    t.add_column("Id")
    t.add_column("Model")
    t.add_column("Dataset")
    t.add_column("Seed", justify="right")
    t.add_column("Epochs", justify="right")
    t.add_column("Test Accuracy", justify="right")
    t.add_column("Status")
    t.add_column("Started")
    for r in rows:
        t.add_row(r.id, r.model, r.dataset, str(r.seed), f"{r.epochs_done}/{r.epochs_planned}",
                  _accuracy(r), _status(store, r), r.started.replace("T", " ")[:19])
    return t


def show_run(console: Console, store: RunStore, rid: str) -> None:
    """A run's row, its config.json and its per-epoch history."""
    row = store.get(rid)
    assert row is not None
    config = store.read_config(rid)
    console.print(f"Run {rid}: {row.model} on {row.dataset}, seed {row.seed}, "
                  f"{row.epochs_done}/{row.epochs_planned} epochs, {_status(store, row)}, "
                  f"test accuracy {_accuracy(row)}", highlight=False)
    console.print(f"Folder: {store.folder(rid)}", highlight=False)
    came = store.imported(rid)
    if came is not None:
        console.print(f"Unpacked from {came.get('from', 'a pack')} on {came.get('unpacked', '?')}"
                      + ("" if came.get("weights", True) else
                         "; its weights were not packed (predict and export need them)"),
                      highlight=False, soft_wrap=True)
    model, ds, env = config["model"], config["dataset"], config["environment"]
    console.print(f"Model: {model['name']} ({model['parameters']:,} parameters) from "
                  f"{model['source']}", highlight=False)
    for layer in model["spec"]["layers"]:
        (kind, args), = layer.items()
        console.print(f"  {kind} {json.dumps(args, separators=(', ', ': '))}", highlight=False)
    console.print("Training: " + ", ".join(f"{k}={v}" for k, v in config["training"].items()),
                  highlight=False)
    console.print(f"Dataset: {ds['name']} {ds['fingerprint'][:16]}, {ds['train_images']} train / "
                  f"{ds['test_images']} test images, from {ds['source']}", highlight=False)
    console.print("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
                  highlight=False)
    sessions = config.get("sessions", [])
    if len(sessions) > 1:
        console.print(f"Trained in {len(sessions)} sessions (resumed {len(sessions) - 1} times)")
    history = store.read_history(rid)
    t = Table(title="History", title_justify="left")
    t.add_column("Epoch", justify="right")
    for k in HISTORY_KEYS:
        t.add_column(k, justify="right")
    for i in range(len(history["loss"])):
        t.add_row(str(i + 1), *(f"{history[k][i]:.4f}" if k != "seconds"
                                else f"{history[k][i]:.1f}" for k in HISTORY_KEYS))
    console.print(t)
