"""The fused Adadelta update: cnnbench's C loop vs torch.compile's kernel vs the eager form.

One invocation times each on the same tensors, interleaved, median of the rounds: a small
tensor (where the cost of a call dominates) and CNN_MNIST_1's 3136x1024 Dense kernel.

    python bench/bench_adadelta.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from cnnbench.data.datasets import default_cache_dir
from cnnbench.train import fastpath
from cnnbench.train.native_adadelta import load

LR, RHO, EPS = 1.0, 0.95, 1e-7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    native = load(default_cache_dir())
    compiled = fastpath._compiled_update(LR, RHO, EPS, False, "cpu")
    kinds = {
        "C loop": lambda p, g, s, a: native.update(p, g, s, a, None, LR, RHO, EPS),
        "torch.compile": compiled,
        "eager form": lambda p, g, s, a: fastpath._adadelta_update(p, g, s, a, LR, RHO, EPS,
                                                                 sqrt=fastpath._sqrt),
    }
    table = Table(title=f"Adadelta update of one tensor, {args.threads} thread(s): us a call")
    table.add_column("elements", justify="right")
    for name in kinds:
        table.add_column(name, justify="right")
    for n, calls in ((500, 2000), (3136 * 1024, 5)):
        tensors = [torch.rand(n) for _ in range(4)]
        times: dict[str, list[float]] = {name: [] for name in kinds}
        with torch.no_grad():
            for fn in kinds.values():
                fn(*tensors)  # warm
            for _ in range(args.rounds):
                for name, fn in kinds.items():
                    t = time.perf_counter()
                    for _ in range(calls):
                        fn(*tensors)
                    times[name].append((time.perf_counter() - t) / calls * 1e6)
        table.add_row(f"{n:,}", *(f"{statistics.median(times[k]):,.1f}" for k in kinds))
    Console().print(table)


if __name__ == "__main__":
    main()
