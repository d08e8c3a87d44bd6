"""The ``cnnbench`` command: parse, call, print.

Each command is a module of this package with ``add_arguments(parser)`` and
``run(args) -> int``, named in :data:`COMMANDS` with its one-line summary and imported only
when it runs, so ``cnnbench --help`` and ``cnnbench models`` never import torch. Adding a
command is one row here and one module.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from types import ModuleType
from typing import NoReturn

from cnnbench import __version__
from cnnbench.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CnnbenchError

# name -> (module in this package, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "train models under the notebook's conditions and compare them"),
    "ablate": ("ablate", "vary factors of a model and estimate their effects"),
    "models": ("models", "list the built-in models"),
    "summary": ("summary", "a Keras-style summary of a model, or a study's variants"),
    "runs": ("runs", "list the runs in the store"),
    "show": ("show", "one run's config and history"),
    "rm": ("rm", "delete a run from the store"),
    "report": ("report", "write report.html and report.md from the store, without training"),
    "pack": ("pack", "put finished runs in one file, for another store or machine"),
    "unpack": ("unpack", "add the runs of packs to the store"),
    "import-keras": ("import_keras", "turn Keras Sequential models in Python or notebook "
                                     "source into spec files"),
    "predict": ("predict", "classify your own images with trained weights"),
    "export": ("export", "export trained weights to ONNX, TorchScript or safetensors"),
}
EPILOG = ("Exit codes: 0 done; 1 something failed while running (a run, the data, the store, "
          "the disk); 2 what was given cannot be used (an option, a spec or study file, a run "
          "id); 130 interrupted.")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_module(name: str) -> ModuleType:
    return import_module(f"cnnbench.cli.{COMMANDS[name][0]}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` (if any) gets its arguments, so only
    its module is imported."""
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    p = _Parser(
        prog="cnnbench", epilog=EPILOG,
        description="Compare CNN architectures on MNIST-like data, faithfully and fast.")
    p.add_argument("--version", action="version", version=f"cnnbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        if name != wanted:
            sub.add_parser(name, help=summary)
            continue
        module = command_module(name)
        parser = sub.add_parser(name, help=summary, epilog=EPILOG,
                                description=module.__doc__.strip().split("\n\n")[0]
                                if module.__doc__ else summary,
                                parents=getattr(module, "PARENTS", lambda: [])())
        module.add_arguments(parser)
    return p


def _os_error(e: OSError) -> str:
    """An OSError in one line: what failed, on which path (no errno number, no repr)."""
    if e.strerror is None:
        return str(e) or type(e).__name__
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return f"{e.strerror}: {paths}" if paths else e.strerror


def main(argv: list[str] | None = None) -> int:
    """Run a command; each error is one line on stderr and the exit code its class chooses
    (errors.py): 2 for what the user gave, 1 for what failed while running it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as e:  # --help, --version, or argparse's one-line usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_FAILURE
    try:
        code: int = command_module(args.command).run(args)
    except CnnbenchError as e:
        print(f"cnnbench {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the disk or the file system (full, read-only, gone): not the input
        print(f"cnnbench {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\ncnnbench {args.command}: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # CPython marks a KeyboardInterrupt that passed through exec() of a string (dataclass
        # and namedtuple creation: torch's lazy imports are full of them) as unhandled even once
        # caught; under `python -m cnnbench` the interpreter then kills itself with SIGINT at
        # exit (status -2) instead of returning 130: 4 of 10 Ctrl-Cs during the first compile.
        # Every exec() resets that mark on entry, so one that completes clears it.
        exec("pass")
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
