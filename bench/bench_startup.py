"""How long ``cnnbench run`` takes to reach its first training step, with MNIST cached.

Each trial starts a fresh process running ``cnnbench run`` (one model, one epoch, a small
--train-limit, a new store) with ``make_train_step`` wrapped to note the wall-clock time at
which the first step begins and ends; the clock starts just before the process is spawned,
so the figures include the interpreter, the torch import, reading the cached data and
building the model, and the first step's build of the fused optimizer step (its last row
says when that was done).

Two fused steps: cnnbench's C loop (the CPU default) and torch.compile's kernel (its path on
CUDA, and cnnbench's CPU path before). Two cases of each: **cold**, empty caches (the first
run on a machine: cnnbench's kernel cache and TorchInductor's), and **warm**, the caches the
previous trial left (every later run).

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

from cnnbench.data.datasets import default_cache_dir

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
import os
real_build = fastpath._compiled_update if os.environ["FUSED"] == "compiled" else fastpath._build

def build(*a, **k):
    kernel = real_build(*a, **k)
    marks.setdefault("fused_step_built", time.time())
    return kernel

fastpath._build = build
from cnnbench.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(marks, f)
sys.exit(code)
"""

# The fused optimizer step as cnnbench builds it on the CPU, and torch.compile's (its CUDA path).
FUSED = {"native": "C loop (cnnbench's)", "compiled": "torch.compile"}

PHASES = [("python_started", "interpreter up"), ("torch_imported", "torch imported"),
          ("data_loaded", "MNIST read and checked"), ("model_built", "model built"),
          ("step_built", "train step ready (optimizer made)"),
          ("first_step_begins", "first step begins"), ("first_step_done", "first step done"),
          ("fused_step_built", "fused optimizer step built")]


def trial(model: str, cache_dir: Path, work: Path, threads: int, fused: str
          ) -> dict[str, float]:
    marks_file = work / "marks.json"
    args = [sys.executable, "-c", CHILD, str(marks_file), "run", "--models", model,
            "--epochs", "1", "--train-limit", "512", "--threads", str(threads),
            "--store", str(work / "store"), "--out", str(work / "out")]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
           "CNNBENCH_CACHE": str(cache_dir / "cnnbench"), "FUSED": fused}
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
    mnist = default_cache_dir() / "mnist.npz"
    if not mnist.exists():
        raise SystemExit(f"{mnist} is not there: run `cnnbench run --epochs 1` once first")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fused in FUSED:
            cache = Path(tmp) / f"cache-{fused}"  # empty: the cold trial builds the kernel
            (cache / "cnnbench").mkdir(parents=True)
            (cache / "cnnbench" / "mnist.npz").symlink_to(mnist)
            results[fused] = {"cold": [], "warm": []}
            for i in range(1 + args.trials):
                work = Path(tmp) / f"trial-{fused}-{i}"
                work.mkdir()
                results[fused]["cold" if i == 0 else "warm"].append(
                    trial(args.model, cache, work, args.threads, fused))
    table = Table(title=f"cnnbench run --models {args.model}: seconds from spawning the "
                        f"process (MNIST cached, {args.threads} threads)")
    table.add_column("reached")
    for fused in FUSED:
        table.add_column(f"{FUSED[fused]}: cold cache", justify="right")
        table.add_column(f"warm (median of {args.trials})", justify="right")
    for key, label in PHASES:
        row = [label]
        for fused in FUSED:
            r = results[fused]
            warm = statistics.median(t[key] for t in r["warm"]) if r["warm"] else None
            row += [f"{r['cold'][0][key]:.2f}", "-" if warm is None else f"{warm:.2f}"]
        table.add_row(*row)
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_startup.json").write_text(json.dumps(
        {"model": args.model, "threads": args.threads, **results}, indent=1))
    console.print(f"wrote {args.out / 'bench_startup.json'}")


if __name__ == "__main__":
    main()
