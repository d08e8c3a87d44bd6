"""Wall time of the whole study: `cnnbench run` vs Keras 3 + TensorFlow, back to back.

    python bench/bench_study.py                               # cnnbench only, as `make run`
    python bench/bench_study.py --run "--jobs 2" --run "--jobs 2 --precision auto"
        # each --run: options for one `cnnbench run`, one after the other
    python bench/bench_study.py --keras-python .venv-keras/bin/python   # + Keras, same work
        --keras-policy float32 --keras-policy mixed_bfloat16   # each run vs Keras' of its
                                                               # precision ("x Keras")

Each side trains the four seed models for 12 epochs on the full data from scratch (a fresh
store), evaluating the test set after every epoch. Prints a table, then where each cnnbench
run's wall time went (before the first run, epochs, runs outside epochs, waiting, the report),
and writes bench/out/bench_study.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cnnbench.model.spec import list_models

HERE = Path(__file__).parent


def run_cnnbench(models: list[str], epochs: int, extra: list[str], work: Path) -> dict:
    """`cnnbench run` in a fresh store; the wall time of the whole command, and where it
    went (:func:`where_time_went`)."""
    cmd = [sys.executable, "-m", "cnnbench", "run", "--models", *models, "--epochs",
           str(epochs), "--store", str(work / "store"), "--out", str(work / "out"), *extra]
    began = time.time()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    doc = json.loads((work / "out" / "results.json").read_text())
    acc = {m: doc["models"][m]["test_accuracy_percent"] for m in models}
    jobs = int(extra[extra.index("--jobs") + 1]) if "--jobs" in extra else 1
    return {"seconds": wall, "test_accuracy_percent": acc, "command": cmd,
            "precision": precision_of(extra),
            "where": where_time_went(work / "store", began, wall, jobs)}


def where_time_went(store: Path, began: float, wall: float, jobs: int) -> dict[str, float]:
    """The command's wall time split by the store's own clocks (index timestamps, to the
    second; each epoch's seconds, training plus validation): before the first run began
    (imports, data, worker start), in epochs, in runs outside their epochs (building the
    model, checkpoints, the final test evaluation, writing the run), waiting (a worker with
    no run left while another trains) and after the last run ended (the report). Runs'
    seconds are per worker: summed over runs and divided by ``jobs``."""
    import datetime as dt

    from cnnbench.store.run_store import RunStore
    rows = RunStore(store).runs()
    stamp = [(dt.datetime.fromisoformat(r.started).timestamp(),
              dt.datetime.fromisoformat(r.finished or r.updated).timestamp()) for r in rows]
    first, last = min(a for a, _ in stamp), max(b for _, b in stamp)
    epochs = sum(r.train_seconds for r in rows)
    in_runs = sum(b - a for a, b in stamp)
    return {"before_first_run": first - began, "epochs": epochs / jobs,
            "runs_outside_epochs": (in_runs - epochs) / jobs,
            "waiting": (last - first) - in_runs / jobs, "after_last_run": began + wall - last}


def run_keras(python: str, models: list[str], epochs: int, work: Path,
              policy: str = "float32") -> dict:
    from cnnbench.data.datasets import load_dataset
    ds = load_dataset(log=lambda m: None)
    npz = work / "mnist.npz"
    np.savez(npz, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    cmd = [python, str(HERE / "keras_loop.py"), "--models", *models, "--study", str(npz),
           "--epochs", str(epochs), "--policy", policy]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"seconds": wall, "keras": rows[0]["keras"] if rows else None, "policy": policy,
            "precision": "bf16" if policy == "mixed_bfloat16" else "fp32",
            "test_accuracy_percent": {r["model"]: 100 * r["test_accuracy"] for r in rows}}


def precision_of(extra: list[str]) -> str:
    """The precision a `cnnbench run` with these options trains in (the notebook's study
    defaults to fp32)."""
    from cnnbench.train.engine import resolve_device
    from cnnbench.train.precision import resolve_precision
    asked = extra[extra.index("--precision") + 1] if "--precision" in extra else "fp32"
    return resolve_precision(asked, resolve_device("auto"))


def like_for_like(results: dict[str, dict]) -> dict[str, float]:
    """Each cnnbench run against the Keras run of its precision: Keras' wall time over ours."""
    keras = {r["precision"]: r for r in results.values() if "policy" in r}
    return {label: keras[r["precision"]]["seconds"] / r["seconds"]
            for label, r in results.items() if "policy" not in r and r["precision"] in keras}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models("CNN_MNIST_*"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--keras-python", help="a Python with keras + tensorflow (make bench-keras)")
    ap.add_argument("--keras-policy", action="append", choices=["float32", "mixed_bfloat16"],
                    help="Keras' dtype policy, repeatable (default: float32); each cnnbench run "
                         "is compared with the Keras run of its precision")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "bench_study.json")
    ap.add_argument("--run", action="append", metavar="OPTIONS",
                    help="options for one `cnnbench run` (repeatable: each is timed, in a "
                         "store of its own), e.g. '--jobs 2 --precision auto'; default: none")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, options in enumerate(args.run or [""]):
            extra = shlex.split(options)
            work = Path(tmp) / f"cnnbench-{i}"
            work.mkdir()
            results[" ".join(["cnnbench run", *extra])] = run_cnnbench(args.models, args.epochs,
                                                                        extra, work)
        for policy in (args.keras_policy or ["float32"]) if args.keras_python else []:
            results[f"Keras 3 + TensorFlow model.fit, {policy}"] = run_keras(
                args.keras_python, args.models, args.epochs, Path(tmp), policy)
    ratios = like_for_like(results)
    table = Table(title=f"The whole study: {len(args.models)} models x {args.epochs} epochs")
    for col in ("runner", "precision", "wall", "x Keras (same precision)", *args.models):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for label, r in results.items():
        table.add_row(label, r["precision"], f"{r['seconds'] / 60:.1f} min",
                      f"{ratios[label]:.2f}" if label in ratios else "",
                      *(f"{r['test_accuracy_percent'].get(m, float('nan')):.2f} %"
                        for m in args.models))
    Console(width=160).print(table)
    parts = Table(title="Where each cnnbench run's wall time went (minutes; runs per worker)")
    names = ("before_first_run", "epochs", "runs_outside_epochs", "waiting", "after_last_run")
    for col in ("runner", "wall", *(n.replace("_", " ") for n in names)):
        parts.add_column(col, justify="left" if col == "runner" else "right")
    for label, r in results.items():
        if "where" in r:
            parts.add_row(label, f"{r['seconds'] / 60:.2f}",
                          *(f"{r['where'][n] / 60:.2f}" for n in names))
    Console(width=160).print(parts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": results, "x_keras": ratios}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
