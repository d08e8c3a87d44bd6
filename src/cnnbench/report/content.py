"""What the report says, computed once from run records; HTML and Markdown only render it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnbench.analysis import diagnosis
from cnnbench.analysis import stats as analysis
from cnnbench.analysis.conclusions import conclusions
from cnnbench.report.table import describe_batchnorm, describe_dropout
from cnnbench.store.records import RunRecord
from cnnbench.train.optim import label_of


@dataclass
class SettingGroup:
    """Runs trained under the same settings (all but the seed and the layers): the only runs
    a report pools or tests against each other. ``label``: the settings that set it apart
    from the report's other groups ('' when it is the only one)."""

    label: str
    settings: dict[str, Any]
    records: list[RunRecord]  # as the report names them: models labelled apart
    comparisons: list[analysis.Comparison] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.records))


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
    what_matters: list[Any] = field(default_factory=list)  # whatmatters.WhatMatters each
    notebook_rows: list[dict[str, str]] = field(default_factory=list)  # notebook_table.py
    setting_groups: list[SettingGroup] = field(default_factory=list)
    run_rows: list[dict[str, str]] = field(default_factory=list)  # every run covered, by id
    notes: list[str] = field(default_factory=list)  # what the report could not do, and why
    # --seeds auto: the design, then each comparison's looks and why it stopped
    sequential: list[str] = field(default_factory=list)


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


def _method(records: Sequence[RunRecord], dataset: Mapping[str, Any],
            groups: Sequence[SettingGroup] = (), reference: Mapping[str, Any] | None = None
            ) -> list[tuple[str, str]]:
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
    ]
    if len(groups) > 1:
        out.insert(1, ("Groups of settings", " ".join(
            f"[{g.label}]: " + ", ".join(f"{k}={str(v)[:16] if k == 'data' else v}"
                                         for k, v in sorted(g.settings.items()))
            + "; runs " + ", ".join(r.run_id or "not stored" for r in g.records) + "."
            for g in groups)))
    if reference is None or any(r.model in reference for r in records):
        out.append(("Reference", "Faint wide curves are the notebook's published runs (Keras "
                                 "2.2, 2019, one run per model, full 60k training set)."))
    return out


PAIRWISE_NOTE = (
    "Every model against every other trained under the same settings: Welch's t-test over "
    "seeds (McNemar's exact test with one seed each), Holm-adjusted over the pairs the "
    "'Holm over' column names. What matters, where present, tests an ablation's designed "
    "effects and adjusts over that ablation's own tests: another family, so the same two "
    "variants can show another p there. Two models stuck at chance in every seed are set "
    "aside, not tested, and count in Holm at p 1.")


def pairwise_rows(comparisons: Sequence[analysis.Comparison]) -> list[dict[str, str]]:
    """The pairwise table, for HTML and Markdown: each p with its test and its family."""
    return [{"A": x.a, "B": x.b, "A − B (points)": f"{x.diff:.2f} ± {x.se:.2f}",
             "Test": x.detail, "p": analysis.fmt_p(x.pvalue).removeprefix("p").lstrip("="),
             "p (Holm)": analysis.fmt_p(x.p_holm).removeprefix("p").lstrip("="),
             "Holm over": x.family or "all pairs",
             "Significant": x.significance_label()} for x in comparisons]


# --- groups of settings ----------------------------------------------------------------------

# Settings older run keys did not spell out, at the value those runs trained with.
_UNSPELLED = {"precision": "fp32", "train_limit": None, "early_stopping": None}
_STOPPING = ("monitor", "min_delta", "restore_best_weights")  # moot with early stopping off
# The seed, a speed setting, and settings folded into the optimizer's and validation's words.
_FOLDED = {"seed", "eval_batch_size", "optimizer", "optimizer_args", "lr", "rho", "epsilon",
           "validation_split", "validation_size"}


def validation_of(config: Mapping[str, Any]) -> str:
    """Where a run's per-epoch validation numbers came from, in a few words."""
    split, size = config.get("validation_split") or 0, config.get("validation_size") or 0
    if split:
        return f"holdout {100 * float(split):g} %"
    return f"holdout {int(size)} images" if size else "test-set validation"


def settings_of(config: Mapping[str, Any], fingerprint: str | None = None) -> dict[str, Any]:
    """What shapes a run's result but its seed and its layers, comparable across runs stored
    under either run-key version: the training settings (the optimizer described whole, the
    validation in words), the precision and the data's fingerprint."""
    out = {k: v for k, v in config.items() if k not in _FOLDED}
    for k, v in _UNSPELLED.items():
        out.setdefault(k, v)
    if out.get("early_stopping") is None:
        for k in _STOPPING:
            out.pop(k, None)
    out["optimizer"] = label_of(config) if config else "not recorded"
    out["validation"] = validation_of(config)
    if fingerprint:
        out["data"] = fingerprint
    return out


def _optimizer_args(label: str) -> list[str]:
    """``Adam(learning_rate=0.01, beta_1=0.9)`` -> ``['learning_rate=0.01', 'beta_1=0.9']``."""
    return [a for a in label.partition("(")[2].removesuffix(")").split(", ") if a]


def _setting_text(key: str, value: Any, optimizers: Sequence[str]) -> str:
    """One setting as a group's label shows it; ``optimizers``: every group's optimizer
    (a label names the optimizer where they differ in kind, else the arguments that differ)."""
    if key == "optimizer":
        name = str(value).split("(")[0]
        same = [o for o in optimizers if o.split("(")[0] == name]
        common = set.intersection(*(set(_optimizer_args(o)) for o in same))
        differ = [a for a in _optimizer_args(str(value)) if a not in common]
        if len(same) == len(optimizers):  # one kind: the arguments that differ say it
            return ", ".join(differ) or str(value)
        return name + (f"({', '.join(differ)})" if differ else "")
    if key in ("validation", "precision"):
        return str(value)
    if key == "data":
        return f"data {str(value)[:12]}"
    return f"{key}={'all' if key == 'train_limit' and value is None else value}"


def _architecture(spec: Any) -> str:
    """A short hash of a model's layers and input shape (its name left out)."""
    layers = [{layer.kind: layer.args} for layer in spec.layers]
    doc = json.dumps({"input_shape": list(spec.input_shape), "layers": layers},
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:6]


def unique_runs(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Each run once, in order: a run named twice (two prefixes of one id) counts once."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.run_id is not None and r.run_id in seen:
            continue
        if r.run_id is not None:
            seen.add(r.run_id)
        out.append(r)
    return out


def setting_groups(records: Sequence[RunRecord], fingerprints: Mapping[str, str] | None = None
                   ) -> list[SettingGroup]:
    """The runs by their settings (all but the seed and the layers), in order of first
    appearance. Each run is renamed for the report so that no two different things share a
    name: a model's name, then ``[layers 1a2b3c]`` where one name covers two architectures,
    then ``[the settings that differ between groups]`` where there are several groups."""
    fingerprints = fingerprints or {}
    by_key: dict[str, tuple[dict[str, Any], list[RunRecord]]] = {}
    for r in records:
        settings = settings_of(r.config, fingerprints.get(r.run_id or ""))
        key = json.dumps(settings, sort_keys=True, default=str)
        by_key.setdefault(key, (settings, []))[1].append(r)
    all_settings = [st for st, _ in by_key.values()]
    keys = list(dict.fromkeys(k for st in all_settings for k in st))
    differing = [k for k in keys if len({json.dumps(st.get(k), default=str)
                                          for st in all_settings}) > 1]
    optimizers = [str(st.get("optimizer")) for st in all_settings]
    groups: list[SettingGroup] = []
    for settings, runs in by_key.values():
        label = ", ".join(_setting_text(k, settings.get(k), optimizers) for k in differing)
        if any(g.label == label for g in groups):  # settings no short form tells apart
            label += f" #{len(groups) + 1}"
        archs: dict[str, set[str]] = {}
        for r in runs:
            archs.setdefault(r.model, set()).add(_architecture(r.spec))
        renamed = []
        for r in runs:
            name = r.model
            if len(archs[r.model]) > 1:
                name += f" [layers {_architecture(r.spec)}]"
            if label:
                name += f" [{label}]"
            renamed.append(r if name == r.model else dataclasses.replace(r, model=name))
        groups.append(SettingGroup(label, settings, renamed))
    return groups


def grouped_conclusions(c: ReportContent, pairs: bool = True) -> list[str]:
    """The conclusions of each group of settings apart; with several, first what sets them
    apart. ``pairs``: with a sentence per pairwise comparison (an ablation's report leaves
    them to its designed comparisons)."""
    groups = c.setting_groups
    spread = {m: analysis.epoch_spread(rs[0].history) for m, rs in c.groups.items() if rs}
    out = []
    if len(groups) > 1:
        n = sum(len(g.records) for g in groups)
        out.append(
            f"These {n} runs were trained under {len(groups)} different settings; each group "
            f"is summarised apart and no test compares runs of different groups (every model "
            f"name below carries its group's settings): "
            + "; ".join(f"[{g.label}]: {len(g.records)} run(s) of "
                        f"{', '.join(m.removesuffix(f' [{g.label}]') for m in g.models)}"
                        for g in groups) + ".")
    for g in groups:
        mine = [s for s in c.stats if s.model in set(g.models)]
        out += conclusions(mine, g.comparisons if pairs else [], epochs_spread=spread)
    return out


def _run_rows(groups: Sequence[SettingGroup]) -> list[dict[str, str]]:
    rows = []
    for g in groups:
        for r in sorted(g.records, key=lambda r: (g.models.index(r.model), r.seed)):
            rows.append({"Run id": r.run_id or "not stored", "Model": r.model,
                         "Seed": str(r.seed), "Status": str(r.status),
                         "Test accuracy %": "n/a" if not r.finished
                         else f"{100 * r.test_accuracy:.2f}"})
    return rows


def collect(records: Sequence[RunRecord], y_test: np.ndarray,
            dataset: Mapping[str, Any] | None = None,
            fingerprints: Mapping[str, str] | None = None,
            reference: Mapping[str, Any] | None = None) -> ReportContent:
    """Statistics, comparisons, findings and sentences for a set of runs, compared only
    within groups of equal settings (:func:`setting_groups`). ``fingerprints``: each run's
    data fingerprint by run id; ``reference``: the notebook's runs by model name."""
    if not records:
        raise ValueError("write_report: no run records given; expected at least one run.")
    dataset = dict(dataset or {})
    classes = dataset.get("classes") or [str(i) for i in range(10)]
    sgroups = setting_groups(unique_runs(records), fingerprints)
    records = [r for g in sgroups for r in g.records]
    y_test = np.asarray(y_test)
    for g in sgroups:
        g.comparisons = analysis.compare_models(g.records, y_test, num_classes=len(classes))
        if len(sgroups) > 1:
            for c in g.comparisons:
                c.family += f" under [{g.label}]"
    groups = analysis.group_by_model(records)
    stats = analysis.model_stats(records)
    findings = diagnosis.diagnose(records, y_test, len(classes))
    content = ReportContent(
        records=records, groups=groups, stats=stats,
        comparisons=[c for g in sgroups for c in g.comparisons], findings=findings,
        conclusions=[], diagnosis_lines=diagnosis.summarise(records, findings),
        summary_rows=_summary_rows(stats, groups, findings, dataset),
        method=_method(records, dataset, sgroups, reference), dataset=dataset,
        setting_groups=sgroups, run_rows=_run_rows(sgroups))
    content.conclusions = grouped_conclusions(content)
    return content
