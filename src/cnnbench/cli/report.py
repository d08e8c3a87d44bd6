"""Statistics over seeds, pairwise tests, diagnosis and figures for stored runs (default: every
finished run), as report.html and report.md, without training."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli._common import console, store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids or their starts")
    p.add_argument("--out", type=Path, default=Path("cnnbench-results"),
                   help="folder for report.html and report.md (default ./cnnbench-results)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="the runs' data, when it is not a dataset cnnbench can fetch")


def run(args: argparse.Namespace) -> int:
    from cnnbench.store.run_store import refuse_inside_store
    from cnnbench.workflow.report import report_runs
    refuse_inside_store(args.store, args.out, "--out")
    err = console(stderr=True)
    ids, paths, lines = report_runs(args.store, args.runs, args.out, args.data_dir,
                                    log=lambda m: err.print(m, soft_wrap=True))
    out = console()
    for line in lines:
        out.print(f"- {line}", soft_wrap=True)
    out.print(f"Report of {len(ids)} run(s): {paths['html']}\n  {paths['md']}")
    return 0
