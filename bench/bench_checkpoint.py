"""How long a checkpoint takes, per seed model: state capture, encode + checksum, write + fsync,
and load + verify. Prints a table; run from the repository root:

    python bench/bench_checkpoint.py [--repeats 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnbench.model.build import build_model, clipped_categorical_crossentropy
from cnnbench.model.spec import get_spec, list_models
from cnnbench.train.checkpoint import LAST, encode, load_checkpoint, save_checkpoint
from cnnbench.train.engine import TrainResult
from cnnbench.train.optim import make_optimizer
from cnnbench.train.state import training_state


def bench(name: str, folder: Path, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(get_spec(name))
    opt = make_optimizer(model)
    # One real step so that Adadelta's two accumulators exist, as after any epoch.
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    clipped_categorical_crossentropy(model(x), y).backward()
    opt.step()
    result, shuffle = TrainResult(), torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"state": [], "encode": [], "save": [], "load": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = training_state(model, opt, shuffle, result.history)
        t1 = time.perf_counter()
        encode(state)
        t2 = time.perf_counter()
        save_checkpoint(folder, state)  # encodes again, then write + fsync + rename
        t3 = time.perf_counter()
        load_checkpoint(folder)
        t4 = time.perf_counter()
        times["state"].append(t1 - t0)
        times["encode"].append(t2 - t1)
        times["save"].append(t3 - t2)
        times["load"].append(t4 - t3)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["params"] = sum(p.numel() for p in model.parameters())
    out["mib"] = (folder / LAST).stat().st_size / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", type=Path, help="where to write (default: a temporary folder)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'model':<12} {'params':>10} {'file MiB':>9} {'capture s':>10} {'encode s':>9} "
          f"{'save s':>8} {'load s':>8}")
    for name in list_models("CNN_MNIST_*"):
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            r = bench(name, Path(d), args.repeats)
        print(f"{name:<12} {r['params']:>10,} {r['mib']:>9.1f} {r['state']:>10.3f} "
              f"{r['encode']:>9.3f} {r['save']:>8.3f} {r['load']:>8.3f}")


if __name__ == "__main__":
    main()
