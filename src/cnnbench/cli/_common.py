"""What several commands share: the console, the --store option, argparse types made from
the constraints every other input is checked with, and finding a run's weights."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnbench.constraints import Constraint
from cnnbench.errors import UsageError


def console(stderr: bool = False) -> Any:
    """A rich Console that prints names, paths and class names as given."""
    from rich.console import Console
    # markup=False: model names, paths and class names are printed as given; Rich would read
    # 'm[/]' as a closing tag (MarkupError) and 'net[red]' as a colour.
    out = Console(stderr=stderr, highlight=False, markup=False)
    if not out.is_terminal:  # logs and CI: wide enough that tables do not wrap
        out = Console(stderr=stderr, highlight=False, markup=False, width=140)
    return out


def typed(constraint: Constraint, parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type`` from a constraint: the text parsed, then checked, with the
    constraint's words in the message ("expected a positive integer, got 0")."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"expected {constraint.text}, got {text!r}") from None
        if not constraint(value):
            raise argparse.ArgumentTypeError(f"expected {constraint.text}, got {text}")
        return value
    convert.__name__ = constraint.text  # argparse names the type in some messages
    return convert


def store_parent() -> argparse.ArgumentParser:
    """``--store PATH``, for every command that reads or writes the run store."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", type=Path, metavar="PATH",
                   help="the run store (default $CNNBENCH_STORE, else ./cnnbench-runs)")
    return p


def weights_parent() -> argparse.ArgumentParser:
    """``RUN|WEIGHTS`` and ``--store``: trained weights by run id or by file."""
    p = argparse.ArgumentParser(add_help=False, parents=[store_parent()])
    p.add_argument("weights", metavar="RUN|WEIGHTS",
                   help="a run id from 'cnnbench runs' (or its start), or a .safetensors file "
                        "written by cnnbench")
    return p


def weights_path(ref: str, store_root: Path | None) -> Path:
    """A weights file as given, else the final weights of the run it names in the store."""
    if Path(ref).is_file():
        return Path(ref)
    if any(c in ref for c in "/.") or ref.startswith("~"):  # a path, never a run id
        what = "is not a file" if Path(ref).exists() else "does not exist"
        raise UsageError(f"{ref} {what}; expected a .safetensors file written by cnnbench, or "
                         f"a run id (hex, or its start) from 'cnnbench runs'")
    from cnnbench.store.run_store import RunStore
    store = RunStore(store_root, create=False)
    rid = store.resolve(ref)
    path = store.folder(rid) / "weights.safetensors"
    if store.weights_left_out(rid):
        raise UsageError(f"run {rid} was unpacked from {(store.imported(rid) or {}).get('from')} "
                         f"without its weights (`cnnbench pack --no-weights`): pack it with "
                         f"its weights, or train it here with `cnnbench run ... --force`")
    if not path.is_file():
        raise UsageError(f"run {ref} in {store.root} has no final weights (not finished?)")
    return path
