"""How ``run`` and ``ablate`` print a study as it goes: Keras-like epoch lines, each seed's
table and files, the runs it reused or retried."""

from __future__ import annotations

from typing import Any

from cnnbench.store.run_store import RunStore
from cnnbench.study.plan import PlanGroup
from cnnbench.train.callbacks import Callback
from cnnbench.workflow.run import SeedFiles


class ConsoleView:
    """workflow.run.RunView on rich consoles: progress and tables on ``out``, data on ``err``."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out, self.err = out, err

    def note(self, line: str) -> None:
        self.out.print(line, highlight=False, soft_wrap=True)

    def data(self, line: str) -> None:
        self.err.print(line, soft_wrap=True)

    def run_starts(self, title: str) -> list[Callback]:
        from cnnbench.train.progress import KerasProgress
        self.out.rule(title)
        return [KerasProgress(self.out, title.split(", seed ")[0])]

    def seed_done(self, group: PlanGroup, files: SeedFiles, store: RunStore) -> None:
        from cnnbench.report.table import summary_table
        out = self.out
        reused = [o.record.model for o in files.outcomes if o.origin == "reused"]
        if reused:
            out.print(f"Reused from {store.root}: {', '.join(reused)} (--force trains again)")
        out.print()
        out.print(summary_table(files.rows))
        out.print(f"Results: {files.results}\nHistory: {files.history}")
        for p in files.plots:
            out.print(f"Plot:    {p}")
        for o in files.outcomes:
            out.print(f"Run:     {o.run_id} ({o.record.model}, {o.origin}; weights: "
                      f"{store.folder(o.run_id) / 'weights.safetensors'})")
        retried = [f"{o.record.model} ({o.retries} retr{'y' if o.retries == 1 else 'ies'})"
                   for o in files.outcomes if o.retries]
        if retried:
            out.print(f"Retried after a worker died: {', '.join(retried)}")
