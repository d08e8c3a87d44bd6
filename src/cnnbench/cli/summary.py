"""A Keras-style summary of a model (layers, output shapes, parameters, MACs), of one of its
variants, or the variants of a study with ablations."""

from __future__ import annotations

import argparse

from cnnbench.cli._common import console


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a built-in model name or a spec file; or a study with "
                                "ablations (e.g. notebook-claims): its variants")
    p.add_argument("--vary", action="append", default=[], metavar="FACTOR=LEVEL",
                   help="the variant of NAME with this level (as for 'ablate'); repeatable")
    p.add_argument("--variant", metavar="NAME",
                   help="with a study: the summary of this variant")


def run(args: argparse.Namespace) -> int:
    from cnnbench.report.table import model_summary, variants_table
    from cnnbench.study.summary import summary_target
    out = console()
    spec, listing = summary_target(args.name, args.vary, args.variant)
    if listing is not None:
        out.print(variants_table(*listing))
        return 0
    assert spec is not None
    table, totals = model_summary(spec)
    out.print(table)
    for line in totals:
        out.print(" " + line)
    return 0
