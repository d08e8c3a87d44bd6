"""Every run in the store: id, model, dataset, seed, epochs done/planned, accuracy, status, the
training settings that differ between the runs listed; filtered, or as JSON."""

from __future__ import annotations

import argparse

from cnnbench.cli._common import console, store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cnnbench.store.records import STORED
    p.add_argument("--model", metavar="NAME",
                   help="only this model's runs: a name, or a pattern such as 'CNN_MNIST_*'")
    p.add_argument("--dataset", metavar="NAME", help="only runs on this dataset, e.g. mnist")
    p.add_argument("--status", choices=[str(s) for s in STORED],
                   help="only runs that stand so (a run whose process died is interrupted)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per run with every column")


def run(args: argparse.Namespace) -> int:
    from cnnbench.report.runs import runs_json, runs_table, select_runs
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    rows = select_runs(store, model=args.model, dataset=args.dataset, status=args.status)
    if args.json:  # plain print: machine-readable, never wrapped or styled
        print(runs_json(store, rows))
        return 0
    out = console()
    if not rows:
        chosen = args.model or args.dataset or args.status
        out.print(f"No runs in {store.root}" + (" match." if chosen else "."))
        return 0
    out.print(runs_table(store, rows))
    return 0
