"""The notebook beside this study, only where the comparison is fair.

The notebook's numbers (one Keras run per model) and the five seeds shipped with cnnbench
(``reference/notebook_seeds.json``) are compared only with runs of the notebook's models, as
built in, at the notebook's settings: MNIST, 12 epochs, batch 128, Keras 2.2's Adadelta, the
full training set, the test set as validation data. A one-seed study is placed against the
shipped seeds' distribution rather than against a one-point "range".

``python -m cnnbench.report.notebook_table PACK...`` rebuilds the shipped seeds' file from
packs of such runs (the command is recorded in the file).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnbench.analysis.stats import ModelStats, clip_interval
from cnnbench.settings import DEFAULTS
from cnnbench.store.records import RunRecord
from cnnbench.train.optim import resolve_optimizer

NOTEBOOK_MODELS = ("CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3", "CNN_MNIST_4")
NOTEBOOK_DATASET = "mnist"
NOTEBOOK_TRAIN_IMAGES = 60000
# The notebook's training, as TrainConfig spells it: cnnbench's defaults (settings.py),
# Adadelta() of Keras 2.2 with every argument.
NOTEBOOK_SETTINGS: dict[str, Any] = {
    **{k: DEFAULTS[k] for k in ("epochs", "batch_size", "optimizer", "train_limit",
                                "validation_split", "validation_size", "early_stopping")},
    "optimizer_args": resolve_optimizer(DEFAULTS["optimizer"], {}, ""),
}
SEEDS_FILE = "notebook_seeds.json"
# How each committed pack's runs were trained (README; docs/performance.md).
TRAINED_BY = {"fp32": "cnnbench run --seeds 0 1 2 3 4",
              "bf16": "cnnbench run --seeds 0 1 2 --precision bf16"}
SEEDS_COMMAND = ("python -m cnnbench.report.notebook_table results/notebook-fp32-seeds.tar.gz "
                 "results/notebook-bf16-seeds.tar.gz > src/cnnbench/reference/" + SEEDS_FILE)


# --- which runs the notebook may be compared with ---------------------------------------------

def _layers(spec: Any) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    return tuple(spec.input_shape), [(layer.kind, dict(layer.args)) for layer in spec.layers]


def _optimizer(training: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Name and arguments; runs stored before every argument was spelled out kept Adadelta's
    as top-level ``lr``, ``rho``, ``epsilon``."""
    args = training.get("optimizer_args")
    if not isinstance(args, Mapping):
        legacy = {"lr": "learning_rate", "rho": "rho", "epsilon": "epsilon"}
        args = {new: training[old] for old, new in legacy.items() if old in training}
    full = {**NOTEBOOK_SETTINGS["optimizer_args"], **args} \
        if training.get("optimizer", "Adadelta") == "Adadelta" else dict(args)
    return str(training.get("optimizer", "Adadelta")), full


def differences(run: RunRecord, dataset: str | None, n_train: int | None = None) -> list[str]:
    """How ``run`` differs from the notebook's run of its model, in words; empty when it is
    the notebook's model at the notebook's settings. ``n_train``: the training images the
    dataset had (``train_limit`` may cut them further)."""
    from cnnbench.model.spec import get_spec
    if run.model not in NOTEBOOK_MODELS:
        return ["not one of the notebook's models"]
    out = []
    if _layers(run.spec) != _layers(get_spec(run.model)):
        out.append(f"its layers differ from the notebook's {run.model}")
    if dataset != NOTEBOOK_DATASET:
        out.append(f"trained on {dataset or 'an unnamed dataset'}, not MNIST")
    t = run.config or {}
    epochs = min(int(t.get("epochs", run.epochs)), run.epochs)
    if epochs != NOTEBOOK_SETTINGS["epochs"]:
        out.append(f"{epochs} epoch(s), not {NOTEBOOK_SETTINGS['epochs']}")
    images = min(x for x in (t.get("train_limit"), n_train, NOTEBOOK_TRAIN_IMAGES) if x)
    if images < NOTEBOOK_TRAIN_IMAGES:
        out.append(f"{images:,} training images, not 60,000")
    if t.get("batch_size", NOTEBOOK_SETTINGS["batch_size"]) != NOTEBOOK_SETTINGS["batch_size"]:
        out.append(f"batch {t.get('batch_size')}, not {NOTEBOOK_SETTINGS['batch_size']}")
    name, args = _optimizer(t)
    if (name, args) != ("Adadelta", NOTEBOOK_SETTINGS["optimizer_args"]):
        out.append(f"{name}({', '.join(f'{k}={v:g}' for k, v in args.items())}), not "
                   f"Adadelta(learning_rate=1, rho=0.95, epsilon=1e-07)")
    if t.get("validation_split") or t.get("validation_size"):
        out.append("validated on a holdout, not on the test set")
    if t.get("early_stopping") is not None:
        out.append("with early stopping")
    return out


@dataclass
class NotebookScope:
    """What of the notebook a report may show: its published runs for the models that match
    it (curves, table), the shipped seeds of those models at the runs' precision, and one
    line per notebook model left out, saying why."""

    reference: dict[str, Any] = field(default_factory=dict)
    shipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (model, why)

    def notes(self, stats: Sequence[ModelStats]) -> list[str]:
        """The report's sentences on the notebook: each notebook model left out and why, and
        each model of one seed placed against the shipped seeds."""
        out = [f"{m} is not compared with the notebook: {why}." for m, why in self.left_out]
        for s in stats:
            shipped = self.shipped.get(s.model)
            if shipped and s.n == 1 and math.isfinite(s.acc_mean):
                out.append(f"{s.model}, one seed: {place_one_seed(100 * s.acc_mean, shipped)}.")
        return out


def notebook_scope(records: Sequence[RunRecord], dataset: str | None,
                   n_train: int | None = None) -> NotebookScope:
    """The notebook's models among ``records`` whose every run is at the notebook's
    settings; the others of its models are named with their differences."""
    from cnnbench.report.figures import notebook_reference
    by_model: dict[str, list[RunRecord]] = {}
    for r in records:
        by_model.setdefault(r.model, []).append(r)
    published, seeds = notebook_reference(), shipped_seeds()
    scope = NotebookScope()
    for model, runs in by_model.items():
        if model not in NOTEBOOK_MODELS:
            continue
        why = list(dict.fromkeys(d for r in runs for d in differences(r, dataset, n_train)))
        if why:
            scope.left_out.append((model, "; ".join(why)))
            continue
        scope.reference[model] = published[model]
        precisions = {str((r.config or {}).get("precision", "fp32")) for r in runs}
        if len(precisions) == 1:
            shipped = seeds.get(precisions.pop(), {}).get("models", {}).get(model)
            if shipped:
                scope.shipped[model] = shipped
    return scope


# --- the shipped seeds ------------------------------------------------------------------------

def shipped_seeds() -> dict[str, Any]:
    """The shipped seeds of the notebook's study by precision: ``{"fp32": {"models":
    {"CNN_MNIST_1": {"seeds", "test_accuracy_percent", "mean", "sd", "min", "max", "n"}}}}``."""
    ref = resources.files("cnnbench") / "reference" / SEEDS_FILE
    precisions: dict[str, Any] = json.loads(ref.read_text())["precisions"]
    return precisions


def seeds_from_packs(paths: Sequence[Path]) -> dict[str, Any]:
    """The shipped seeds' file from packs of the notebook's study: every finished run of a
    notebook model at the notebook's settings, by precision and model."""
    from cnnbench.model.spec import build_spec
    from cnnbench.store.pack import read_pack
    precisions: dict[str, Any] = {}
    for path in paths:
        for entry, files in read_pack(Path(path)):
            config, row = json.loads(files["config.json"]), entry["row"]
            spec = build_spec(config["model"]["spec_raw"], source=config["model"]["source"])
            run = RunRecord(row["model"], spec, row["seed"], {k: [0.0] * row["epochs_done"]
                            for k in ("loss", "acc", "val_loss", "val_acc")},
                            row["test_loss"], row["test_accuracy"], status=row["status"],
                            config=config["training"])
            if not run.finished or differences(run, row["dataset"],
                                               config["dataset"]["train_images"]):
                continue
            precision = config["training"]["precision"]
            p = precisions.setdefault(precision, {
                "pack": Path(path).name, "trained_by": TRAINED_BY.get(precision),
                "models": {}})
            p["models"].setdefault(row["model"], {}).setdefault("runs", []).append(
                (row["seed"], round(100 * row["test_accuracy"], 2)))
    for p in precisions.values():
        for model, m in sorted(p["models"].items()):
            runs = sorted(m.pop("runs"))
            acc = [a for _, a in runs]
            p["models"][model] = {
                "seeds": [s for s, _ in runs], "test_accuracy_percent": acc, "n": len(acc),
                "mean": round(statistics.fmean(acc), 4),
                "sd": round(statistics.stdev(acc), 4) if len(acc) > 1 else None,
                "min": min(acc), "max": max(acc)}
    return {"about": "Test accuracy of the notebook's four models over seeds, trained by "
                     "cnnbench at the notebook's settings (MNIST, 12 epochs, batch 128, "
                     "Adadelta, full training set, test-set validation); per precision, "
                     "from the packs committed in results/.",
            "command": SEEDS_COMMAND, "precisions": precisions}


def placement(acc_percent: float, shipped: Mapping[str, Any]) -> str:
    """``inside``, ``above`` or ``below`` the shipped seeds' range; accuracies are printed
    with two decimals, so inside means within half a unit of the last one."""
    lo, hi = shipped["min"], shipped["max"]
    if lo - 0.005 <= acc_percent <= hi + 0.005:
        return "inside"
    return "above" if acc_percent > hi else "below"


def place_one_seed(acc_percent: float, shipped: Mapping[str, Any]) -> str:
    """One seed's accuracy against the shipped seeds, e.g. ``99.33 %: inside the five shipped
    seeds' range 99.32-99.39 (mean 99.36 ± 0.03)``."""
    n, lo, hi = shipped["n"], shipped["min"], shipped["max"]
    words = {3: "three", 5: "five"}.get(n, str(n))
    where = placement(acc_percent, shipped)
    sd = f" ± {shipped['sd']:.2f}" if shipped.get("sd") is not None else ""
    return (f"{acc_percent:.2f} %: {where} the {words} shipped seeds' range {lo:.2f}-{hi:.2f} "
            f"(mean {shipped['mean']:.2f}{sd})")


# --- the table --------------------------------------------------------------------------------

def notebook_rows(stats: Sequence[ModelStats], reference: Mapping[str, Any],
                  shipped: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> list[dict[str, str]]:
    """One row per model in ``reference`` (the notebook's models that may be compared: see
    :func:`notebook_scope`); empty when there are none. Over several seeds, the notebook's
    number is placed in the seeds' range; a one-seed study is placed against ``shipped``
    (the shipped seeds by model) instead, where there is no range of its own."""
    rows = []
    one_seed = any(s.n == 1 for s in stats if s.model in reference)
    for s in stats:
        ref = reference.get(s.model)
        if not ref or not s.n:
            continue
        nb = float(ref["test_accuracy_percent"])
        if one_seed:
            rows.append(_one_seed_row(s, nb, (shipped or {}).get(s.model)))
            continue
        lo, hi = clip_interval(s.acc_ci)
        lo_r, hi_r = 100 * s.acc_min, 100 * s.acc_max
        # The notebook printed two decimals: inside means within half a unit of the last one.
        inside = lo_r - 0.005 <= nb <= hi_r + 0.005
        rows.append({
            "Model": s.model, "Seeds": str(s.n),
            "Mean ± sd %": f"{100 * s.acc_mean:.2f} ± {100 * s.acc_std:.2f}",
            "95% CI %": "n/a" if math.isnan(lo) else f"{100 * lo:.2f} – {100 * hi:.2f}",
            "Min – max %": f"{lo_r:.2f} – {hi_r:.2f}",
            "Notebook % (1 run)": f"{nb:.2f}",
            "Notebook inside the seeds' range": "yes" if inside else (
                "no, above" if nb > hi_r else "no, below")})
    return rows


def _one_seed_row(s: ModelStats, nb: float, shipped: Mapping[str, Any] | None
                  ) -> dict[str, str]:
    """A study with one seed of some model has no range of its own: its result, and the
    notebook's, are placed against the shipped seeds."""
    acc = 100 * s.acc_mean
    mean = f"{acc:.2f}" + (f" ± {100 * s.acc_std:.2f}" if s.n > 1 else "")
    if shipped is None:
        return {"Model": s.model, "Seeds": str(s.n), "This study %": mean,
                "Notebook % (1 run)": f"{nb:.2f}",
                "Against the shipped seeds": "no shipped seeds at this precision",
                "Notebook against the shipped seeds": "n/a"}
    this = place_one_seed(acc, shipped) if s.n == 1 else \
        f"mean {place_one_seed(acc, shipped)}"
    return {"Model": s.model, "Seeds": str(s.n), "This study %": mean,
            "Notebook % (1 run)": f"{nb:.2f}", "Against the shipped seeds": this,
            "Notebook against the shipped seeds": f"{placement(nb, shipped)} their range"}


if __name__ == "__main__":  # the command recorded in reference/notebook_seeds.json
    print(json.dumps(seeds_from_packs([Path(p) for p in sys.argv[1:]]), indent=1))
