"""The short form of a study file with one ablation: e.g. 'cnnbench ablate CNN_MNIST_2 --vary
activation=sigmoid,relu --seeds 3'. Validates on a holdout (--validation-split, default 0.1)."""

from __future__ import annotations

import argparse

from cnnbench.cli._study_options import overrides, study_options


def PARENTS() -> list[argparse.ArgumentParser]:
    return [study_options()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="the base model: a built-in name or a spec file")
    p.add_argument("--vary", action="append", required=True, metavar="FACTOR=L1,L2",
                   help="a factor and its levels (the first is the base): activation, norm "
                        "(batchnorm, dropout, dropout0.2, none), lr, batch_size, optimizer, "
                        "width, or SELECTOR.argument (e.g. Conv2D#4.use_bias=false,true); "
                        "repeatable")
    p.add_argument("--design", choices=("factorial", "ofat"), default="factorial",
                   help="factorial (every combination, default) or ofat (one factor at a "
                        "time around the base)")


def run(args: argparse.Namespace) -> int:
    from cnnbench.cli.run import train_and_report
    from cnnbench.study.plan import ablation_study, build_plan
    study = ablation_study(args.base, args.vary, args.design)
    return train_and_report(build_plan(study, overrides(args)))
