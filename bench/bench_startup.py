"""How long ``cnnbench run`` takes to reach its first training step, with MNIST cached.

Each trial starts a fresh process running ``cnnbench run`` (one model, one epoch, a small
--train-limit, a new store) with ``make_train_step`` wrapped to note the wall-clock time at
which the first step begins and ends; the clock starts just before the process is spawned,
so the figures include the interpreter, the torch import, reading the cached data and
building the model, and the first step's compilation of the fused optimizer step (its last
row says when the compiler was done).

Two cases: **cold**, an empty TorchInductor cache (the first run on a machine), and **warm**,
the cache the previous trial left (every later run; torch keeps it in
$TORCHINDUCTOR_CACHE_DIR, by default /tmp/torchinductor_$USER).

    python bench/bench_startup.py                 # CNN_MNIST_2, 3 warm trials
    python bench/bench_startup.py --model CNN_MNIST_1 --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CHILD = r"""
import json, sys, time
marks = {"python_started": time.time()}
import torch
marks["torch_imported"] = time.time()
from cnnbench.train import engine
real = engine.make_train_step

def timed(*a, **k):
    step = real(*a, **k)
    marks.setdefault("step_built", time.time())
    def first(*sa, **sk):
        marks.setdefault("first_step_begins", time.time())
        out = step(*sa, **sk)
        marks.setdefault("first_step_done", time.time())
        return out
    first.optimizer = step.optimizer
    return first

engine.make_train_step = timed
from cnnbench import cli
from cnnbench.study import jobs
for module, name, mark in ((cli, "_load_data", "data_loaded"),
                           (jobs, "build_model", "model_built")):
    def wrapped(*a, _real=getattr(module, name), _mark=mark, **k):
        out = _real(*a, **k)
        marks.setdefault(_mark, time.time())
        return out
    setattr(module, name, wrapped)
from cnnbench.train import fastpath
real_compiled = fastpath._compiled

def compiled(*a, **k):  # runs in the thread that compiles the fused step
    kernel = real_compiled(*a, **k)
    marks.setdefault("fused_step_compiled", time.time())
    return kernel

fastpath._compiled = compiled
from cnnbench.cli import main
code = main(sys.argv[2:])
for kernel in fastpath._kernels.values():  # a tiny run can end before the compiler does
    kernel.wait()
with open(sys.argv[1], "w") as f:
    json.dump(marks, f)
sys.exit(code)
"""

PHASES = [("python_started", "interpreter up"), ("torch_imported", "torch imported"),
          ("data_loaded", "MNIST read and checked"), ("model_built", "model built"),
          ("step_built", "train step ready (optimizer made)"),
          ("first_step_begins", "first step begins"), ("first_step_done", "first step done"),
          ("fused_step_compiled", "fused optimizer step compiled")]


def trial(model: str, cache_dir: Path, work: Path, threads: int) -> dict[str, float]:
    marks_file = work / "marks.json"
    args = [sys.executable, "-c", CHILD, str(marks_file), "run", "--models", model,
            "--epochs", "1", "--train-limit", "512", "--threads", str(threads),
            "--store", str(work / "store"), "--out", str(work / "out")]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    t0 = time.time()
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"cnnbench run failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    marks = json.loads(marks_file.read_text())
    return {k: marks[k] - t0 for k, _ in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="CNN_MNIST_2")
    ap.add_argument("--trials", type=int, default=3, help="warm trials after the cold one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()
    console = Console()
    results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "inductor-cache"
        for i in range(1 + args.trials):
            work = Path(tmp) / f"trial-{i}"
            work.mkdir()
            results["cold" if i == 0 else "warm"].append(
                trial(args.model, cache, work, args.threads))
    table = Table(title=f"cnnbench run --models {args.model}: seconds from spawning the "
                        f"process (MNIST cached, {args.threads} threads)")
    table.add_column("reached")
    table.add_column("cold inductor cache", justify="right")
    table.add_column(f"warm (median of {args.trials})", justify="right")
    for key, label in PHASES:
        warm = statistics.median(r[key] for r in results["warm"]) if results["warm"] else None
        table.add_row(label, f"{results['cold'][0][key]:.2f}",
                      "-" if warm is None else f"{warm:.2f}")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_startup.json").write_text(json.dumps(
        {"model": args.model, "threads": args.threads, **results}, indent=1))
    console.print(f"wrote {args.out / 'bench_startup.json'}")


if __name__ == "__main__":
    main()
