"""Finished (and diverged) runs with their config, history, predictions and weights in one
.tar.gz, checked on unpack. Checkpoints never travel."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli._common import console, store_parent
from cnnbench.errors import UsageError


def PARENTS() -> list[argparse.ArgumentParser]:
    return [store_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run ids or their starts (default: every finished or diverged run)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the pack to write, e.g. runs.tar.gz")
    p.add_argument("--no-weights", action="store_true",
                   help="results only (a few KB a run): reported and reused, but not usable "
                        "by predict or export")


def run(args: argparse.Namespace) -> int:
    from cnnbench.store.pack import pack
    from cnnbench.store.run_store import RunStore, refuse_inside_store
    store = RunStore(args.store, create=False)
    refuse_inside_store(store.root, args.out, "--out")
    ids = [store.resolve(r) for r in args.runs] or store.done_ids()
    if not ids:
        raise UsageError(f"no finished runs in {store.root} to pack")
    packed = pack(store, ids, args.out, weights=not args.no_weights)
    size = args.out.stat().st_size
    console().print(f"Packed {len(packed)} run(s) "
                    f"{'without' if args.no_weights else 'with'} their weights into "
                    f"{args.out} ({size / 1e6:.2f} MB)", soft_wrap=True)
    return 0
