"""``report.md``: the HTML report's words and tables, without figures."""

from __future__ import annotations

from cnnbench.analysis import stats as analysis
from cnnbench.report.content import ReportContent


def _table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return out


def render_markdown(c: ReportContent, title: str = "cnnbench report") -> str:
    lines = [f"# {title}", "", "Figures, confusion matrices and misclassified digits: "
             "`report.html` (self-contained, opens offline).", "", "## Conclusions", ""]
    lines += [f"- {s}" for s in c.conclusions] or ["- (no finished runs)"]
    if c.what_matters is not None:
        from cnnbench.report.whatmatters import markdown
        lines += [""] + markdown(c.what_matters, _table)
    lines += ["", "## Diagnosis", ""]
    lines += [f"- {s}" for s in c.diagnosis_lines] or ["- Nothing went wrong that the "
                                                       "detectors look for."]
    seen = set()
    for f in c.findings:  # per model: the advice follows each model's own layers
        if (f.model, f.kind) in seen:
            continue
        seen.add((f.model, f.kind))
        lines.append(f"  - *{f.title}* ({f.model}): {f.explanation} Usual fix: {f.fix}")
    lines += ["", "## Summary", ""] + _table(c.summary_rows)
    if c.notebook_rows:
        lines += ["", "### The notebook's numbers beside the seeds", "",
                  "The notebook ran each model once; the seeds show how far one run can "
                  "move.", ""] + _table(c.notebook_rows)
    if c.comparisons:
        lines += ["", "## Pairwise comparisons", ""]
        lines += _table([{
            "A": x.a, "B": x.b, "A − B (points)": f"{x.diff:.2f} ± {x.se:.2f}",
            "Test": x.detail, "p": analysis.fmt_p(x.pvalue).removeprefix("p").lstrip("="),
            "p (Holm)": analysis.fmt_p(x.p_holm).removeprefix("p").lstrip("="),
            "Significant": x.significance_label()} for x in c.comparisons])
    lines += ["", "## Method", ""]
    lines += [f"- **{label}.** {text}" for label, text in c.method]
    return "\n".join(lines) + "\n"
