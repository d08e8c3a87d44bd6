"""Where a training step's time goes: a per-op profile of the engine's step, by category.

For each seed model and precision, the step ``engine.make_train_step`` builds (the one ``fit``
runs: channels-last, fused Adadelta, bf16 weight copies) is warmed up, then ``--steps`` steps
are profiled with ``torch.profiler``. Each op's *self* CPU time (its children excluded, so
nothing counts twice) goes to one category: convolution, GEMM (Dense), pooling, activation,
BatchNorm, dropout, layout reorders and casts, the loss, the optimizer, other.

    python bench/profile_step.py                     # the four seed models, fp32 and bf16
    python bench/profile_step.py --models CNN_MNIST_2 --precisions fp32 --top 15

Prints one table per precision (ms a step and share per category) and writes
bench/out/profile_step.json, with every op's time, for a closer look.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity, profile

from cnnbench.model.build import build_model
from cnnbench.model.spec import get_spec, list_models
from cnnbench.train.engine import TrainConfig, make_train_step
from cnnbench.train.precision import cpu_has_bf16

# First match wins; patterns are matched against the op's name, lower-cased.
CATEGORIES: list[tuple[str, str]] = [
    ("optimizer", r"compiled|torchinductor|adadelta|_foreach|cpp_fused|graph_"),
    ("activation", r"clamp_min"),  # torch's CPU relu is clamp_min(0)
    ("loss", r"log_softmax|nll_loss|softmax|clamp|\blog\b|aten::log"),
    ("convolution", r"conv|mkldnn_convolution"),
    ("gemm (Dense)", r"addmm|\bmm\b|aten::mm|linear|matmul|bmm|onednnlinear"),
    ("pooling", r"pool"),
    ("batchnorm", r"batch_norm"),
    ("dropout", r"bernoulli|dropout|uniform_|aten::ge$"),  # KerasDropout: uniform, compare
    ("activation", r"relu|sigmoid|threshold|tanh|elu|gelu"),
    ("reorder / cast", r"copy_|_to_copy|\bto\b|aten::to|contiguous|clone|reorder|as_strided"
                       r"|view|reshape|permute|transpose|aten::t$"),
]
ORDER = [c for c, _ in CATEGORIES] + ["other"]


def category(name: str) -> str:
    low = name.lower()
    for cat, pattern in CATEGORIES:
        if re.search(pattern, low):
            return cat
    return "other"


def profile_step(model_name: str, precision: str, steps: int, warmup: int,
                 batch: int) -> dict:
    torch.manual_seed(0)
    model = build_model(get_spec(model_name))
    step = make_train_step(model, TrainConfig(precision=precision))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    step.wait_compiled()  # the fused optimizer step, compiled before anything is timed
    for _ in range(warmup):  # warms oneDNN's caches
        step(x, y)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y)
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    ops = {}
    for e in prof.key_averages():
        if e.self_cpu_time_total > 0:
            ops[e.key] = e.self_cpu_time_total / 1e3 / steps  # ms a step
    by_cat: dict[str, float] = defaultdict(float)
    for name, ms in ops.items():
        by_cat[category(name)] += ms
    return {"model": model_name, "precision": precision, "steps": steps, "batch": batch,
            "wall_ms_profiled": wall_ms, "self_ms": sum(ops.values()),
            "categories": dict(by_cat), "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models("CNN_MNIST_*"))
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="fp32 and bf16 (default: bf16 only where the CPU has bf16 units)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--top", type=int, default=0, help="also print the N costliest ops")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precisions = args.precisions or (["fp32", "bf16"] if cpu_has_bf16() else ["fp32"])
    console = Console()
    results = []
    for precision in precisions:
        table = Table(title=f"Self CPU time of one training step, {precision}, batch "
                            f"{args.batch}, {args.threads} threads: ms (share)")
        table.add_column("category")
        rows = []
        for m in args.models:
            r = profile_step(m, precision, args.steps, args.warmup, args.batch)
            results.append(r)
            rows.append(r)
            table.add_column(m, justify="right")
            if args.top:
                console.print(f"[bold]{m} {precision}[/bold]: the {args.top} costliest ops")
                for name, ms in list(r["ops"].items())[:args.top]:
                    console.print(f"  {ms:8.2f} ms  {category(name):15s} {name}")
        for cat in ORDER:
            table.add_row(cat, *(f"{r['categories'].get(cat, 0):.2f} "
                                 f"({100 * r['categories'].get(cat, 0) / r['self_ms']:.0f} %)"
                                 for r in rows))
        table.add_row("all ops (self)", *(f"{r['self_ms']:.2f}" for r in rows))
        table.add_row("step, wall, profiled", *(f"{r['wall_ms_profiled']:.2f}" for r in rows))
        console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "cpu_bf16": cpu_has_bf16(),
            "argv": sys.argv[1:]}
    (args.out / "profile_step.json").write_text(json.dumps({"meta": meta, "runs": results},
                                                           indent=1))
    console.print(f"wrote {args.out / 'profile_step.json'}")


if __name__ == "__main__":
    main()
