"""Does bf16 change the comparison? Test accuracy over seeds, fp32 vs bf16, same everything else.

    python bench/bench_precision.py --seeds 0 1 2 --epochs 1

For each model prints mean ± std (over seeds) per precision, and whether the bf16 mean lies
within the fp32 seed-to-seed spread (|mean difference| <= the larger std, or <= 0.3 points).
Writes bench/out/bench_precision.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cnnbench.data.datasets import load_dataset
from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.model.build import build_model
from cnnbench.model.spec import get_spec, list_models
from cnnbench.train.engine import TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models("CNN_MNIST_*"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "out" / "bench_precision.json")
    args = ap.parse_args()
    ds = load_dataset(log=lambda m: None)
    xt, yt = images_to_tensor(ds.x_train), labels_to_tensor(ds.y_train)
    xv, yv = images_to_tensor(ds.x_test), labels_to_tensor(ds.y_test)
    console = Console(width=160)
    acc: dict[str, dict[str, list[float]]] = {}
    secs: dict[str, dict[str, list[float]]] = {}
    for name in args.models:
        acc[name], secs[name] = {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                torch.manual_seed(seed)
                cfg = TrainConfig(epochs=args.epochs, seed=seed, precision=precision,
                                  train_limit=args.train_limit)
                r = fit(build_model(get_spec(name)), xt, yt, xv, yv, cfg)
                acc[name][precision].append(100 * r.test_accuracy)
                secs[name][precision].append(sum(r.history["seconds"]))
                console.print(f"{name} seed {seed} {precision}: {100 * r.test_accuracy:.2f} % "
                              f"in {sum(r.history['seconds']):.1f} s")
    table = Table(title=f"Test accuracy (%) after {args.epochs} epoch(s), seeds {args.seeds}")
    for col in ("model", "fp32 mean ± std", "bf16 mean ± std", "difference", "within spread",
                "s/epoch fp32", "s/epoch bf16"):
        table.add_column(col, justify="left" if col == "model" else "right")
    out = {}
    for name in args.models:
        f, b = acc[name]["fp32"], acc[name]["bf16"]
        sf = statistics.stdev(f) if len(f) > 1 else 0.0
        sb = statistics.stdev(b) if len(b) > 1 else 0.0
        diff = statistics.mean(b) - statistics.mean(f)
        ok = abs(diff) <= max(sf, sb, 0.3)
        out[name] = {"fp32": f, "bf16": b, "difference": diff, "within_spread": ok,
                     "seconds": secs[name]}
        table.add_row(name, f"{statistics.mean(f):.2f} ± {sf:.2f}",
                      f"{statistics.mean(b):.2f} ± {sb:.2f}", f"{diff:+.2f}",
                      "yes" if ok else "NO",
                      f"{statistics.mean(secs[name]['fp32']) / args.epochs:.1f}",
                      f"{statistics.mean(secs[name]['bf16']) / args.epochs:.1f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
