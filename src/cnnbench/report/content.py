"""What the report says, computed once from run records; HTML and Markdown only render it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnbench.analysis import diagnosis
from cnnbench.analysis import stats as analysis
from cnnbench.report.table import describe_batchnorm, describe_dropout
from cnnbench.store.records import RunRecord
from cnnbench.train.optim import label_of


@dataclass
class ReportContent:
    records: list[RunRecord]
    groups: dict[str, list[RunRecord]]
    stats: list[analysis.ModelStats]
    comparisons: list[analysis.Comparison]
    findings: list[diagnosis.Finding]
    conclusions: list[str]
    diagnosis_lines: list[str]
    summary_rows: list[dict[str, str]]
    method: list[tuple[str, str]]  # (label, text) pairs
    dataset: dict[str, Any] = field(default_factory=dict)
    what_matters: Any = None  # whatmatters.WhatMatters, for ablation studies
    notebook_rows: list[dict[str, str]] = field(default_factory=list)  # notebook_table.py


def fmt_flops(f: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}"
    return f"{f:.0f} FLOP"


def _pm(mean: float, std: float, scale: float = 100, digits: int = 2) -> str:
    if math.isnan(mean):
        return "n/a"
    s = f"{scale * mean:.{digits}f}"
    return s + (f" ± {scale * std:.{digits}f}" if not math.isnan(std) else "")


def _n_train(runs: Sequence[RunRecord], dataset: Mapping[str, Any]) -> int | None:
    limits = {r.config.get("train_limit") for r in runs}
    limit = limits.pop() if len(limits) == 1 else None
    full = dataset.get("n_train")
    if limit and full:
        return min(int(limit), int(full))
    return int(limit) if limit else (int(full) if full else None)


def _summary_rows(content_stats: Sequence[analysis.ModelStats],
                  groups: Mapping[str, Sequence[RunRecord]],
                  findings: Sequence[diagnosis.Finding],
                  dataset: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for s in content_stats:
        runs = groups[s.model]
        spec = runs[0].spec
        n_train = _n_train(runs, dataset)
        lo, hi = analysis.clip_interval(s.acc_ci)
        flags = []
        for kind, title in diagnosis.TITLES.items():
            hit = {f.seed for f in findings if f.model == s.model and f.kind == kind}
            if hit:
                flags.append(f"{title} {len(hit)}/{len(runs)}")
        epochs = max(r.epochs for r in runs)
        rows.append({
            "Model": s.model,
            "Batch Normalization": describe_batchnorm(spec),
            "Dropout": describe_dropout(spec),
            "Seeds": f"{s.n}" + (f" (+{s.n_failed} failed)" if s.n_failed else ""),
            "Test accuracy %": _pm(s.acc_mean, s.acc_std),
            "95% CI %": "n/a" if math.isnan(lo) else f"{100 * lo:.2f} – {100 * hi:.2f}",
            "Min – max %": "n/a" if math.isnan(s.acc_min)
            else f"{100 * s.acc_min:.2f} – {100 * s.acc_max:.2f}",
            "Test loss": _pm(s.loss_mean, s.loss_std, scale=1, digits=4),
            "Params": f"{spec.params:,}",
            "Training FLOPs / epoch": fmt_flops(spec.train_flops_per_image * n_train)
            if n_train else f"{fmt_flops(spec.train_flops_per_image)} / image",
            "Time / run": "n/a" if math.isnan(s.train_seconds_mean)
            else f"{s.train_seconds_mean:.0f} s ({epochs} ep.)",
            "Diagnosis": ", ".join(flags) or "—",
        })
    return rows


def _distinct(values: Sequence[Any]) -> str:
    seen: list[str] = []
    for v in values:
        if str(v) not in seen:
            seen.append(str(v))
    return " / ".join(seen)


def _validation(configs: Sequence[Mapping[str, Any]]) -> str:
    """How the runs validated: on the test set (the notebook) or on a holdout."""
    held = [c for c in configs if c.get("validation_split") or c.get("validation_size")]
    test = ("the test set as validation data after every epoch (the notebook's protocol): "
            "every per-epoch number, and any best epoch read from them, comes from the test "
            "set, which also gives the final numbers.")
    holdout = ("validation on the last part of the training images (Keras' validation_split, "
               "taken before shuffling, never trained on); the test set is evaluated once, at "
               "the end, and best epochs and early stopping use the validation set only.")
    if not held:
        return test[0].upper() + test[1:]
    if len(held) == len(configs):
        return holdout[0].upper() + holdout[1:]
    return f"{len(held)} of {len(configs)} runs: {holdout} The others: {test}"


# Not listed among the settings: the seed (its own line) and the optimizer (described whole);
# lr, rho and epsilon are Adadelta's arguments in runs stored before the key's version 2.
_NOT_SETTINGS = {"seed", "optimizer", "optimizer_args", "lr", "rho", "epsilon"}


def _method(records: Sequence[RunRecord], dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    configs = [r.config for r in records if r.config]
    keys = sorted({k for c in configs for k in c if k not in _NOT_SETTINGS})
    settings = ", ".join(f"{k}={_distinct([c.get(k) for c in configs])}" for k in keys)
    # Built from each run's own settings: an SGD study's note names SGD and its arguments.
    optimizer = _distinct([label_of(c) for c in configs]) or "not recorded"
    seeds = sorted({r.seed for r in records})
    envs = [r.environment for r in records if r.environment]
    env_keys = sorted({k for e in envs for k in e})
    env_text = ", ".join(f"{k} {_distinct([e.get(k) for e in envs])}" for k in env_keys)
    data = ", ".join(f"{k}={v}" for k, v in dataset.items() if k != "classes") or "not given"
    out = [
        ("Training", "Categorical cross-entropy, optimizer " + optimizer + ". "
         + _validation(configs) + " Settings: " + (settings or "not recorded") + "."),
        ("Seeds", f"{len(seeds)} seed(s): {', '.join(map(str, seeds))}; each model trained "
                  f"once per seed. Mean ± std uses the sample standard deviation; the 95 % "
                  f"confidence interval of the mean is Student-t over seeds."),
        ("Data", data + "."),
        ("Versions and machine", env_text or "not recorded"),
        ("Statistical tests", analysis.METHOD_NOTE),
        ("Diagnosis", (
            f"Stuck: test accuracy within {100 * diagnosis.STUCK_ACC_MARGIN:.0f} points of "
            f"always answering the commonest class, and either "
            f"{100 * diagnosis.STUCK_TOP2_SHARE:.0f} % of answers on one or two classes or a "
            f"loss within "
            f"{diagnosis.STUCK_LOSS_MARGIN} of ln(classes). Diverged: a NaN/inf loss. "
            f"Overfitting: validation loss at the last epoch at least "
            f"{100 * (diagnosis.OVERFIT_RISE - 1):.0f} % above its minimum (and on average "
            f"{100 * (diagnosis.OVERFIT_MEAN_RISE - 1):.0f} % above it afterwards, at least "
            f"{diagnosis.OVERFIT_MIN_EPOCHS_AFTER} epochs later) while the training loss fell. "
            f"Unstable: test accuracy falling by {100 * diagnosis.UNSTABLE_DROP:.1f} points or "
            f"more between two epochs while the test error grows "
            f"{diagnosis.UNSTABLE_ERROR_RATIO}x or more. Gradient norms: the L2 norm of the "
            f"loss gradient per parameterised layer on one training batch, early in training.")),
        ("Reference", "Faint wide curves are the notebook's published runs (Keras 2.2, 2019, "
                      "one run per model, full 60k training set)."),
    ]
    return out


def collect(records: Sequence[RunRecord], y_test: np.ndarray,
            dataset: Mapping[str, Any] | None = None) -> ReportContent:
    """Statistics, comparisons, findings and sentences for a set of runs."""
    if not records:
        raise ValueError("write_report: no run records given; expected at least one run.")
    dataset = dict(dataset or {})
    classes = dataset.get("classes") or [str(i) for i in range(10)]
    records = list(records)
    groups = analysis.group_by_model(records)
    stats = analysis.model_stats(records)
    comparisons = analysis.compare_models(records, y_test)
    findings = diagnosis.diagnose(records, y_test, len(classes))
    return ReportContent(
        records=records, groups=groups, stats=stats, comparisons=comparisons,
        findings=findings,
        conclusions=analysis.conclusions(stats, comparisons, epochs_spread={
            m: analysis.epoch_spread(rs[0].history) for m, rs in groups.items() if rs}),
        diagnosis_lines=diagnosis.summarise(records, findings),
        summary_rows=_summary_rows(stats, groups, findings, dataset),
        method=_method(records, dataset), dataset=dataset)
