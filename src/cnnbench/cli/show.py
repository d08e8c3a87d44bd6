"""One run's config and history (RUN: an id or its start)."""

from __future__ import annotations

import argparse

from cnnbench.cli._common import console, store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run id, or the start of one")


def run(args: argparse.Namespace) -> int:
    from cnnbench.report.runs import show_run
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    show_run(console(), store, store.resolve(args.run))
    return 0
