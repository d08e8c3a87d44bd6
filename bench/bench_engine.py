"""Training speed of cnnbench's engine vs the plain PyTorch loop vs Keras/TF vs the ceiling.

Everything is measured in this one invocation; the variants' steps are interleaved round by
round, so a noisy neighbour slows all of them alike, and medians are reported.

    python bench/bench_engine.py                      # the four seed models, fp32 and bf16
    python bench/bench_engine.py --accuracy           # + one full epoch each: plain vs ours
    python bench/bench_engine.py --keras-python .venv-keras/bin/python   # + Keras 3 / TF
        # Keras float32 beside cnnbench fp32, Keras mixed_bfloat16 beside cnnbench bf16;
        # "x Keras" is Keras' seconds per epoch over ours, same precision

Prints a table and writes bench/out/bench_engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import plain_evaluate, plain_model, plain_train  # noqa: E402

from cnnbench.data.tensors import images_to_tensor, labels_to_tensor  # noqa: E402
from cnnbench.model.build import build_model, clipped_categorical_crossentropy  # noqa: E402
from cnnbench.model.gemm import median_seconds  # noqa: E402
from cnnbench.model.spec import get_spec, list_models  # noqa: E402
from cnnbench.train.engine import (  # noqa: E402
    TrainConfig,
    evaluate,
    fit,
    make_train_step,
)
from cnnbench.train.precision import cpu_has_bf16  # noqa: E402

TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000


def ceilings(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of 2048x2048 GEMMs: fp32 through MKL (``torch.mm``, what ``F.linear`` calls) and
    through oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``, what cnnbench's Dense
    calls), bf16 through oneDNN. One thread here: MKL 93, oneDNN 207, bf16 395; a 3x3
    convolution of 256 channels reaches 221 and 421, so these are the cores' ceilings."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n ** 3
    matmul = torch.ops.mkldnn._linear_pointwise  # a @ b.T
    out = {"fp32_mkl": flops / median_seconds(lambda: a @ b, repeats) / 1e9,
           "fp32_onednn": flops / median_seconds(
               lambda: matmul(a, b, None, "none", [], ""), repeats) / 1e9}
    ab, bb = a.bfloat16(), b.bfloat16()
    out["bf16_onednn"] = flops / median_seconds(lambda: ab @ bb, repeats) / 1e9
    return out


def plain_step_fn(model: torch.nn.Module):
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)

    def step(xb, yb):
        loss = clipped_categorical_crossentropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # what the textbook loop does for its running loss
    return step


def step_times(name: str, x: torch.Tensor, y: torch.Tensor, precisions: list[str],
               steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per training step of each variant, interleaved round by round."""
    spec = get_spec(name)
    variants = {}
    torch.manual_seed(0)
    variants["plain"] = plain_step_fn(plain_model(spec))
    models = {}
    for p in precisions:
        torch.manual_seed(0)
        models[p] = build_model(spec)
        fast = make_train_step(models[p], TrainConfig(precision=p))
        variants[f"ours-{p}"] = fast
    batches = [(x[i * 128:(i + 1) * 128], y[i * 128:(i + 1) * 128]) for i in range(steps)]
    for fn in variants.values():  # warm-up, compilation included
        getattr(fn, "wait_compiled", lambda: None)()
        for xb, yb in batches[:3]:
            fn(xb, yb)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            t = time.perf_counter()
            for xb, yb in batches:
                fn(xb, yb)
            times[k].append((time.perf_counter() - t) / steps)
    out = {k: statistics.median(v) for k, v in times.items()}
    for p, m in models.items():
        out[f"eval-{p}"] = median_seconds(
            lambda m=m, p=p: evaluate(m, x[:TEST_IMAGES], y[:TEST_IMAGES], 500, p), 2)
    reference = plain_model(spec)
    out["eval-plain"] = median_seconds(
        lambda: plain_evaluate(reference, x[:TEST_IMAGES], y[:TEST_IMAGES]), 2)
    return out


def one_epoch_accuracy(name: str, data, precisions: list[str]) -> dict[str, float]:
    """Test accuracy after one full epoch: the plain loop vs our engine (same seed)."""
    xt, yt, xv, yv = data
    trained, secs = plain_train(get_spec(name), xt, yt, epochs=1)
    out = {"plain": plain_evaluate(trained, xv, yv), "plain_seconds": secs[0]}
    for p in precisions:
        torch.manual_seed(0)
        r = fit(build_model(get_spec(name)), xt, yt, xv, yv, TrainConfig(epochs=1, precision=p))
        out[f"ours-{p}"] = r.test_accuracy
        out[f"ours-{p}_seconds"] = r.history["seconds"][0]
    return out


# Like for like: cnnbench fp32 against Keras' default float32, cnnbench bf16 against Keras'
# own fast mode, the mixed_bfloat16 policy (bf16 compute, float32 variables).
KERAS_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def keras_figures(python: str, models: list[str], images: int, threads: int,
                  policy: str = "float32") -> dict[str, dict]:
    cmd = [python, str(Path(__file__).parent / "keras_loop.py"), "--models", *models,
           "--images", str(images), "--policy", policy]
    # TensorFlow reads its thread pools' sizes from these: Keras gets the threads torch has.
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"Keras benchmark failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["model"]: r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models("CNN_MNIST_*"))
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--accuracy", action="store_true",
                    help="also train one full epoch per model: plain vs ours, accuracy + time")
    ap.add_argument("--keras-python", help="a Python with keras + tensorflow (make bench-keras)")
    ap.add_argument("--threads", type=int,
                    help="torch threads for everything measured, the ceiling included "
                         "(default: torch's; 1 is what each run of `--jobs 2` gets)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_engine.json")
    args = ap.parse_args()
    console = Console(width=160)
    if args.threads:
        torch.set_num_threads(args.threads)

    from cnnbench.data.datasets import load_dataset
    ds = load_dataset(log=lambda m: None)
    xt, yt = images_to_tensor(ds.x_train), labels_to_tensor(ds.y_train)
    xv, yv = images_to_tensor(ds.x_test), labels_to_tensor(ds.y_test)

    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_bf16": cpu_has_bf16(), "steps": args.steps, "rounds": args.rounds}
    ceil = ceilings()
    console.print(f"torch {env['torch']}, {env['threads']} threads; ceilings GFLOP/s: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in ceil.items()))
    keras = {p: keras_figures(args.keras_python, args.models, 128 * args.steps * 2,
                              torch.get_num_threads(), KERAS_POLICY[p])
             for p in args.precisions if args.keras_python}

    table = Table(title="Seconds per epoch (60k train + 10k test) and training throughput")
    for col in ("model", "variant", "ms/step", "train img/s", "s/epoch", "x plain",
                "x Keras (same precision)", "GFLOP/s", "% of ceiling"):
        table.add_column(col, justify="left" if col in ("model", "variant") else "right")
    results = {"env": env, "ceilings": ceil, "models": {}}
    for name in args.models:
        spec = get_spec(name)
        t = step_times(name, xt, yt, args.precisions, args.steps, args.rounds)
        rows = {}
        for variant in ["plain"] + [f"ours-{p}" for p in args.precisions]:
            per_step = t[variant]
            ev = t["eval-plain" if variant == "plain" else f"eval-{variant[5:]}"]
            epoch_s = per_step * TRAIN_IMAGES / 128 + ev
            rows[variant] = {"s_per_step": per_step, "train_ips": 128 / per_step,
                             "eval_s": ev, "epoch_s": epoch_s}
        for p, figures in keras.items():
            if name in figures:
                k = figures[name]
                rows[f"keras-{p}"] = {"s_per_step": 128 / k["train_ips"],
                                      "train_ips": k["train_ips"],
                                      "eval_s": TEST_IMAGES / k["eval_ips"],
                                      "epoch_s": TRAIN_IMAGES / k["train_ips"]
                                      + TEST_IMAGES / k["eval_ips"], "policy": k["policy"]}
        plain_ips = rows["plain"]["train_ips"]
        for variant, r in rows.items():
            same = rows.get(f"keras-{variant[5:]}") if variant.startswith("ours-") else None
            r["x_keras"] = same["epoch_s"] / r["epoch_s"] if same else None
            gflops = (spec.train_flops_per_image * TRAIN_IMAGES
                      + 2 * spec.macs * TEST_IMAGES) / r["epoch_s"] / 1e9
            ceiling = (ceil["bf16_onednn"] if variant.endswith("bf16")
                       else max(ceil["fp32_onednn"], ceil["fp32_mkl"]))
            r.update(x_plain=r["train_ips"] / plain_ips, gflops=gflops,
                     ceiling_fraction=gflops / ceiling)
            table.add_row(name, variant, f"{1000 * r['s_per_step']:.1f}",
                          f"{r['train_ips']:.0f}", f"{r['epoch_s']:.1f}",
                          f"{r['x_plain']:.2f}",
                          "" if r["x_keras"] is None else f"{r['x_keras']:.2f}", f"{gflops:.0f}",
                          f"{100 * r['ceiling_fraction']:.0f} %")
        if args.accuracy:
            rows["one_epoch"] = one_epoch_accuracy(name, (xt, yt, xv, yv), args.precisions)
        results["models"][name] = rows
    console.print(table)
    if args.accuracy:
        acc = Table(title="Test accuracy after one full epoch (seed 0) and its wall time")
        for col in ["model", "plain"] + [f"ours-{p}" for p in args.precisions]:
            acc.add_column(col, justify="right")
        for name, rows in results["models"].items():
            o = rows["one_epoch"]
            acc.add_row(name, *(f"{100 * o[k]:.2f} % ({o[k + '_seconds']:.1f} s)"
                                for k in ["plain"] + [f"ours-{p}" for p in args.precisions]))
        console.print(acc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    console.print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
