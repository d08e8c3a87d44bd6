"""Which library runs the fp32 Dense matmuls on the CPU: oneDNN or MKL, measured on the machine.

The faster one differs by CPU vendor: on the AMD EPYC this was built on, oneDNN's matmul ran
CNN_MNIST_2's Dense(1024) at about 2x MKL's sgemm (onednn.py); on Intel Xeons MKL has been the
faster by about 1.2x. So the first fp32 run on a machine times both on that Dense's shape,
one thread (the choice is per core; a worker of a study runs one thread), and keeps the
answer in ``$CNNBENCH_CACHE/gemm.json``, keyed by the CPU and torch, so that every later run
and every worker process uses the same library: the same seed gives the same bits.

``$CNNBENCH_GEMM`` = ``onednn`` or ``mkl`` forces one (``auto``, the default, measures).
Both are fp32 arithmetic; they sum in different orders, so results differ in the last bits.

>>> choice() in CHOICES
True
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cnnbench.atomic import atomic_write_text

CHOICES = ("onednn", "mkl")
ENV = "CNNBENCH_GEMM"
CACHE_NAME = "gemm.json"
# CNN_MNIST_2's and CNN_MNIST_4's Dense(1024) over a batch of 128 flattened 4608-vectors: the
# matmul that dominates the Dense time of the notebook's models.
SHAPE = (128, 4608, 1024)
REPEATS = 9

_chosen: str | None = None


def cpu_name() -> str:
    """The CPU's model name, family and model numbers (Linux: a virtual machine may name
    every EPYC generation alike), else what platform says."""
    try:
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        fields = {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
                f"model {fields.get('model', '?')})")
    return platform.processor() or platform.machine()


def machine_key() -> str:
    return f"{cpu_name()} | torch {torch.__version__}"


def median_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure() -> dict[str, float]:
    """GFLOP/s of the Dense's forward matmul through each library, one thread."""
    onednn = torch.ops.mkldnn._linear_pointwise  # x @ w.T, what model/onednn.py calls
    m, k, n = SHAPE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    flops = 2 * m * k * n
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"onednn": flops / median_seconds(
                    lambda: onednn(x, w, None, "none", [], "")) / 1e9,
                "mkl": flops / median_seconds(lambda: torch.nn.functional.linear(x, w)) / 1e9}
    finally:
        torch.set_num_threads(threads)


def _cached(path: Path, key: str) -> str | None:
    try:
        entry = json.loads(path.read_text()).get(key)
        value = entry.get("choice") if isinstance(entry, dict) else None
    except (OSError, ValueError, AttributeError):
        return None  # absent, unreadable or not ours: measure again
    return value if value in CHOICES else None


def _store(path: Path, key: str, figures: dict[str, float], value: str) -> None:
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    doc[key] = {"choice": value, "gflops_1_thread": {k: round(v, 1) for k, v in
                                                      figures.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    except OSError:
        pass  # a read-only cache: this process keeps its choice, the next one measures again


def choice(cache_dir: Path | None = None,
           measure_fn: Callable[[], dict[str, float]] = measure) -> str:
    """``onednn`` or ``mkl``: forced by ``$CNNBENCH_GEMM``, else cached, else measured."""
    global _chosen
    forced = os.environ.get(ENV, "auto").strip().lower()
    if forced in CHOICES:
        return forced
    if _chosen is not None and cache_dir is None:
        return _chosen
    if not torch.backends.mkldnn.is_available():
        return "mkl"
    from cnnbench.data.sources import default_cache_dir
    path = (cache_dir or default_cache_dir()) / CACHE_NAME
    key = machine_key()
    value = _cached(path, key)
    if value is None:
        figures = measure_fn()
        value = max(CHOICES, key=lambda c: figures.get(c, 0.0))
        _store(path, key, figures, value)
    if cache_dir is None:
        _chosen = value
    return value
