"""Does bf16 change the comparison? Test accuracy over seeds, fp32 vs bf16, same everything else.

    python bench/bench_precision.py --seeds 0 1 2 --epochs 1     # trains both, here and now
    python bench/bench_precision.py --runs results/notebook-fp32-seeds.tar.gz STORE  # finished
        # runs: run stores or packs, grouped by model and precision (12 epochs, full data)

For each model prints mean ± std (over seeds) per precision, the difference with its 95 %
Welch interval and p, and whether the bf16 mean lies within the fp32 seed-to-seed spread
(|mean difference| <= the larger std, or <= 0.3 points). Writes bench/out/bench_precision.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cnnbench.analysis.effects import welch
from cnnbench.data.datasets import load_dataset
from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.model.build import build_model
from cnnbench.model.spec import get_spec, list_models
from cnnbench.train.engine import TrainConfig, fit


def train_both(models: list[str], seeds: list[int], epochs: int, train_limit: int | None,
               console: Console) -> tuple[dict, dict]:
    """Train every model, seed and precision here: accuracies (%) and seconds."""
    ds = load_dataset(log=lambda m: None)
    xt, yt = images_to_tensor(ds.x_train), labels_to_tensor(ds.y_train)
    xv, yv = images_to_tensor(ds.x_test), labels_to_tensor(ds.y_test)
    acc: dict[str, dict[str, list[float]]] = {}
    secs: dict[str, dict[str, list[float]]] = {}
    for name in models:
        acc[name], secs[name] = {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                torch.manual_seed(seed)
                cfg = TrainConfig(epochs=epochs, seed=seed, precision=precision,
                                  train_limit=train_limit)
                r = fit(build_model(get_spec(name)), xt, yt, xv, yv, cfg)
                acc[name][precision].append(100 * r.test_accuracy)
                secs[name][precision].append(sum(r.history["seconds"]) / epochs)
                console.print(f"{name} seed {seed} {precision}: {100 * r.test_accuracy:.2f} % "
                              f"in {sum(r.history['seconds']):.1f} s")
    return acc, secs


def from_runs(paths: list[Path]) -> tuple[dict, dict, str]:
    """The finished runs of run stores (folders) or packs (.tar.gz), by model and precision:
    accuracies (%), seconds an epoch, and a line saying what they are."""
    from cnnbench.store.pack import unpack
    from cnnbench.store.run_store import RunStore

    acc: dict[str, dict[str, list[float]]] = {}
    secs: dict[str, dict[str, list[float]]] = {}
    what: set[tuple] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths):
            store = RunStore(path) if path.is_dir() else RunStore(Path(tmp) / str(i))
            if not path.is_dir():
                unpack(store, path)
            for rid in store.done_ids():
                r = store.record(rid)
                if r.status != "finished":
                    continue
                p = r.config["precision"]
                acc.setdefault(r.model, {"fp32": [], "bf16": []})[p].append(
                    100 * r.test_accuracy)
                h = r.history["seconds"]
                secs.setdefault(r.model, {"fp32": [], "bf16": []})[p].append(sum(h) / len(h))
                what.add((len(h), r.config["train_limit"], p, r.seed))
    epochs = sorted({w[0] for w in what})
    seeds = {p: sorted({w[3] for w in what if w[2] == p}) for p in ("fp32", "bf16")}
    return acc, secs, (f"{'/'.join(map(str, epochs))} epochs, fp32 seeds {seeds['fp32']}, "
                       f"bf16 seeds {seeds['bf16']}")


def markdown_rows(acc: dict[str, dict[str, list[float]]]) -> list[str]:
    """The README's table of finished runs: mean ± std per precision, the difference with its
    95 % Welch interval and p."""
    rows = []
    for name, by in acc.items():
        f, b = by["fp32"], by["bf16"]
        diff, (lo, hi), p = welch(b, f)
        ci = "stuck in both" if p != p else f"{lo:+.2f} to {hi:+.2f}, p={p:.2f}"
        rows.append(f"| {name} | {statistics.mean(f):.2f} ± {statistics.stdev(f):.2f} | "
                    f"{statistics.mean(b):.2f} ± {statistics.stdev(b):.2f} | {diff:+.2f} ({ci}) |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models("CNN_MNIST_*"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--runs", nargs="+", type=Path, metavar="STORE|PACK",
                    help="compare these finished runs instead of training")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "out" / "bench_precision.json")
    args = ap.parse_args()
    console = Console(width=160)
    if args.runs:
        acc, secs, what = from_runs(args.runs)
        args.models = [m for m in args.models if m in acc]
    else:
        acc, secs = train_both(args.models, args.seeds, args.epochs, args.train_limit, console)
        what = f"{args.epochs} epoch(s), seeds {args.seeds}"
    table = Table(title=f"Test accuracy (%): {what}")
    # Seconds only where both precisions ran here, now: stored runs may come from anywhere.
    timed = not args.runs
    for col in ("model", "fp32 mean ± std", "bf16 mean ± std", "bf16 - fp32 [95 % CI]", "p",
                "within spread") + (("s/epoch fp32", "s/epoch bf16") if timed else ()):
        table.add_column(col, justify="left" if col == "model" else "right")
    out = {}
    for name in args.models:
        f, b = acc[name]["fp32"], acc[name]["bf16"]
        sf = statistics.stdev(f) if len(f) > 1 else 0.0
        sb = statistics.stdev(b) if len(b) > 1 else 0.0
        diff, (lo, hi), p = welch(b, f)
        ok = abs(diff) <= max(sf, sb, 0.3)
        out[name] = {"fp32": f, "bf16": b, "difference": diff, "ci95": [lo, hi], "p": p,
                     "within_spread": ok, "seconds": secs[name]}
        seconds = (f"{statistics.mean(secs[name]['fp32']):.1f}",
                   f"{statistics.mean(secs[name]['bf16']):.1f}") if timed else ()
        table.add_row(name, f"{statistics.mean(f):.2f} ± {sf:.2f}",
                      f"{statistics.mean(b):.2f} ± {sb:.2f}",
                      f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{p:.2f}",
                      "yes" if ok else "NO", *seconds)
    console.print(table)
    if args.runs:
        print("\n".join(markdown_rows({m: acc[m] for m in args.models})))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
