"""The ``cnnbench`` command: parse, call, print. torch is imported only by commands that train."""

from __future__ import annotations

import argparse
import os
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
    run.add_argument("--seed", type=_int, help="seed for weights, dropout, shuffling (default 0)")
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
    run.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                     help="fp32 (default: the notebook's arithmetic), bf16 autocast, or auto "
                          "(bf16 on CUDA and on CPUs with native bf16)")

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
    pred.add_argument("weights", type=Path, metavar="WEIGHTS",
                      help="a .safetensors file written by 'cnnbench run' or 'export'")
    pred.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    pred.add_argument("--top", type=_positive_int, default=3, help="classes shown (default 3)")
    pred.add_argument("--show", action="store_true",
                      help="save the 28x28 input the model saw beside each image "
                           "(NAME.cnnbench.png)")

    exp = sub.add_parser("export", help="export trained weights to ONNX, TorchScript or "
                                        "safetensors",
                         description="The exported model outputs class probabilities for "
                                     "float32 N x 1 x 28 x 28 inputs in [0, 1].")
    exp.add_argument("weights", type=Path, metavar="WEIGHTS",
                     help="a .safetensors file written by 'cnnbench run'")
    exp.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    exp.add_argument("--out", type=Path, metavar="PATH",
                     help="output file (default: beside WEIGHTS, with the format's suffix)")

    sub.add_parser("models", help="list the built-in models")

    summary = sub.add_parser("summary", help="a Keras-style summary of a model")
    summary.add_argument("name", help="a built-in model name or a spec file")
    return p


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
        probe = out / ".cnnbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write results to {out}: {e.strerror}") from e


def _plan(args: argparse.Namespace) -> dict:
    """Models, data and settings from the study file, overridden by the options given."""
    from .spec import get_spec, list_models
    from .studyfile import is_model_spec, load_study

    if args.study and is_model_spec(args.study):
        args.model_file = [args.study, *args.model_file]  # 'run my_model.yaml' works too
        args.study = None
    study = load_study(args.study) if args.study else None
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
        raise ValueError(f"the model name(s) {dupes} appear twice; results are keyed by "
                         f"model name, give each spec its own 'name'.")
    config: dict = study.train_config_kwargs() if study else {}
    for key in ("epochs", "batch_size", "train_limit"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    seeds = [args.seed] if args.seed is not None else list(study.seeds) if study else [0]
    return {"specs": specs, "config": config, "seeds": seeds,
            "dataset": args.dataset or (study.dataset if study else None),
            "data_dir": args.data_dir or (study.data_dir if study else None)}


def _load_data(name: str | None, data_dir: Path | None, class_names: Path | None, log):
    from .data import DATASETS, DataError, load_dataset, load_folder
    if name is not None and name not in (*DATASETS, "custom"):
        raise DataError(f"unknown dataset '{name}'. Known: {', '.join(DATASETS)}; for your "
                        f"own idx files use --data-dir DIR (with --dataset custom if needed).")
    if name == "custom" and data_dir is None:
        raise DataError("--dataset custom needs --data-dir DIR with the idx files.")
    if name in (None, "custom") and data_dir is not None:
        return load_folder(data_dir, class_names, log=log, custom=name == "custom")
    return load_dataset(name or "mnist", data_dir=data_dir, log=log)


def cmd_run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    specs = plan["specs"]
    _check_writable(args.out)

    import torch

    from .engine import TrainConfig, resolve_device, resolve_precision
    from .progress import KerasProgress
    from .report.figures import notebook_reference, plot_history
    from .report.files import results_document, write_results
    from .report.table import summary_table
    from .spec import check_classes, check_input_shape
    from .study import environment, run_study
    from .weights import save_weights

    console, err = _console(), _console(stderr=True)
    dataset = _load_data(plan["dataset"], plan["data_dir"], args.class_names,
                         log=lambda m: err.print(m))
    image_shape = (*dataset.x_train.shape[1:], 1)
    for spec in specs:  # fail before any training time is spent
        check_input_shape(spec, image_shape)
        check_classes(spec, dataset.num_classes)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    configs = [TrainConfig(seed=seed, precision=precision, **plan["config"])
               for seed in plan["seeds"]]
    train_limit = configs[0].train_limit
    n_train = min(len(dataset.x_train), train_limit or len(dataset.x_train))
    console.print(f"Train on {n_train} samples, validate on {len(dataset.x_test)} samples "
                  f"({dataset.info.name}, {configs[0].optimizer_label()}, {device}, "
                  f"{precision}, {torch.get_num_threads()} threads)")

    env = environment(device)
    data_doc = {"name": dataset.info.name, "source": dataset.source,
                "fingerprint": dataset.fingerprint(), "sha256": dataset.hashes(),
                "classes": list(dataset.info.classes), "train_images": n_train,
                "test_images": len(dataset.x_test), "class_counts": dataset.class_counts()}
    reference = notebook_reference() if dataset.info.name == "mnist" else {}
    for config in configs:
        out = args.out if len(configs) == 1 else args.out / f"seed-{config.seed}"

        def callbacks(spec, seed=config.seed):
            console.rule(spec.name if len(configs) == 1 else f"{spec.name}, seed {seed}")
            return [KerasProgress(console, spec.name)]

        results = run_study(specs, dataset, config, device, callbacks)
        json_path, csv_path = write_results(out, results_document(results, data_doc, env))
        plots = [plot_history(r.spec.name, r.result.history, out / f"{r.spec.name}.png",
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
        for r in results:
            if r.model is not None and r.result.status == "finished":
                w = save_weights(out / f"{r.spec.name}.safetensors", r.model, r.spec,
                                 dataset.info.classes, dataset.info.name)
                console.print(f"Weights: {w}")
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from .keras_import import import_keras, write_specs
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


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .predict import ImageError, predict, preprocess_image, save_preview
    from .weights import load_weights
    loaded = load_weights(args.weights)
    if tuple(loaded.spec.input_shape) != (28, 28, 1):
        raise ValueError(f"{args.weights}: the model takes {list(loaded.spec.input_shape)} "
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
    from .export import export
    from .weights import load_weights
    path = export(load_weights(args.weights), args.format, args.out)
    _console().print(f"{args.format}: {path}")
    return 0


COMMANDS = {"run": cmd_run, "models": cmd_models, "summary": cmd_summary,
            "import-keras": cmd_import_keras, "predict": cmd_predict, "export": cmd_export}


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
