"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG, no requests).

Entry point: :func:`write_report` writes ``report.html`` and ``report.md`` from run records.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench.analysis import stats as analysis
from cnnbench.analysis.diagnosis import Finding
from cnnbench.atomic import write_together
from cnnbench.report import charts
from cnnbench.report.content import PAIRWISE_NOTE, ReportContent, collect, pairwise_rows
from cnnbench.report.markdown import render_markdown
from cnnbench.report.notebook_table import notebook_scope
from cnnbench.report.table import model_summary
from cnnbench.store.records import RunRecord

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 2px}h2{font-size:20px;margin:32px 0 8px;
 border-bottom:2px solid #e3e6ea;padding-bottom:4px}h3{font-size:16px;margin:22px 0 6px}
.sub{color:#5b6472;margin:0 0 12px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sig td{background:#eefaf0}
ul.conc li{margin:4px 0}.find{border-left:4px solid #d9822b;background:#fff8f0;
 padding:6px 12px;margin:8px 0}.find.stuck,.find.diverged{border-color:#c23030;
 background:#fdf1f1}.find b{text-transform:capitalize}.find ul{margin:4px 0 6px;padding-left:20px}
.fix{color:#2b5d2b}img{max-width:100%;height:auto}.row{display:flex;gap:12px;
 flex-wrap:wrap;align-items:flex-start}.muted{color:#6b7380;font-size:12px}
dl.method dt{font-weight:600;margin-top:8px}dl.method dd{margin:2px 0 0 0}
"""


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: Sequence[Mapping[str, str]], numeric: Sequence[str] = (),
           row_class: Sequence[str] | None = None) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(
            f'<td{" class=num" if c in numeric else ""}>{escape(str(r[c]))}</td>' for c in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _model_summary_html(run: RunRecord) -> str:
    """Keras' model.summary() as an HTML table (from report.table.model_summary)."""
    table, totals = model_summary(run.spec)
    headers = [str(c.header) for c in table.columns]
    columns = [[str(x) for x in c.cells] for c in table.columns]
    rows = [dict(zip(headers, cells, strict=True)) for cells in zip(*columns, strict=True)]
    return (_table(rows, numeric=headers[2:]) + "<p class=muted>"
            + "<br>".join(escape(t) for t in totals) + "</p>")


def _findings_html(c: ReportContent, model: str) -> str:
    """One box per kind of finding: the evidence of each seed, then explanation and fix once."""
    by_kind: dict[str, list[Finding]] = {}
    for f in c.findings:
        if f.model == model:
            by_kind.setdefault(f.kind, []).append(f)
    n = len(c.groups[model])
    out = []
    for kind, fs in by_kind.items():
        seeds = ", ".join(str(f.seed) for f in fs)
        head = f"{escape(fs[0].title)}</b> in {len(fs)} of {n} run(s) (seed {seeds})"
        evidence = "".join(f"<li>seed {f.seed}: {escape(f.evidence)}</li>" for f in fs)
        out.append(f'<div class="find {kind}"><b>{head}<ul>{evidence}</ul>'
                   f"{escape(fs[0].explanation)}<br>"
                   f'<span class=fix>Usual fix: {escape(fs[0].fix)}</span></div>')
    return "".join(out) or "<p class=muted>No failure detected in any run.</p>"


def _held(r: RunRecord) -> bool:
    return bool(r.config.get("validation_split") or r.config.get("validation_size"))


def _curves_are(records: Sequence[RunRecord]) -> str:
    """What the per-epoch validation numbers of these runs are."""
    held = [_held(r) for r in records]
    if all(held):
        return "validation accuracy (holdout)"
    if any(held):
        return "validation accuracy (a holdout for some runs, the test set for others)"
    return "test accuracy"


def _page(title: str, parts: Sequence[str]) -> str:
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")


def _head(c: ReportContent, title: str) -> list[str]:
    """Title, what the report covers, the conclusions and the diagnosis."""
    n_runs, n_models = len(c.records), len(c.groups)
    seeds = sorted({r.seed for r in c.records})
    n_groups = len(c.setting_groups)
    shape = (f"{n_models} model(s) × {len(seeds)} seed(s) = {n_runs} run(s)" if n_groups < 2
             else f"{n_runs} run(s) of {n_models} model(s) under {n_groups} different "
                  f"settings, compared only within each")
    return [
        f"<h1>{escape(title)}</h1>",
        f"<p class=sub>{shape} on {escape(str(c.dataset.get('name', 'the dataset')))} (run "
        f"ids under <a href='#runs'>Runs</a>); generated "
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>",
        "<h2>Conclusions</h2><ul class=conc>"
        + "".join(f"<li>{escape(s)}</li>" for s in [*c.conclusions, *c.notes]) + "</ul>",
        "<h3>Diagnosis</h3><ul class=conc>"
        + ("".join(f"<li>{escape(s)}</li>" for s in c.diagnosis_lines)
           or "<li>No run shows a failure the detectors look for.</li>") + "</ul>",
    ]


def _what_matters(c: ReportContent) -> list[str]:
    if not c.what_matters:
        return []
    from cnnbench.report.whatmatters import html
    return [part for wm in c.what_matters for part in html(wm, _table, _img)]


def _summary(c: ReportContent) -> list[str]:
    """The summary table, the notebook's numbers beside it, the pairwise comparisons."""
    parts = [
        "<h2>Summary</h2>",
        _table(c.summary_rows, numeric=("Test accuracy %", "95% CI %", "Min – max %",
                                        "Test loss", "Params", "Training FLOPs / epoch",
                                        "Time / run")),
    ]
    if c.notebook_rows:
        parts += ["<h3>The notebook's numbers beside the seeds</h3>",
                  "<p class=muted>The notebook ran each model once; the seeds show how far "
                  "one run can move.</p>",
                  _table(c.notebook_rows, numeric=("Mean ± sd %", "95% CI %", "Min – max %",
                                                   "Notebook % (1 run)"))]
    if c.comparisons:
        parts += ["<h3>Pairwise comparisons</h3>",
                  f"<p class=muted>{escape(PAIRWISE_NOTE)}</p>",
                  _table(pairwise_rows(c.comparisons), numeric=("A − B (points)", "p",
                                                                "p (Holm)"),
                         row_class=["sig" if x.significant() else "" for x in c.comparisons])]
    return parts


def _all_models_charts(c: ReportContent, ref: Mapping[str, Any]) -> list[str]:
    """Every model's validation curve on one chart; the first seed's gradient norms."""
    what = _curves_are(c.records)
    parts = [f"<h2>{what[0].upper() + what[1:]} of all models</h2>",
             _img(charts.val_acc_overlay_png(c.groups, ref, what), f"{what}, all models")]
    norms = {m: rs[0].grad_norms for m, rs in c.groups.items() if rs and rs[0].grad_norms}
    if norms:
        parts += ["<h3>Gradient norm per layer</h3>",
                  "<p class=muted>First seed of each model; the input side is on the left. "
                  "A line falling to the left means the gradient shrinks on its way back to "
                  "the first layers.</p>", _img(charts.gradient_png(norms), "gradient norms")]
    return parts


def _representative_html(model: str, runs: Sequence[RunRecord], x_test: np.ndarray,
                         y_test: np.ndarray, classes: Sequence[str]) -> str:
    """The median seed's confusion matrix and misclassified digits, side by side."""
    rep = analysis.representative_run(runs)
    if rep is None or rep.test_predictions is None:  # (it picks runs with predictions)
        return ""
    cm = analysis.confusion_matrix(y_test, rep.test_predictions, len(classes))
    label = f"seed {rep.seed}, {100 * rep.test_accuracy:.2f} %" + (
        " (median seed)" if len(runs) > 1 else "")
    return ("<div class=row>"
            + _img(charts.confusion_png(cm, f"Confusion matrix, {label}", classes),
                   f"{model} confusion matrix")
            + _img(charts.misclassified_png(
                x_test, y_test, rep.test_predictions,
                f"Misclassified test digits ({label}): predicted / true"),
                f"{model} misclassified digits") + "</div>")


def _model_section(c: ReportContent, model: str, runs: Sequence[RunRecord],
                   ref: Mapping[str, Any], x_test: np.ndarray, y_test: np.ndarray,
                   classes: Sequence[str]) -> list[str]:
    """One model: its curves, findings, median seed's errors and Keras-style summary."""
    val = "validation" if all(_held(r) for r in runs) else "test"  # what val_* is
    parts = [f"<h2 id='{escape(model)}'>{escape(model)}</h2>",
             f"<p class=muted>Layers: {escape(runs[0].spec.shorthand())}</p>",
             _img(charts.history_png(model, [r.history for r in runs],
                                     (ref.get(model) or {}).get("history"), val_label=val),
                  f"{model} accuracy and loss, train and {val}"),
             _findings_html(c, model)]
    rep = _representative_html(model, runs, x_test, y_test, classes)
    if rep:
        parts.append(rep)
    parts.append("<h3>Model summary</h3>" + _model_summary_html(runs[0]))
    return parts


def _runs_and_method(c: ReportContent) -> list[str]:
    return ["<h2 id=runs>Runs</h2>",
            f"<p class=muted>The {len(c.records)} run(s) this report covers, each once; "
            f"<code>cnnbench show ID</code> prints one.</p>", _table(c.run_rows),
            *(["<h2>Sequential seeds</h2><p>" + escape(c.sequential[0]) + "</p><ul>"
               + "".join(f"<li>{escape(s)}</li>" for s in c.sequential[1:]) + "</ul>"]
              if c.sequential else []),
            "<h2>Method</h2><dl class=method>" + "".join(
                f"<dt>{escape(label)}</dt><dd>{escape(text)}</dd>" for label, text in c.method)
            + "</dl>"]


def render_html(c: ReportContent, x_test: np.ndarray, y_test: np.ndarray,
                reference: Mapping[str, Any] | None = None, title: str = "cnnbench report"
                ) -> str:
    """The report page, section by section, as one self-contained HTML document."""
    classes = c.dataset.get("classes") or [str(i) for i in range(10)]
    ref = reference or {}
    parts = [*_head(c, title), *_what_matters(c), *_summary(c), *_all_models_charts(c, ref)]
    for model, runs in c.groups.items():
        parts += _model_section(c, model, runs, ref, x_test, y_test, classes)
    parts += _runs_and_method(c)
    return _page(title, parts)


def write_report(records: Sequence[RunRecord], y_test: np.ndarray, x_test: np.ndarray,
                 out_dir: Path, dataset: Mapping[str, Any] | None = None,
                 reference: Mapping[str, Any] | None = None,
                 title: str = "cnnbench report",
                 content: ReportContent | None = None) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; return their paths.

    ``dataset``: optional ``name``, ``n_train`` (images per epoch before ``train_limit``),
    ``n_test`` and ``classes``. ``reference``: the notebook's runs by model name (default:
    the shipped ``notebook_results.json`` for the notebook's models at its settings; pass
    ``{}`` for none).
    """
    y_test, x_test = np.asarray(y_test), np.asarray(x_test)
    if len(x_test) != len(y_test):
        raise ValueError(f"write_report: {len(x_test)} test images but {len(y_test)} labels.")
    if reference is None:  # the notebook only beside its own models at its own settings
        reference = notebook_scope(records, (dataset or {}).get("name")).reference
    if content is None:
        content = collect(records, y_test, dataset, reference=reference)
    out_dir = Path(out_dir)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    # one set: a kill leaves both old or both new, never one report of each
    write_together(out_dir, {
        html_path.name: render_html(content, x_test, y_test, reference, title).encode("utf-8"),
        md_path.name: render_markdown(content, title).encode("utf-8")})
    return {"html": html_path, "md": md_path}
