"""Parse a .py, .ipynb or notebook text (fenced code blocks) without running it; write one spec
file per Sequential model found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnbench.cli._common import console
from cnnbench.errors import EXIT_USAGE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a .py, .ipynb or .md file")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="folder for the spec files (default: the current folder)")


def run(args: argparse.Namespace) -> int:
    from cnnbench.model.keras_import import import_keras, write_specs
    from cnnbench.store.run_store import refuse_inside_store
    refuse_inside_store(None, args.out, "--out")  # the default store: $CNNBENCH_STORE
    result = import_keras(args.file)
    out = console()
    written = {p.stem: p for p in write_specs(result, args.out)}
    for m in result.models:
        if m.spec is not None:
            out.print(f"{m.name} ({m.where}): {len(m.spec.layers)} layers, "
                      f"{m.spec.params:,} parameters -> {written[m.name]}")
        else:
            out.print(f"{m.name} ({m.where}): not translated")
        for line in m.problems:
            out.print(f"  cannot translate: {line}")
        for line in m.notes:
            out.print(f"  note: {line}")
    for line in result.problems:
        out.print(f"cannot translate: {line}")
    if result.skipped_blocks:
        out.print(f"skipped {len(result.skipped_blocks)} code block(s) that are not Python "
                  f"(outputs?): {', '.join(result.skipped_blocks)}")
    if not result.models:
        print(f"cnnbench import-keras: error: {args.file}: no Sequential model found "
              f"(looked for 'model = Sequential()' and 'Sequential([...])').", file=sys.stderr)
        return EXIT_USAGE
    return 0 if len(written) == len(result.models) and not result.problems else 1
