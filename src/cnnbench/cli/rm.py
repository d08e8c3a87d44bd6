"""Delete a run and its files from the store, asking first unless --yes."""

from __future__ import annotations

import argparse
import sys

from cnnbench.cli._common import store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run id, or the start of one")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask first")


def run(args: argparse.Namespace) -> int:
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    rid = store.resolve(args.run)
    row = store.get(rid)
    assert row is not None
    what = (f"run {rid} ({row.model}, seed {row.seed}, {row.epochs_done}/{row.epochs_planned} "
            f"epochs, {store.effective_status(row)})")
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"cnnbench rm: not deleting {what} without --yes (no terminal to ask)",
                  file=sys.stderr)
            return 1
        if input(f"Delete {what} and its files in {store.folder(rid)}? [y/N] ").strip().lower() \
                not in ("y", "yes"):
            print("Nothing deleted.")
            return 1
    store.remove(rid)
    print(f"Deleted {what}.")
    return 0
