"""Result files: ``results.json`` in the notebook's schema, and the history as CSV.

Both are written from the store's records (``RunStore.record``), as the report is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.atomic import write_together
from cnnbench.report.table import describe_batchnorm, describe_dropout
from cnnbench.store.records import HISTORY_KEYS, RunRecord

if TYPE_CHECKING:
    from cnnbench.train.engine import TrainConfig


def results_document(records: Sequence[RunRecord], config: TrainConfig | None,
                     dataset: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """The schema of ``shared/seed/results.json``, with settings and environment added.
    ``config``: the settings every one of ``records`` was trained with."""
    models: dict[str, Any] = {}
    for r in records:
        models[r.spec.name] = {
            "test_loss": r.test_loss,
            "test_accuracy_percent": round(100 * r.test_accuracy, 4),
            "history": {k: list(r.history[k]) for k in HISTORY_KEYS},
            "status": str(r.status),
            "diverged_at": list(r.diverged_at) if r.diverged_at else None,
            "parameters": r.spec.params,
            "trainable_parameters": r.spec.trainable_params,
            "batch_normalization": describe_batchnorm(r.spec),
            "dropout": describe_dropout(r.spec),
            "train_flops_per_image": r.spec.train_flops_per_image,
            "wall_seconds": r.train_seconds,
            "spec": r.spec.raw,
        }
    return {
        "source": f"cnnbench {env.get('cnnbench', '')}",
        "training": {
            "optimizer": config.optimizer_label() if config else None,
            "loss": "categorical_crossentropy",
            # TrainConfig's own 'optimizer' (a bare name) must not replace the full label.
            **{k: v for k, v in (config.to_dict() if config else {}).items()
               if k != "optimizer"},
            "validation": validation_label(config),
        },
        "dataset": dataset,
        "environment": env,
        "models": models,
    }


def validation_label(config: TrainConfig | None) -> str:
    """Where the per-epoch val_* numbers come from: the notebook's "test set, every epoch", or
    the holdout (Keras' validation_split: the last part of the training images)."""
    if config is None or not config.holdout:
        return "test set, every epoch"
    part = (f"the last {config.validation_split:g} of the training images"
            if config.validation_split else f"the last {config.validation_size} training images")
    return f"held out: {part}, every epoch; the test set once, after training"


def history_rows(doc: dict[str, Any]) -> bytes:
    """history.csv beside results.json: ``model,epoch,loss,acc,val_loss,val_acc,seconds``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("model", "epoch") + HISTORY_KEYS)
    for name, m in doc["models"].items():
        for i in range(len(m["history"]["loss"])):
            writer.writerow([name, i + 1] + [m["history"][k][i] for k in HISTORY_KEYS])
    return buf.getvalue().encode("utf-8")


def write_results(out: Path, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``history.csv`` into ``out`` as one set (a kill leaves
    both old or both new); return their paths."""
    json_path, csv_path = out / "results.json", out / "history.csv"
    write_together(out, {json_path.name: (json.dumps(doc, indent=1) + "\n").encode(),
                         csv_path.name: history_rows(doc)})
    return json_path, csv_path
