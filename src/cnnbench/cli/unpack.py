"""Adds each pack's runs to the store after checking every file; a run the store has finished
is left as it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli._common import console, store_parent


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("packs", nargs="+", type=Path, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from cnnbench.store.pack import add_runs, read_pack
    from cnnbench.store.run_store import RunStore
    store, out = None, console()
    for path in args.packs:
        runs = read_pack(path)  # checked whole: a refused first pack creates no store
        store = store or RunStore(args.store)
        results = add_runs(store, path, runs)
        for u in results:
            out.print(f"{u.action} {u.run_id} ({u.model}, seed {u.seed}"
                      f"{'' if u.weights else ', without weights'})"
                      + (f": {u.reason}" if u.reason else ""), soft_wrap=True)
        added = sum(u.action != "kept" for u in results)
        out.print(f"{path}: {added} of {len(results)} run(s) added to {store.root}",
                  soft_wrap=True)
    return 0
