"""Every run in the store: id, model, dataset, seed, epochs done/planned, accuracy, status."""

from __future__ import annotations

import argparse

from cnnbench.cli._common import console, store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from cnnbench.report.runs import runs_table
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    out = console()
    rows = store.runs()
    if not rows:
        out.print(f"No runs in {store.root}.")
        return 0
    out.print(runs_table(store, rows))
    return 0
