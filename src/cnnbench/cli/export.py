"""Export trained weights: the exported model outputs class probabilities for float32
N x 1 x 28 x 28 inputs in [0, 1]."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli._common import console, weights_parent, weights_path


def PARENTS() -> list[argparse.ArgumentParser]:
    return [weights_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"),
                   help="onnx needs the export extra: pip install 'cnnbench[export]'")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="output file, written whole or not at all; never the weights file "
                        "itself nor inside a run store (default: in the current folder, "
                        "MODEL-RUNID.SUFFIX for a run, WEIGHTS's name with the format's "
                        "suffix for a file)")


def run(args: argparse.Namespace) -> int:
    from cnnbench.model.export import export
    from cnnbench.model.weights import load_weights
    from cnnbench.store.run_store import default_root
    weights = weights_path(args.weights, args.store)
    loaded = load_weights(weights)
    path = export(loaded, args.format, args.out, store=args.store or default_root())
    console().print(f"{args.format}: {path}")
    return 0
