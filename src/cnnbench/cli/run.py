"""Train models under identical conditions (defaults: the notebook's study) and write results,
CSV, plots and a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cnnbench.cli._common import console
from cnnbench.cli._study_options import overrides, study_options
from cnnbench.errors import EXIT_FAILURE, EXIT_INTERRUPTED
from cnnbench.study.plan import StudyPlan


def PARENTS() -> list[argparse.ArgumentParser]:
    return [study_options()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", type=Path, metavar="STUDY.yaml",
                   help="a study file naming models, dataset and training settings (or a "
                        "shipped study's name, e.g. notebook-claims, or a model spec); "
                        "options given here override it")
    p.add_argument("--models", nargs="+", metavar="NAME", default=(),
                   help="built-in model names or spec files (default: the four CNN_MNIST_*)")
    p.add_argument("--model-file", action="append", type=Path, default=[], metavar="FILE",
                   help="a model spec file (YAML, Keras layer names); repeatable")


def plan_of(args: argparse.Namespace) -> StudyPlan:
    from cnnbench.study.plan import build_plan, read_study
    study, spec_files = read_study(args.study)
    return build_plan(study, overrides(args, tuple(args.models),
                                       (*spec_files, *args.model_file)))


def run(args: argparse.Namespace) -> int:
    return train_and_report(plan_of(args))


def train_and_report(plan: StudyPlan) -> int:
    """The study, printed as it goes (ConsoleView), then its conclusions and report paths."""
    from cnnbench.cli._run_view import ConsoleView
    from cnnbench.store.run_store import refuse_inside_store
    from cnnbench.study.executors import ExecutorError
    from cnnbench.workflow.run import run_study
    refuse_inside_store(plan.store, plan.out, "--out")
    out, err = console(), console(stderr=True)
    try:
        done = run_study(plan, ConsoleView(out, err))
    except KeyboardInterrupt:
        from cnnbench.store.run_store import default_root
        err.print(f"Interrupted. Every completed epoch is saved in "
                  f"{plan.store or default_root()}; run the "
                  f"same command again to resume:\n  cnnbench {shlex.join(sys.argv[1:])}",
                  soft_wrap=True)
        return EXIT_INTERRUPTED
    except ExecutorError as e:
        err.print(f"cnnbench run: error: {e}", soft_wrap=True)
        return EXIT_FAILURE
    out.print()
    for line in done.conclusions:
        out.print(f"- {line}", soft_wrap=True)
    out.print(f"Report:  {done.report['html']}\n         {done.report['md']}")
    return 0
