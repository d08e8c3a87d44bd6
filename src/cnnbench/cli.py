"""The ``cnnbench`` command: parse, call, print. torch is imported only by commands that train."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench import __version__
from cnnbench.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CnnbenchError,
    UsageError,
)


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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def _seed(text: str) -> int:
    from cnnbench.study.studyfile import SEED_MAX, SEED_MIN
    value = _int(text)
    if not SEED_MIN <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"a seed is an integer from {SEED_MIN} to {SEED_MAX} "
                                         f"(64 bits), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnbench",
        description="Compare CNN architectures on MNIST-like data, faithfully and fast.",
        epilog="Exit codes: 0 done; 1 something failed while running (a run, the data, the "
               "store, the disk); 2 what was given cannot be used (an option, a spec or study "
               "file, a run id); 130 interrupted.")
    p.add_argument("--version", action="version", version=f"cnnbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train models under the notebook's conditions and compare",
                         description="Train models under identical conditions (defaults: the "
                                     "notebook's study) and write results, CSV and plots.")
    run.add_argument("study", nargs="?", type=Path, metavar="STUDY.yaml",
                     help="a study file naming models, dataset and training settings; "
                          "options given here override it")
    run.add_argument("--models", nargs="+", metavar="NAME",
                     help="built-in model names or spec files (default: the four CNN_MNIST_*)")
    run.add_argument("--model-file", action="append", type=Path, default=[], metavar="FILE",
                     help="a model spec file (YAML, Keras layer names); repeatable")
    run.add_argument("--dataset", metavar="NAME",
                     help="mnist (default), fashion-mnist, kmnist, or custom (your --data-dir "
                          "files, unverified)")
    run.add_argument("--epochs", type=_positive_int, help="epochs (default 12)")
    run.add_argument("--batch-size", type=_positive_int, help="images per step (default 128)")
    run.add_argument("--train-limit", type=_positive_int, metavar="N",
                     help="train on the first N training images; the test set stays whole")
    run.add_argument("--seed", type=_seed, help="seed for weights, dropout, shuffling (default 0)")
    run.add_argument("--out", type=Path, default=Path("cnnbench-results"),
                     help="folder for results.json, history.csv and plots "
                          "(default ./cnnbench-results)")
    run.add_argument("--data-dir", type=Path, metavar="DIR",
                     help="folder with the four idx files (plain or .gz) or an .npz: the "
                          "--dataset's files, or without --dataset any dataset of 28x28 "
                          "grayscale images (also $CNNBENCH_DATA_DIR)")
    run.add_argument("--class-names", type=Path, metavar="FILE",
                     help="class names of a --data-dir dataset, one a line (default: "
                          "classes.txt in DIR, else 0..N-1)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    run.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                     help="fp32 (the notebook's arithmetic: the default for its study, its "
                          "models on MNIST), bf16 autocast, or auto (bf16 on CUDA and on CPUs "
                          "with native bf16: the default for every other study)")
    run.add_argument("--seeds", nargs="+", type=_seed, metavar="K|S",
                     help="one number K: seeds 0..K-1; several: those seeds (each model is "
                          "trained once per seed; the report gives statistics over them)")
    _store_argument(run)
    run.add_argument("--force", action="store_true",
                     help="train again runs the store already holds finished")
    run.add_argument("--log", action="append", choices=("tensorboard", "mlflow"), default=[],
                     help="also log to TensorBoard (event files in each run's folder) or MLflow "
                          "($MLFLOW_TRACKING_URI); repeatable; needs that package")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where the runs train: local (default: this process, one after "
                          "the other) or ray (each run a Ray task; needs cnnbench[ray])")
    run.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="local: train N runs at once, each in a process of its own with "
                          "cores/N threads (default 1: in this process, one after the other)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="the Ray cluster for --executor ray: HOST:PORT, ray://HOST:PORT or "
                          "auto (default: a local cluster started for the study)")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="torch threads a run uses (local default: torch's; ray default: 1, "
                          "and each run asks Ray for N CPUs)")
    run.add_argument("--validation-split", type=_fraction, metavar="F",
                     help="validate on the last fraction F of the training images (Keras' "
                          "validation_split; the test set is then evaluated once, at the end); "
                          "0: the test set validates, as in the notebook (the default, but "
                          "0.1 for ablation studies)")
    run.add_argument("--early-stopping", type=_int, metavar="PATIENCE",
                     help="stop when the validation loss has not improved for PATIENCE epochs "
                          "and restore the best epoch's weights (Keras' EarlyStopping); needs "
                          "a held-out validation set")
    # Hidden: a learning rate other than the notebook's, for divergence tests and experiments.
    run.add_argument("--lr", type=float, help=argparse.SUPPRESS)

    abl = sub.add_parser("ablate", help="vary factors of a model and estimate their effects",
                         description="The short form of a study file with one ablation: "
                                     "e.g. 'cnnbench ablate CNN_MNIST_2 --vary "
                                     "activation=sigmoid,relu --seeds 3'. Validates on a "
                                     "holdout (--validation-split, default 0.1).")
    abl.add_argument("base", help="the base model: a built-in name or a spec file")
    abl.add_argument("--vary", action="append", required=True, metavar="FACTOR=L1,L2",
                     help="a factor and its levels (the first is the base): activation, norm "
                          "(batchnorm, dropout, dropout0.2, none), lr, batch_size, optimizer, "
                          "width, or SELECTOR.argument (e.g. Conv2D#4.use_bias=false,true); "
                          "repeatable")
    abl.add_argument("--design", choices=("factorial", "ofat"), default="factorial",
                     help="factorial (every combination, default) or ofat (one factor at a "
                          "time around the base)")
    for action in run._actions:  # every option of 'run' (seeds, epochs, store, jobs, ...)
        if action.dest not in ("help", "study", "models", "model_file"):
            abl._add_action(action)

    imp = sub.add_parser("import-keras", help="turn Keras Sequential models in Python or "
                                              "notebook source into spec files",
                         description="Parse a .py, .ipynb or notebook text (fenced code "
                                     "blocks) without running it; write one spec file per "
                                     "Sequential model found.")
    imp.add_argument("file", type=Path, help="a .py, .ipynb or .md file")
    imp.add_argument("--out", type=Path, default=Path("."),
                     help="folder for the spec files (default: the current folder)")

    pred = sub.add_parser("predict", help="classify your own images with trained weights",
                          description="Turn each image (PNG/JPEG, any size, light or dark "
                                      "background) into a 28x28 MNIST-like input and print the "
                                      "model's top classes.")
    pred.add_argument("weights", metavar="RUN|WEIGHTS",
                      help="a run id from 'cnnbench runs' (or its start), or a .safetensors "
                           "file written by cnnbench")
    pred.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    pred.add_argument("--top", type=_positive_int, default=3, help="classes shown (default 3)")
    pred.add_argument("--show", action="store_true",
                      help="save the 28x28 input the model saw beside each image "
                           "(NAME.cnnbench.png)")

    exp = sub.add_parser("export", help="export trained weights to ONNX, TorchScript or "
                                        "safetensors",
                         description="The exported model outputs class probabilities for "
                                     "float32 N x 1 x 28 x 28 inputs in [0, 1].")
    exp.add_argument("weights", metavar="RUN|WEIGHTS",
                     help="a run id from 'cnnbench runs' (or its start), or a .safetensors "
                          "file written by cnnbench")
    exp.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    exp.add_argument("--out", type=Path, metavar="PATH",
                     help="output file (default: beside WEIGHTS, with the format's suffix)")
    _store_argument(exp)
    _store_argument(pred)

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

    pk = sub.add_parser("pack", help="put finished runs in one file, for another store or "
                                     "machine",
                        description="Finished (and diverged) runs with their config, history, "
                                    "predictions and weights in one .tar.gz, checked on "
                                    "unpack. Checkpoints never travel.")
    pk.add_argument("runs", nargs="*", metavar="RUN",
                    help="run ids or their starts (default: every finished or diverged run)")
    pk.add_argument("--out", type=Path, required=True, metavar="FILE",
                    help="the pack to write, e.g. runs.tar.gz")
    pk.add_argument("--no-weights", action="store_true",
                    help="results only (a few KB a run): reported and reused, but not "
                         "usable by predict or export")
    _store_argument(pk)
    upk = sub.add_parser("unpack", help="add the runs of packs to the store",
                         description="Adds each pack's runs to the store after checking every "
                                     "file; a run the store has finished is left as it is.")
    upk.add_argument("packs", nargs="+", type=Path, metavar="FILE")
    _store_argument(upk)

    rep = sub.add_parser("report", help="write report.html and report.md from the store, "
                                        "without training",
                         description="Statistics over seeds, pairwise tests, diagnosis and "
                                     "figures for stored runs (default: every finished run).")
    rep.add_argument("runs", nargs="*", metavar="RUN", help="run ids or their starts")
    rep.add_argument("--out", type=Path, default=Path("cnnbench-results"),
                     help="folder for report.html and report.md (default ./cnnbench-results)")
    rep.add_argument("--data-dir", type=Path, metavar="DIR",
                     help="the runs' data, when it is not a dataset cnnbench can fetch")
    _store_argument(rep)

    summary = sub.add_parser("summary", help="a Keras-style summary of a model")
    summary.add_argument("name", help="a built-in model name or a spec file; or a study with "
                                      "ablations (e.g. notebook-claims): its variants")
    summary.add_argument("--vary", action="append", default=[], metavar="FACTOR=LEVEL",
                         help="the variant of NAME with this level (as for 'ablate'); "
                              "repeatable")
    summary.add_argument("--variant", metavar="NAME",
                         help="with a study: the summary of this variant")
    return p


def _store_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, metavar="PATH",
                   help="the run store (default $CNNBENCH_STORE, else ./cnnbench-runs)")


def _console(stderr: bool = False):
    from rich.console import Console
    # markup=False: model names, paths and class names are printed as given; Rich would read
    # 'm[/]' as a closing tag (MarkupError) and 'net[red]' as a colour.
    console = Console(stderr=stderr, highlight=False, markup=False)
    if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
        console = Console(stderr=stderr, highlight=False, markup=False, width=140)
    return console


def cmd_models(args: argparse.Namespace) -> int:
    from cnnbench.model.spec import get_spec, list_models
    from cnnbench.report.table import models_table
    _console().print(models_table([get_spec(n) for n in list_models()]))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnbench.report.table import model_summary
    from cnnbench.study.variants import summary_target
    console = _console()
    spec, listing = summary_target(args.name, args.vary, args.variant)
    if listing is not None:
        console.print(listing)
        return 0
    table, totals = model_summary(spec)
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


def _plan(args: argparse.Namespace):
    """The study: models, data and settings from the study file, overridden by the options
    given, as a StudyPlan."""
    from cnnbench.model.spec import get_spec, list_models
    from cnnbench.study.plan import ExecutorSettings, PlanGroup, StudyPlan
    from cnnbench.study.studyfile import is_model_spec, load_study

    if args.study and is_model_spec(args.study):
        args.model_file = [args.study, *args.model_file]  # 'run my_model.yaml' works too
        args.study = None
    study = getattr(args, "built_study", None) or (load_study(args.study) if args.study
                                                    else None)
    if args.models:
        specs = [get_spec(n) for n in args.models]  # unknown names fail here, before any data
    elif study and not args.model_file:
        specs = list(study.specs)
    else:
        specs = [] if args.model_file else [get_spec(n) for n in list_models("CNN_MNIST_*")]
    specs += [get_spec(str(f)) for f in args.model_file]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"the model name(s) {dupes} appear twice; results are keyed by "
                         f"model name, give each spec its own 'name'.")
    config: dict = study.train_config_kwargs() if study else {}
    for key in ("epochs", "batch_size", "train_limit", "validation_split", "early_stopping"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.lr is not None:  # the learning rate of whichever optimizer runs
        from cnnbench.train.optim import DEFAULT, with_learning_rate
        name = config.setdefault("optimizer", DEFAULT)
        config["optimizer_args"] = with_learning_rate(name, config.get("optimizer_args"),
                                                      args.lr, "--lr")
    if config.get("validation_split") == 0:
        config.pop("validation_split")  # --validation-split 0: the test set validates
    if args.seeds and args.seed is not None:
        raise UsageError("give --seed S or --seeds K|S..., not both")
    from cnnbench.study.studyfile import MAX_SEEDS
    if args.seeds and len(args.seeds) == 1 and args.seeds[0] > MAX_SEEDS:
        raise UsageError(f"--seeds {args.seeds[0]}: at most {MAX_SEEDS} seeds")
    if args.seeds:  # one number K: seeds 0..K-1; several: exactly those
        seeds = list(range(args.seeds[0])) if len(args.seeds) == 1 else list(args.seeds)
        if not seeds:
            raise UsageError(f"--seeds {args.seeds[0]}: expected a positive number of seeds")
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:  # one run counted twice would fake agreement between seeds (std 0)
            raise UsageError(f"--seeds {' '.join(map(str, args.seeds))}: seed(s) "
                             f"{', '.join(map(str, repeated))} given more than once; "
                             f"expected distinct seeds")
    else:
        seeds = [args.seed] if args.seed is not None else list(study.seeds) if study else [0]
    ablations = study.ablations if study and not (args.models or args.model_file) else ()
    if ablations:  # the variants, each once, grouped by their training settings
        from cnnbench.study.ablation import groups
        plan_groups = [PlanGroup(g.label, tuple(v.spec for v in g.variants), g.config)
                       for g in groups(ablations, config)]
    else:
        plan_groups = [PlanGroup("", tuple(specs), config)]
    return StudyPlan(
        groups=tuple(plan_groups), seeds=tuple(seeds), training=config, out=args.out,
        dataset=args.dataset or (study.dataset if study else None),
        data_dir=args.data_dir or (study.data_dir if study else None),
        class_names=args.class_names, store=args.store, force=args.force,
        loggers=tuple(args.log),
        executor=ExecutorSettings(args.executor, args.jobs, args.threads, args.ray_address),
        device=args.device, precision=args.precision, ablations=tuple(ablations),
        claims=tuple(study.claims) if ablations else ())


def _load_data(name: str | None, data_dir: Path | None, class_names: Path | None, log):
    from cnnbench.data.datasets import DATASETS, DataError, load_dataset, load_folder
    if name is not None and name not in (*DATASETS, "custom"):
        raise DataError(f"unknown dataset '{name}'. Known: {', '.join(DATASETS)}; for your "
                        f"own idx files use --data-dir DIR (with --dataset custom if needed).")
    if name == "custom" and data_dir is None:
        raise DataError("--dataset custom needs --data-dir DIR with the idx files.")
    if name in (None, "custom") and data_dir is not None:
        return load_folder(data_dir, class_names, log=log, custom=name == "custom")
    return load_dataset(name or "mnist", data_dir=data_dir, log=log)


def cmd_run(args: argparse.Namespace) -> int:
    from cnnbench.store.run_store import RunStore

    plan = _plan(args)
    _check_writable(plan.out)
    store = RunStore(plan.store)  # an unwritable store fails here, before any training
    from cnnbench.study.loggers import check_loggers
    check_loggers(plan.loggers)  # and so does a logger whose package is missing
    ex = plan.executor
    if ex.ray_address and ex.kind != "ray":
        raise UsageError(f"--ray-address {ex.ray_address} is for --executor ray")
    if ex.jobs > 1 and ex.kind != "local":
        raise UsageError(f"--jobs {ex.jobs} is for --executor local; on Ray every run is a "
                         f"task of --threads CPUs")
    if ex.kind == "ray":
        from cnnbench.study.executors import import_ray
        import_ray()  # and ray, when it is asked for

    import dataclasses

    import torch

    from cnnbench.model.spec import check_classes, check_input_shape
    from cnnbench.report.build import write_study_report
    from cnnbench.report.figures import notebook_reference
    from cnnbench.study.environment import environment
    from cnnbench.train.engine import resolve_device
    from cnnbench.train.fastpath import resolve_precision

    console, err = _console(), _console(stderr=True)
    dataset = _load_data(plan.dataset, plan.data_dir, plan.class_names,
                         log=lambda m: err.print(m, soft_wrap=True))
    image_shape = (*dataset.x_train.shape[1:], 1)
    for spec in plan.specs:  # fail before any training time is spent
        check_input_shape(spec, image_shape)
        check_classes(spec, dataset.num_classes)
    device = resolve_device(plan.device)
    precision = resolve_precision(plan.precision or plan.default_precision(), device)
    plan = dataclasses.replace(plan, precision=precision)
    from cnnbench.study.executors import ExecutorError, LocalExecutor, ProcessExecutor, RayExecutor
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    if ex.kind == "ray":
        executor = RayExecutor(ex.ray_address, threads=ex.threads or 1, log=log)
        threads = f"on Ray, {executor.threads} thread(s) a run"
    elif ex.jobs > 1:
        n = ex.threads or max(1, torch.get_num_threads() // ex.jobs)
        executor = ProcessExecutor(ex.jobs, n, log=log)
        threads = f"{ex.jobs} runs at once, {n} thread(s) each"
    else:
        if ex.threads:
            torch.set_num_threads(ex.threads)
        executor = LocalExecutor()
        threads = f"{torch.get_num_threads()} threads"
    first = plan.config(plan.seeds[0])
    n_train = min(len(dataset.x_train), first.train_limit or len(dataset.x_train))
    if first.holdout:
        from cnnbench.data.holdout import split_at
        n_fit = split_at(n_train, first.validation_split, first.validation_size)
        console.print(f"Train on {n_fit} samples, validate on the last {n_train - n_fit} of "
                      f"them; the {len(dataset.x_test)} test images are evaluated once, at "
                      f"the end ({dataset.info.name}, {first.optimizer_label()}, {device}, "
                      f"{precision}, {threads})")
    else:
        console.print(f"Train on {n_train} samples, validate on {len(dataset.x_test)} samples "
                      f"({dataset.info.name}, {first.optimizer_label()}, {device}, "
                      f"{precision}, {threads})")
    if plan.ablations:
        n_runs = len(plan.specs) * len(plan.seeds)
        console.print(f"Ablations: {', '.join(a.name for a in plan.ablations)}: "
                      f"{len(plan.specs)} distinct variants x {len(plan.seeds)} seed(s) "
                      f"= {n_runs} runs")

    # A scheduler's or `kill`'s stop request ends as cleanly as Ctrl-C: recorded, resumable.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    env = environment(device)
    if executor.remote:  # the runs' environment, not this driver's
        env |= {"executor": executor.name, "threads": executor.threads}
    ready = _Ready(store, dataset, device, executor, env, _data_doc(dataset, n_train),
                   notebook_reference() if dataset.info.name == "mnist" else {})
    run_ids: list[str] = []
    try:
        for group in plan.groups:
            for config, outcomes in _studies(plan, group, ready, console):
                _print_seed(plan, group, config, outcomes, ready, console)
                run_ids += [o.run_id for o in outcomes]
    except KeyboardInterrupt:
        err.print(f"Interrupted. Every completed epoch is saved in {store.root}; run the "
                  f"same command again to resume:\n  cnnbench {shlex.join(sys.argv[1:])}",
                  soft_wrap=True)
        return EXIT_INTERRUPTED
    except ExecutorError as e:
        err.print(f"cnnbench run: error: {e}", soft_wrap=True)
        return 1
    finally:
        executor.close()
    ablation = None
    if plan.ablations:
        from cnnbench.study.ablation import run_map
        ablation = (plan.ablations, plan.claims,
                    run_map(plan.ablations, plan.training, plan.seeds, precision,
                            dataset.fingerprint()))
    paths, lines = write_study_report(store, run_ids, dataset, plan.out, ablation=ablation)
    console.print()
    for line in lines:
        console.print(f"- {line}", soft_wrap=True)
    console.print(f"Report:  {paths['html']}\n         {paths['md']}")
    return 0


@dataclass(frozen=True)
class _Ready:
    """What ``run`` made of its plan: the store, the data, where the runs train, and what
    every seed's result files record beside the runs."""

    store: Any  # RunStore
    dataset: Any  # Dataset
    device: Any  # torch.device
    executor: Any  # Executor
    env: dict
    data_doc: dict  # results.json's "dataset"
    reference: dict  # the notebook's numbers, on MNIST


def _data_doc(dataset, n_train: int) -> dict:
    return {"name": dataset.info.name, "source": dataset.source,
            "fingerprint": dataset.fingerprint(), "sha256": dataset.hashes(),
            "classes": list(dataset.info.classes), "train_images": n_train,
            "test_images": len(dataset.x_test), "class_counts": dataset.class_counts()}


def _studies(plan, group, ready: _Ready, console):
    """Each seed's study of ``group`` through the store: (its config, its outcomes), seed
    after seed; a remote executor takes every seed's jobs at once."""
    from cnnbench.study.driver import run_studies
    from cnnbench.study.runner import StudyRunner
    from cnnbench.train.progress import KerasProgress
    configs = plan.configs(group)

    def callbacks_for(seed):
        def callbacks(spec):
            console.rule(spec.name if len(configs) == 1 else f"{spec.name}, seed {seed}")
            return [KerasProgress(console, spec.name)]
        return callbacks

    runners = [StudyRunner(ready.store, ready.dataset, config, ready.device, force=plan.force,
                           log=lambda m: console.print(m, highlight=False),
                           callbacks=callbacks_for(config.seed), loggers=plan.loggers,
                           executor=ready.executor) for config in configs]
    if ready.executor.remote:
        every = run_studies(runners, group.specs)
        yield from zip(configs, every, strict=True)
    else:
        for config, runner in zip(configs, runners, strict=True):
            yield config, runner.run(group.specs)


def _print_seed(plan, group, config, outcomes, ready: _Ready, console) -> None:
    """One seed's results.json, history.csv, plots, table and run ids, from the store."""
    from cnnbench.atomic import output_path
    from cnnbench.report.figures import plot_history
    from cnnbench.report.files import results_document, write_results
    from cnnbench.report.table import summary_table
    out, store = plan.out_for(group, config.seed), ready.store
    records = [o.record for o in outcomes]
    reused = [o.record.model for o in outcomes if o.origin == "reused"]
    if reused:
        console.print(f"Reused from {store.root}: {', '.join(reused)} (--force trains "
                      f"again)")
    json_path, csv_path = write_results(out, results_document(records, config, ready.data_doc,
                                                              ready.env))
    plots = [plot_history(r.spec.name, r.history, output_path(out, r.spec.name, ".png"),
                          ready.reference.get(r.spec.name, {}).get("history"))
             for r in records]
    rows = [{"spec": r.spec, "test_loss": r.test_loss, "test_accuracy": r.test_accuracy,
             "seconds": r.train_seconds, "status": r.status} for r in records]
    console.print()
    console.print(summary_table(rows))
    console.print(f"Results: {json_path}\nHistory: {csv_path}")
    for p in plots:
        console.print(f"Plot:    {p}")
    for o in outcomes:
        console.print(f"Run:     {o.run_id} ({o.record.model}, {o.origin}; weights: "
                      f"{store.folder(o.run_id) / 'weights.safetensors'})")
    retried = [f"{o.record.model} ({o.retries} retr{'y' if o.retries == 1 else 'ies'})"
               for o in outcomes if o.retries]
    if retried:
        console.print(f"Retried after a worker died: {', '.join(retried)}")


def cmd_ablate(args: argparse.Namespace) -> int:
    """A one-ablation study built from the command line, run as 'run' runs a study file."""
    from cnnbench.model.spec import get_spec
    from cnnbench.study.studyfile import build_study
    from cnnbench.study.variants import parse_vary
    base = get_spec(args.base)
    factors = dict(parse_vary(v, base) for v in args.vary)
    name = f"ablate-{base.name}"
    args.built_study = build_study(
        {"name": name, "ablations": [{"name": name, "base": args.base, "design": args.design,
                                      "factors": factors}]}, "cnnbench ablate", Path.cwd())
    args.study, args.models, args.model_file = None, None, []
    return cmd_run(args)


def cmd_import_keras(args: argparse.Namespace) -> int:
    from cnnbench.model.keras_import import import_keras, write_specs
    result = import_keras(args.file)
    console = _console()
    written = {p.stem: p for p in write_specs(result, args.out)}
    for m in result.models:
        if m.spec is not None:
            console.print(f"{m.name} ({m.where}): {len(m.spec.layers)} layers, "
                          f"{m.spec.params:,} parameters -> {written[m.name]}")
        else:
            console.print(f"{m.name} ({m.where}): not translated")
        for line in m.problems:
            console.print(f"  cannot translate: {line}")
        for line in m.notes:
            console.print(f"  note: {line}")
    for line in result.problems:
        console.print(f"cannot translate: {line}")
    if result.skipped_blocks:
        console.print(f"skipped {len(result.skipped_blocks)} code block(s) that are not Python "
                      f"(outputs?): {', '.join(result.skipped_blocks)}")
    if not result.models:
        print(f"cnnbench import-keras: error: {args.file}: no Sequential model found "
              f"(looked for 'model = Sequential()' and 'Sequential([...])').", file=sys.stderr)
        return EXIT_USAGE
    return 0 if len(written) == len(result.models) and not result.problems else 1


def _weights_path(ref: str, store_root: Path | None) -> Path:
    """A weights file as given, else the final weights of the run it names in the store."""
    if Path(ref).is_file():
        return Path(ref)
    from cnnbench.store.run_store import RunStore
    store = RunStore(store_root, create=False)
    rid = store.resolve(ref)
    path = store.folder(rid) / "weights.safetensors"
    if store.weights_left_out(rid):
        raise UsageError(f"run {rid} was unpacked from {store.imported(rid).get('from')} "
                         f"without its weights (`cnnbench pack --no-weights`): pack it with "
                         f"its weights, or train it here with `cnnbench run ... --force`")
    if not path.is_file():
        raise UsageError(f"run {ref} in {store.root} has no final weights (not finished?)")
    return path


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from cnnbench.model.predict import ImageError, predict, preprocess_image, save_preview
    from cnnbench.model.weights import load_weights
    args.weights = _weights_path(args.weights, args.store)
    loaded = load_weights(args.weights)
    if tuple(loaded.spec.input_shape) != (28, 28, 1):
        raise UsageError(f"{args.weights}: the model takes {list(loaded.spec.input_shape)} "
                         f"inputs; predict makes 28x28 grayscale ones.")
    console = _console()
    console.print(f"{loaded.spec.name} ({loaded.dataset or 'unknown dataset'}, "
                  f"{len(loaded.classes)} classes) from {args.weights}")
    failed = 0
    for path in args.images:
        try:
            pre = preprocess_image(path)
        except ImageError as e:
            print(f"cnnbench predict: error: {e}", file=sys.stderr)
            failed += 1
            continue
        (ranked,) = predict(loaded.model, np.stack([pre.image]), loaded.classes, args.top)
        shown = ", ".join(f"{name} {100 * p:.1f} %" for name, p in ranked)
        console.print(f"{path}: {shown}" + ("  (light background inverted)"
                                            if pre.inverted else ""))
        if args.show:
            console.print(f"  input seen: {save_preview(pre, path)}")
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnbench.model.export import SUFFIX, export
    from cnnbench.model.weights import load_weights
    from cnnbench.store.run_store import default_root, is_inside
    weights = _weights_path(args.weights, args.store)
    loaded = load_weights(weights)
    root = args.store or default_root()
    out = args.out
    if out is None and is_inside(root, weights):
        # beside a stored run's weights would be inside the store: the current folder instead
        out = Path(f"{loaded.spec.name}-{weights.parent.name}{SUFFIX[args.format]}")
    if out is not None and is_inside(root, out):
        raise UsageError(f"--out {out} is inside the run store {root}, whose files only "
                         f"cnnbench writes (it could overwrite a run's weights); give a path "
                         f"outside it")
    try:
        path = export(loaded, args.format, out)
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        target = out or weights.with_suffix(SUFFIX[args.format])
        raise OSError(e.errno, e.strerror, str(target)) from e  # name the file
    _console().print(f"{args.format}: {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cnnbench.report.runs import runs_table
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    console = _console()
    rows = store.runs()
    if not rows:
        console.print(f"No runs in {store.root}.")
        return 0
    console.print(runs_table(store, rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cnnbench.report.runs import show_run
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    show_run(_console(), store, store.resolve(args.run))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
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


def cmd_pack(args: argparse.Namespace) -> int:
    from cnnbench.store.pack import pack
    from cnnbench.store.run_store import RunStore, is_inside
    store = RunStore(args.store, create=False)
    if is_inside(store.root, args.out):
        raise UsageError(f"--out {args.out} is inside the run store {store.root}, whose files "
                         f"only cnnbench writes; give a path outside it")
    ids = [store.resolve(r) for r in args.runs] or store.done_ids()
    if not ids:
        raise UsageError(f"no finished runs in {store.root} to pack")
    packed = pack(store, ids, args.out, weights=not args.no_weights)
    size = args.out.stat().st_size
    _console().print(f"Packed {len(packed)} run(s) "
                     f"{'without' if args.no_weights else 'with'} their weights into "
                     f"{args.out} ({size / 1e6:.2f} MB)", soft_wrap=True)
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from cnnbench.store.pack import unpack
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store)
    console = _console()
    for path in args.packs:
        results = unpack(store, path)
        for u in results:
            console.print(f"{u.action} {u.run_id} ({u.model}, seed {u.seed}"
                          f"{'' if u.weights else ', without weights'})"
                          + (f": {u.reason}" if u.reason else ""), soft_wrap=True)
        added = sum(u.action != "kept" for u in results)
        console.print(f"{path}: {added} of {len(results)} run(s) added to {store.root}",
                      soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnbench.report.build import write_study_report
    from cnnbench.store.run_store import RunStore
    store = RunStore(args.store, create=False)
    if args.runs:
        ids = [store.resolve(r) for r in args.runs]
    else:
        ids = store.done_ids()
    rows = [store.get(i) for i in ids]
    datasets = sorted({r.dataset for r in rows if r is not None})
    if len(datasets) != 1:
        raise UsageError(f"a report compares runs on one dataset; these runs are on "
                         f"{', '.join(datasets) or 'none'}: name the runs to report")
    err = _console(stderr=True)
    dataset = _load_data(None if args.data_dir else datasets[0], args.data_dir, None,
                         log=lambda m: err.print(m, soft_wrap=True))
    _check_same_data(store, ids, dataset, args.data_dir)
    paths, lines = write_study_report(store, ids, dataset, args.out)
    console = _console()
    for line in lines:
        console.print(f"- {line}", soft_wrap=True)
    console.print(f"Report of {len(ids)} run(s): {paths['html']}\n  {paths['md']}")
    return 0


def _check_same_data(store, ids, dataset, data_dir) -> None:
    """A report's confusion matrices and tests compare predictions with these labels: refuse
    data other than the runs' (fingerprint of the four arrays)."""
    fp = dataset.fingerprint()
    for rid in ids:
        try:
            theirs = store.read_config(rid)["dataset"]["fingerprint"]
        except (OSError, ValueError, KeyError):
            continue  # a run without its config: the report says what it lacks
        if theirs != fp:
            raise UsageError(f"run {rid} was trained on data with fingerprint {theirs[:16]}..., "
                             f"but {data_dir or dataset.info.name} has {fp[:16]}...; a report "
                             f"needs the runs' own data (give its --data-dir)")


COMMANDS = {"run": cmd_run, "ablate": cmd_ablate, "models": cmd_models, "summary": cmd_summary,
            "runs": cmd_runs, "show": cmd_show, "rm": cmd_rm, "report": cmd_report,
            "pack": cmd_pack, "unpack": cmd_unpack, "import-keras": cmd_import_keras,
            "predict": cmd_predict, "export": cmd_export}


def _os_error(e: OSError) -> str:
    """An OSError in one line: what failed, on which path (no errno number, no repr)."""
    if e.strerror is None:
        return str(e) or type(e).__name__
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return f"{e.strerror}: {paths}" if paths else e.strerror


def main(argv: list[str] | None = None) -> int:
    """Run a command; each error is one line on stderr and the exit code its class chooses
    (errors.py): 2 for what the user gave, 1 for what failed while running it."""
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
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
