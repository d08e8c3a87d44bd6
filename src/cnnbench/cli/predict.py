"""Turn each image (PNG/JPEG, any size, light or dark background) into a 28x28 MNIST-like input
and print the model's top classes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnbench.cli._common import console, typed, weights_parent, weights_path
from cnnbench.constraints import POSITIVE_INT
from cnnbench.errors import EXIT_USAGE, UsageError


def PARENTS() -> list[argparse.ArgumentParser]:
    return [weights_parent()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=typed(POSITIVE_INT), default=3,
                   help="classes shown (default 3)")
    p.add_argument("--show", action="store_true",
                   help="save the 28x28 input the model saw beside each image "
                        "(NAME.cnnbench.png)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cnnbench.model.predict import ImageError, predict, preprocess_image, save_preview
    from cnnbench.model.weights import load_weights
    args.weights = weights_path(args.weights, args.store)
    loaded = load_weights(args.weights)
    if tuple(loaded.spec.input_shape) != (28, 28, 1):
        raise UsageError(f"{args.weights}: the model takes {list(loaded.spec.input_shape)} "
                         f"inputs; predict makes 28x28 grayscale ones.")
    out = console()
    out.print(f"{loaded.spec.name} ({loaded.dataset or 'unknown dataset'}, "
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
        out.print(f"{path}: {shown}" + ("  (light background inverted)"
                                        if pre.inverted else ""))
        if args.show:
            out.print(f"  input seen: {save_preview(pre, path)}")
    return EXIT_USAGE if failed else 0  # an image that cannot be read is bad input
