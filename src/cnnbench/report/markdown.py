"""``report.md``: the HTML report's words and tables, without figures."""

from __future__ import annotations

import re

from cnnbench.report.content import PAIRWISE_NOTE, ReportContent, pairwise_rows

# What CommonMark would take for raw HTML: '<' before a tag name, '/', '!' or '?'. Text from
# a study file or a spec (a claim, a model's name) is shown as written, never interpreted.
_RAW_HTML = re.compile(r"<(?=[A-Za-z/!?])")


def _table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return out


def render_markdown(c: ReportContent, title: str = "cnnbench report") -> str:
    lines = [f"# {title}", "", "Figures, confusion matrices and misclassified digits: "
             "`report.html` (self-contained, opens offline). The runs it covers: under Runs.",
             "", "## Conclusions", ""]
    lines += [f"- {s}" for s in [*c.conclusions, *c.notes]] or ["- (no finished runs)"]
    if c.what_matters:
        from cnnbench.report.whatmatters import markdown
        for wm in c.what_matters:
            lines += [""] + markdown(wm, _table)
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
        lines += ["", "## Pairwise comparisons", "", PAIRWISE_NOTE, ""]
        lines += _table(pairwise_rows(c.comparisons))
    lines += ["", "## Runs", "", f"The {len(c.run_rows)} run(s) this report covers, each "
              f"once; `cnnbench show ID` prints one.", ""] + _table(c.run_rows)
    if c.sequential:
        lines += ["", "## Sequential seeds", "", c.sequential[0], ""]
        lines += [f"- {s}" for s in c.sequential[1:]]
    lines += ["", "## Method", ""]
    lines += [f"- **{label}.** {text}" for label, text in c.method]
    return _RAW_HTML.sub("&lt;", "\n".join(lines)) + "\n"
