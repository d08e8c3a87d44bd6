"""The built-in models, one line each: layers in the notebook's shorthand, parameters."""

from __future__ import annotations

import argparse

from cnnbench.cli._common import console


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from cnnbench.model.spec import get_spec, list_models
    from cnnbench.report.table import models_table
    console().print(models_table([get_spec(n) for n in list_models()]))
    return 0
