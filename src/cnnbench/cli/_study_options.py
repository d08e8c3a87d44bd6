"""The options ``run`` and ``ablate`` share, as an argparse parent: the training settings
(generated from settings.py), seeds, data, where the runs train and where results go; and
their translation into study.plan's Overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli._common import store_parent, typed
from cnnbench.constraints import POSITIVE_INT, interval
from cnnbench.errors import UsageError
from cnnbench.settings import MAX_SEEDS, SEED, SETTINGS, AutoSeeds, auto_seeds_of, first_seeds
from cnnbench.study.plan import ExecutorSettings, Overrides


def _seed_or_auto(text: str) -> int | str:
    return "auto" if text == "auto" else typed(SEED)(text)


def _auto(values: list[int | str]) -> AutoSeeds:
    """``--seeds auto``, ``--seeds auto MAX``, ``--seeds auto MIN MAX``."""
    where = f"--seeds {' '.join(map(str, values))}"
    rest = values[1:]
    if len(rest) > 2 or "auto" in rest:
        raise UsageError(f"{where}: expected 'auto', 'auto MAX' or 'auto MIN MAX'")
    field = dict(zip(("min", "max") if len(rest) == 2 else ("max",), rest, strict=False))
    return auto_seeds_of({"auto": True, **field}, where)


def _add_settings(p: argparse.ArgumentParser) -> None:
    """A flag for each setting settings.py marks as one: type, help and default from there."""
    for s in SETTINGS:
        if s.flag:
            default = s.default_text or s.default
            p.add_argument(s.option, dest=s.name, type=typed(s.constraint, s.parse),
                           metavar=s.metavar, help=f"{s.help} (default {default})")


def study_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[store_parent()])
    _add_settings(p)
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=typed(SEED), help="seed of the weights, dropout and "
                                                        "shuffling (default 0)")
    seeds.add_argument("--seeds", nargs="+", type=_seed_or_auto, metavar="K|S|auto",
                       help=f"one number K: seeds 0..K-1 (at most {MAX_SEEDS}); several: "
                            f"those seeds (each model is trained once per seed; the report "
                            f"gives statistics over them); 'auto [MIN] MAX': seeds in rounds "
                            f"of 2, from MIN (default 3) to MAX (default 10) a model, only "
                            f"while a comparison is still open (group-sequential, see the "
                            f"report's method)")
    p.add_argument("--out", type=Path, default=Path("cnnbench-results"),
                   help="folder for results.json, history.csv and plots "
                        "(default ./cnnbench-results)")
    p.add_argument("--dataset", metavar="NAME",
                   help="mnist (default), fashion-mnist, kmnist, or custom (your --data-dir "
                        "files, unverified)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="folder with the four idx files (plain or .gz) or an .npz: the "
                        "--dataset's files, or without --dataset any dataset of 28x28 "
                        "grayscale images (also $CNNBENCH_DATA_DIR)")
    p.add_argument("--class-names", type=Path, metavar="FILE",
                   help="class names of a --data-dir dataset, one a line (default: "
                        "classes.txt in DIR, else 0..N-1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                   help="fp32 (the notebook's arithmetic: the default for its study, its "
                        "models on MNIST), bf16 autocast, or auto (bf16 on CUDA and on CPUs "
                        "with native bf16: the default for every other study)")
    p.add_argument("--force", action="store_true",
                   help="train again runs the store already holds finished")
    p.add_argument("--log", action="append", choices=("tensorboard", "mlflow"), default=[],
                   help="also log to TensorBoard (event files in each run's folder) or MLflow "
                        "($MLFLOW_TRACKING_URI); repeatable; needs that package")
    _add_execution(p)
    # Hidden: a learning rate other than the notebook's, for divergence tests and experiments.
    p.add_argument("--lr", type=typed(interval(0, float("inf"), "left"), float),
                   help=argparse.SUPPRESS)
    return p


def _add_execution(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the runs train: local (default: this process, one after the "
                        "other) or ray (each run a Ray task; needs cnnbench[ray])")
    p.add_argument("--jobs", type=typed(POSITIVE_INT), default=1, metavar="N",
                   help="local: train N runs at once, each in a process of its own with "
                        "cores/N threads (default 1: in this process, one after the other)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster for --executor ray: HOST:PORT, ray://HOST:PORT or "
                        "auto (default: a local cluster started for the study)")
    p.add_argument("--threads", type=typed(POSITIVE_INT), metavar="N",
                   help="torch threads a run uses (local default: torch's; ray default: 1, "
                        "and each run asks Ray for N CPUs)")


def overrides(args: argparse.Namespace, models: tuple[str, ...] = (),
              model_files: tuple[Path, ...] = ()) -> Overrides:
    """What the command line gave, for study.plan.build_plan."""
    seeds, auto = None, None
    if args.seeds and args.seeds[0] == "auto":
        auto = _auto(list(args.seeds))
    elif args.seeds:  # one number K: seeds 0..K-1; several: exactly those
        from cnnbench.settings import seeds_of
        seeds = (first_seeds(args.seeds[0], f"--seeds {args.seeds[0]}")
                 if len(args.seeds) == 1 else
                 seeds_of(list(args.seeds), f"--seeds {' '.join(map(str, args.seeds))}"))
    elif args.seed is not None:
        seeds = (args.seed,)
    training = {s.name: getattr(args, s.name) for s in SETTINGS
                if s.flag and getattr(args, s.name) is not None}
    return Overrides(
        models=models, model_files=model_files, training=training, seeds=seeds,
        auto_seeds=auto,
        learning_rate=args.lr, out=args.out, dataset=args.dataset, data_dir=args.data_dir,
        class_names=args.class_names, store=args.store, force=args.force,
        loggers=tuple(args.log), device=args.device, precision=args.precision,
        executor=ExecutorSettings(args.executor, args.jobs, args.threads, args.ray_address))
