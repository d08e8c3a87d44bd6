"""The report's "what matters" section: each ablation's design, its effects with intervals
(a dot and whisker per factor level), a sentence per factor, and the claims' verdicts."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from cnnbench.analysis import effects
from cnnbench.analysis.claims import Claim, Verdict
from cnnbench.analysis.stats import fmt_p
from cnnbench.store.records import RunRecord
from cnnbench.study.ablation import AblationResult, analyse, verdicts
from cnnbench.study.variants import Ablation, Factor, Variant


@dataclass
class WhatMatters:
    results: list[AblationResult]
    verdicts: list[Verdict]
    validation: str  # how the runs validated, in words
    curves: dict[str, dict[str, list[RunRecord]]]  # ablation -> variant -> its runs
    holdout: bool = True

    def lines(self) -> list[str]:
        """The claims' verdicts, then each ablation's sentences: for the terminal."""
        out = [v.sentences()[0] for v in self.verdicts]
        for r in self.results:
            out += [r.sentences()[0], *findings(r)]
        return out


def findings(r: AblationResult) -> list[str]:
    """An ablation's sentences on its effects and interactions. Its "stuck at chance" lines
    are left to the report's Diagnosis (which says the same of every model) and to the
    variants' table (its Stuck and Gradient columns): said once, in one wording."""
    stuck = sum(1 for k, _ in r.stuck.values() if k)
    sentences = r.sentences()[1:]
    return sentences[:len(sentences) - stuck] if stuck else sentences


def _name_families(results: Sequence[AblationResult]) -> None:
    """Each Holm-adjusted p of an ablation's effects says over which tests (a claim's
    comparisons are named by claims.judge)."""
    for r in results:
        for metric, effs in r.effects.items():
            family = effects.tests_family(len(effs), len(r.interactions.get(metric, [])),
                                          of=f"ablation {r.ablation.name}")
            for e in effs:
                e.family = family


def _stopping(runs: Iterable[RunRecord]) -> str:
    """What early stopping did over these runs, in one sentence ('' if it was off)."""
    runs = {id(r): r for r in runs if r.finished}.values()  # a run shared by two ablations
    on = [r for r in runs if r.config.get("early_stopping") is not None]
    if not on:
        return ""
    asked = sum(int(r.config.get("epochs") or len(r.history["loss"])) for r in on)
    done = sum(len(r.history["loss"]) for r in on)
    stopped = sum(1 for r in on if len(r.history["loss"]) < int(r.config.get("epochs") or 0))
    rules = sorted({f"patience {r.config['early_stopping']} on {r.config.get('monitor')}"
                    + (f", baseline {r.config['baseline']:g}"
                       if r.config.get("baseline") is not None else "") for r in on})
    return (f" Early stopping ({'; '.join(rules)}) ended {stopped} of {len(on)} runs early: "
            f"{done} of {asked} epochs trained ({100 * (asked - done) / asked:.0f} % saved); "
            f"the variants' table marks each stopped run's epochs with *.")


def build(ablations: Sequence[Any], claims: Sequence[Any],
          run_ids: Mapping[tuple[str, str, int], str], records: Mapping[str, RunRecord],
          y_test: Any, num_classes: int) -> WhatMatters:
    """The section from the stored runs of each (ablation, variant, seed)."""
    runs = {k: records[rid] for k, rid in run_ids.items() if rid in records}
    results = analyse(ablations, runs, y_test, num_classes)
    held = [r.config for r in runs.values() if r.config]
    # None for no holdout: absent (run key version 1 left it out at 0) or 0 (version 2).
    splits = {(c.get("validation_split") or None, c.get("validation_size") or None)
              for c in held}
    if splits == {(None, None)} or not splits:
        validation = ("These runs validated on the test set after every epoch (the notebook's "
                      "protocol): their per-epoch numbers were seen during training.")
    else:
        what = ", ".join(f"the last {100 * s:g} % of the training images" if s else
                         f"the last {n} training images" for s, n in sorted(
                             splits, key=str) if s or n)
        validation = (f"Validation: {what} (Keras' validation_split: taken before shuffling, "
                      f"never trained on); best epochs and early stopping use it only. The "
                      f"test set was evaluated once per run, at the end: no number here was "
                      f"used for selection.")
    validation += _stopping(runs.values())
    curves: dict[str, dict[str, list[RunRecord]]] = {}
    for (a, v, _), r in sorted(runs.items(), key=lambda kv: kv[0][2]):
        curves.setdefault(a, {}).setdefault(v, []).append(r)
    judged = verdicts(claims, results)
    _name_families(results)
    return WhatMatters(results, judged, validation, curves, bool(splits - {(None, None)}))


def effect_png(result: AblationResult) -> bytes | None:
    """Dot (estimate) and whisker (95 % interval) per factor level, test accuracy in points."""
    from cnnbench.report.charts import _plt, _png
    rows = result.effects.get("acc", [])
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.8))
    for i, e in enumerate(reversed(rows)):
        lo, hi = e.ci
        colour = "#1b7837" if e.separable else "#777777"
        if not math.isnan(lo):
            ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot([e.estimate], [i], "o", color=colour)
    ax.axvline(0, color="#444", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{e.factor}={e.level} vs {e.reference}" for e in reversed(rows)])
    ax.set_xlabel("effect on test accuracy (points), 95 % interval")
    # Over the whole figure and wrapped: a title over the axes alone is cut where long level
    # labels push the axes right.
    fig.suptitle(textwrap.fill(f"{result.ablation.name}: green = separable after Holm, "
                               f"grey = not", 80), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _effect_rows(r: AblationResult) -> list[dict[str, str]]:
    loss = {(e.factor, e.level): e for e in r.effects.get("loss", [])}
    rows = []
    for e in r.effects.get("acc", []):
        lo, hi = e.ci
        el = loss.get((e.factor, e.level))
        rows.append({
            "Factor": e.factor, "Level vs base": f"{e.level} vs {e.reference}",
            "Δ accuracy (points)": f"{e.estimate:+.2f}",
            "95 % CI": "n/a" if math.isnan(lo) or e.both_stuck else f"{lo:+.2f} to {hi:+.2f}",
            "Test": ("set aside: both stuck" if e.both_stuck else
                     "OLS coefficient" if e.method == "ols" else "Welch t-test vs the base"),
            "p (Holm)": fmt_p(e.p_holm).removeprefix("p").lstrip("="),
            "Holm over": e.family or "this ablation's tests",
            "Δ loss": "n/a" if el is None else f"{el.estimate:+.4f}",
            "Separable": "yes" if e.separable else "no: both stuck" if e.both_stuck else "no",
            "Runs": f"{e.n} vs {e.n_ref}"})
    return rows


def _variant_rows(r: AblationResult) -> list[dict[str, str]]:
    import numpy as np
    rows = []
    for v in r.ablation.variants:
        accs = [100 * o.acc for o in r.observations if o.variant == v.name]
        k, n = r.stuck.get(v.name, (0, 0))
        g = r.gradient.get(v.name)
        best = r.best_epochs.get(v.name) or []
        rows.append({
            "Variant": v.name, "Params": f"{v.spec.params:,}", "Seeds": str(len(accs)),
            "Test accuracy %": (f"{np.mean(accs):.2f}" + (f" ± {np.std(accs, ddof=1):.2f}"
                                                          if len(accs) > 1 else ""))
            if accs else "n/a",
            "Stuck": f"{k}/{n}",
            "Gradient at layer 1 / largest": "n/a" if g is None else f"{g:.1e}",
            "Best epoch (validation loss)": ", ".join(map(str, best)) or "n/a",
            "Epochs trained": _epochs_trained(r.epochs_run.get(v.name, []))})
    return rows


def _epochs_trained(runs: Sequence[tuple[int, int]]) -> str:
    """'12' when every run trained all its epochs; else each run's, a stopped one starred."""
    if not runs:
        return "n/a"
    if all(done == asked for done, asked in runs) and len({a for _, a in runs}) == 1:
        return str(runs[0][1])
    return ", ".join(f"{done}*" if done < asked else str(done) for done, asked in runs)


def _design(r: AblationResult) -> str:
    a = r.ablation
    cells = sorted(set(r.seeds_per_cell.values()))
    per = (str(cells[0]) if len(cells) == 1 else f"{cells[0]}-{cells[-1]}") if cells else "0"
    factors = "; ".join(f"{f.name}: {', '.join(f.labels)} (base {f.base})" for f in a.factors)
    kind = ("full factorial (every combination of levels)" if a.design == "factorial"
            else "one factor at a time around the base")
    return (f"Base {a.base.name}, {kind}, {len(a.variants)} variants, {per} finished seed(s) "
            f"per variant. Factors: {factors}.")


def markdown(wm: WhatMatters, table: Any) -> list[str]:
    """The section in Markdown; ``table`` renders a list of row dicts."""
    out = ["## What matters", "", wm.validation, ""]
    if wm.verdicts:
        out += ["### The claims", ""]
        for v in wm.verdicts:
            s = v.sentences()
            out.append(f"- {s[0]}")
            out += [f"  - {line.strip()}" for line in s[1:]]
        out.append("")
    for r in wm.results:
        out += [f"### {r.ablation.name}", "", _design(r), ""]
        out += [f"- {s}" for s in findings(r)] + [""]
        out += table(_effect_rows(r)) + [""] + table(_variant_rows(r)) + [""]
    out += [f"*Method.* {effects.METHOD_NOTE}", ""]
    return out


def html(wm: WhatMatters, table: Any, img: Any) -> list[str]:
    """The section as HTML parts; ``table(rows)`` and ``img(png, alt)`` are html.py's."""
    parts = ["<h2 id=what-matters>What matters</h2>", f"<p>{escape(wm.validation)}</p>"]
    if wm.verdicts:
        items = []
        for v in wm.verdicts:
            s = v.sentences()
            items.append(f"<li><b>{escape(s[0])}</b><ul>"
                         + "".join(f"<li>{escape(x.strip())}</li>" for x in s[1:])
                         + "</ul></li>")
        parts.append("<h3>The claims</h3><ul class=conc>" + "".join(items) + "</ul>")
    for r in wm.results:
        parts += [f"<h3>{escape(r.ablation.name)}</h3>", f"<p class=muted>{escape(_design(r))}"
                  "</p>", img(effect_png(r), f"{r.ablation.name} effects"),
                  "<ul class=conc>" + "".join(f"<li>{escape(s)}</li>"
                                               for s in findings(r)) + "</ul>",
                  table(_effect_rows(r)), table(_variant_rows(r))]
        groups = wm.curves.get(r.ablation.name)
        if groups:
            from cnnbench.report.charts import val_acc_overlay_png
            what = "validation accuracy (holdout)" if wm.holdout else "test accuracy"
            parts.append(img(val_acc_overlay_png(groups, {}, what),
                             f"{r.ablation.name}: accuracy per epoch of each variant"))
    parts.append(f"<p class=muted>{escape(effects.METHOD_NOTE)}</p>")
    return parts


# --- the study as the store keeps it ---------------------------------------------------------

# The format of config.json's "study" this module reads: study/studydoc.py's STUDY_FORMAT.
STUDY_FORMAT = 1
Study = tuple[list[Ablation], list[Claim], dict[tuple[str, str, int], str]]


def from_document(doc: Mapping[str, Any]) -> Study:
    """The ablations, claims and run ids of (ablation, variant, seed) a stored study holds
    (``studydoc.study_document``); ValueError when it is not one this version reads."""
    from cnnbench.errors import CnnbenchError
    from cnnbench.model.spec import SpecError, build_spec
    try:
        if doc.get("format") != STUDY_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, this version reads "
                             f"{STUDY_FORMAT}")
        ablations = []
        for a in doc["ablations"]:
            base = build_spec(a["base"], source=f"stored study: {a['name']}")
            factors = tuple(Factor(
                name=f["name"], kind=f["kind"], target=f["target"],
                levels=tuple((str(label), value) for label, value in f["levels"]),
                base=f["base"], argument=f.get("argument")) for f in a["factors"])
            variants = tuple(Variant(
                name=v["name"], base=base.name, levels=dict(v["levels"]),
                spec=build_spec(v["spec"], source=f"stored study: {v['name']}"),
                training=dict(v["training"])) for v in a["variants"])
            ablations.append(Ablation(str(a["name"]), base, str(a["design"]), factors,
                                      variants))
        claims = [Claim(**{**c, "than": tuple(c["than"])}) for c in doc["claims"]]
        runs = {(str(a), str(v), int(seed)): str(rid) for a, v, seed, rid in doc["runs"]}
    except (KeyError, TypeError, AttributeError, SpecError, CnnbenchError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    return ablations, claims, runs


def stored_studies(configs: Mapping[str, Mapping[str, Any]]) -> tuple[list[Study], list[str]]:
    """The studies these runs' config.json keep, each once (the run ids of every copy
    merged: a study run again with more seeds is one study), and notes on what could not be
    rebuilt: stored studies this version cannot read, and variants of an ablation stored
    without theirs (trained before the store kept it)."""
    by_definition: dict[str, tuple[Mapping[str, Any], dict[str, Any]]] = {}
    without = []
    for rid, config in configs.items():
        doc = config.get("study")
        if not isinstance(doc, Mapping):
            model = config.get("model")
            model = model if isinstance(model, Mapping) else {}
            key_spec = (config.get("key") or {}).get("spec") or {}
            if isinstance(key_spec, Mapping) and model.get("name") not in (
                    None, key_spec.get("name")):
                without.append(rid)  # a variant (named apart from its base) of an ablation
            continue
        definition = json.dumps({k: v for k, v in doc.items() if k != "runs"}, sort_keys=True,
                                default=str)
        entry = by_definition.setdefault(definition, (doc, {}))
        runs = doc.get("runs")
        for item in runs if isinstance(runs, list) else []:
            entry[1][json.dumps(item, default=str)] = item
    studies, notes = [], []
    for doc, runs in by_definition.values():
        try:
            studies.append(from_document({**doc, "runs": list(runs.values())}))
        except ValueError as e:
            notes.append(f"What matters: a study stored with these runs cannot be read "
                         f"({e}); its section is left out.")
    if without:
        notes.append(
            f"What matters: {len(without)} run(s) are variants of an ablation stored without "
            f"the study they were trained under (runs stored before cnnbench kept it, e.g. "
            f"{', '.join(without[:3])}), so this report cannot say what matters for them; "
            f"`cnnbench run STUDY` again reuses every run (nothing trains) and writes the "
            f"report with that section.")
    return studies, notes
