"""The ``cnnbench`` command: parse, call, print. torch is imported only by commands that train."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from . import __version__

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnbench",
        description="Compare CNN architectures on MNIST-like data, faithfully and fast.")
    p.add_argument("--version", action="version", version=f"cnnbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train models under the notebook's conditions and compare",
                         description="Train models under identical conditions (defaults: the "
                                     "notebook's study) and write results, CSV and plots.")
    run.add_argument("--models", nargs="+", metavar="NAME",
                     help="built-in model names or spec files (default: the four CNN_MNIST_*)")
    run.add_argument("--epochs", type=_positive_int, default=12, help="epochs (default 12)")
    run.add_argument("--batch-size", type=_positive_int, default=128,
                     help="images per step (default 128)")
    run.add_argument("--train-limit", type=_positive_int, metavar="N",
                     help="train on the first N training images; the test set stays whole")
    run.add_argument("--seed", type=_int, default=0, help="seed for weights, dropout, shuffling")
    run.add_argument("--out", type=Path, default=Path("cnnbench-results"),
                     help="folder for results.json, history.csv and plots "
                          "(default ./cnnbench-results)")
    run.add_argument("--data-dir", type=Path, metavar="DIR",
                     help="folder with the four idx files (plain or .gz) or mnist.npz "
                          "(also $CNNBENCH_DATA_DIR)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    _store_argument(run)
    run.add_argument("--force", action="store_true",
                     help="train again runs the store already holds finished")
    run.add_argument("--log", action="append", choices=("tensorboard", "mlflow"), default=[],
                     help="also log to TensorBoard (event files in each run's folder) or MLflow "
                          "($MLFLOW_TRACKING_URI); repeatable; needs that package")
    # Hidden: a learning rate other than the notebook's, for divergence tests and experiments.
    run.add_argument("--lr", type=float, default=1.0, help=argparse.SUPPRESS)

    sub.add_parser("models", help="list the built-in models")

    runs = sub.add_parser("runs", help="list the runs in the store")
    _store_argument(runs)
    show = sub.add_parser("show", help="one run's config and history")
    show.add_argument("run", metavar="RUN", help="a run id, or the start of one")
    _store_argument(show)
    rm = sub.add_parser("rm", help="delete a run from the store")
    rm.add_argument("run", metavar="RUN", help="a run id, or the start of one")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask first")
    _store_argument(rm)

    summary = sub.add_parser("summary", help="a Keras-style summary of a model")
    summary.add_argument("name", help="a built-in model name or a spec file")
    return p


def _store_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, metavar="PATH",
                   help="the run store (default $CNNBENCH_STORE, else ./cnnbench-runs)")


def _console(stderr: bool = False):
    from rich.console import Console
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
        console = Console(stderr=stderr, highlight=False, width=140)
    return console


def cmd_models(args: argparse.Namespace) -> int:
    from .report.table import models_table
    from .spec import get_spec, list_models
    _console().print(models_table([get_spec(n) for n in list_models()]))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .report.table import model_summary
    from .spec import get_spec
    table, totals = model_summary(get_spec(args.name))
    console = _console()
    console.print(table)
    for line in totals:
        console.print(" " + line)
    return 0


def _check_writable(out: Path) -> None:
    """Fail before training, not after, when the results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".cnnbench-write-test-{os.getpid()}"  # two processes may share out
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write results to {out}: {e.strerror}") from e


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from .spec import get_spec, list_models
    from .store import RunStore

    names = args.models or list_models("CNN_MNIST_*")
    specs = [get_spec(n) for n in names]  # unknown names fail here, before anything is loaded
    _check_writable(args.out)
    store = RunStore(args.store)  # an unwritable store fails here, before any training
    from .loggers import check_loggers
    check_loggers(args.log)  # and so does a logger whose package is missing

    import torch

    from .data import load_dataset
    from .engine import TrainConfig, resolve_device
    from .progress import KerasProgress
    from .report.figures import notebook_reference, plot_history
    from .report.files import results_document, write_results
    from .report.table import summary_table
    from .runner import StudyRunner
    from .study import environment

    console, err = _console(), _console(stderr=True)
    dataset = load_dataset("mnist", data_dir=args.data_dir, log=lambda m: err.print(m))
    device = resolve_device(args.device)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         train_limit=args.train_limit, seed=args.seed, lr=args.lr)
    n_train = min(len(dataset.x_train), args.train_limit or len(dataset.x_train))
    console.print(f"Train on {n_train} samples, validate on {len(dataset.x_test)} samples "
                  f"({device}, {torch.get_num_threads()} threads)")

    def callbacks(spec):
        console.rule(spec.name)
        return [KerasProgress(console, spec.name)]

    # A scheduler's or `kill`'s stop request ends as cleanly as Ctrl-C: recorded, resumable.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    runner = StudyRunner(store, dataset, config, device, force=args.force,
                         log=lambda m: console.print(m, highlight=False), callbacks=callbacks,
                         loggers=args.log)
    try:
        stored = runner.run(specs)
    except KeyboardInterrupt:
        err.print(f"Interrupted. Every completed epoch is saved in {store.root}; run the same "
                  f"command again to resume:\n  cnnbench {shlex.join(sys.argv[1:])}",
                  soft_wrap=True)
        return 130
    results = [s.model for s in stored]
    reused = [s.model.spec.name for s in stored if s.origin == "reused"]
    if reused:
        console.print(f"Reused from {store.root}: {', '.join(reused)} (--force trains again)")

    env = environment(device)
    data_doc = {"name": dataset.info.name, "source": dataset.source,
                "fingerprint": dataset.fingerprint(), "train_images": n_train,
                "test_images": len(dataset.x_test), "class_counts": dataset.class_counts()}
    json_path, csv_path = write_results(args.out, results_document(results, data_doc, env))
    reference = notebook_reference()
    plots = [plot_history(r.spec.name, r.result.history, args.out / f"{r.spec.name}.png",
                          reference.get(r.spec.name, {}).get("history"))
             for r in results]
    rows = [{"spec": r.spec, "test_loss": r.result.test_loss,
             "test_accuracy": r.result.test_accuracy, "seconds": r.wall_seconds,
             "status": r.result.status} for r in results]
    console.print()
    console.print(summary_table(rows))
    console.print(f"Results: {json_path}\nHistory: {csv_path}")
    for p in plots:
        console.print(f"Plot:    {p}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .report.runs import runs_table
    from .store import RunStore
    store = RunStore(args.store, create=False)
    console = _console()
    rows = store.runs()
    if not rows:
        console.print(f"No runs in {store.root}.")
        return 0
    console.print(runs_table(store, rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .report.runs import show_run
    from .store import RunStore
    store = RunStore(args.store, create=False)
    show_run(_console(), store, store.resolve(args.run))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .store import RunStore
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


COMMANDS = {"run": cmd_run, "models": cmd_models, "summary": cmd_summary, "runs": cmd_runs,
            "show": cmd_show, "rm": cmd_rm}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .spec import SpecError
    try:
        return COMMANDS[args.command](args)
    except (SpecError, DataError, ValueError, OSError) as e:
        print(f"cnnbench {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\ncnnbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
