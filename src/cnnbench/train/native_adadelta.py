"""The fused Adadelta update for CPU tensors as a small C loop, built once per machine.

It replaces ``torch.compile`` of the same update on the CPU. The loop is the eager form's
arithmetic, operation for operation, in fp32 with no contraction into fused multiply-adds
(``-ffp-contract=off``; sqrt and division are IEEE's, correctly rounded), so it gives the eager
form's bits, which ``tests/test_fast_paths.py`` checks. What it buys over the compiled kernel:

* startup: no dynamo trace and no inductor cache at the first step (first step done 10.05 s
  after start with torch.compile's kernel and its cache warm, 30.7 s cold; 4.55 / 4.77 s with
  this loop, its build included in the cold figure: ``bench/bench_startup.py`` on a 2-core
  Xeon);
* calls: 78.6 -> 4.6 us on a 500-element tensor (``bench/bench_adadelta.py``);
* a Ctrl-C is never lost inside the call (dynamo drops a KeyboardInterrupt raised in a compiled
  call, ``fastpath._SignalsHeld``);
* no random-generator save and restore around tracing (dynamo's), which once made resumed runs
  differ.

Built with the C compiler at hand (``$CC``, else ``cc``/``gcc``) into the cnnbench cache
(``$CNNBENCH_CACHE/kernels``), keyed by the source, the compiler and the CPU's flags; where no
compiler builds it, ``load`` says why and the caller runs the eager form (the same numbers).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = r"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    float *p, *sq, *acc; const void *g; uint16_t *p16;
    int64_t lo, hi; float lr, rho, keep, eps;
} job_t;

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t to_bf16(float f) {  /* c10::BFloat16's round to nearest even */
    uint32_t u; memcpy(&u, &f, 4);
    uint16_t r = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return f != f ? (uint16_t)0x7FC0 : r;
}

/* square_avg = square_avg*rho + g*g*(1-rho); delta = sqrt(acc+eps)/sqrt(square_avg+eps)*g;
   acc = acc*rho + delta*delta*(1-rho); p = p - delta*lr: each operation rounded to fp32. */
#define UPDATE(G)                                                                  \
    float g = (G);                                                                 \
    float s = sq[i] * rho + (g * g) * keep;                                        \
    sq[i] = s;                                                                     \
    float d = sqrtf(acc[i] + eps) / sqrtf(s + eps) * g;                            \
    acc[i] = acc[i] * rho + (d * d) * keep;                                        \
    p[i] = p[i] - d * lr;

static void *run(void *arg) {
    const job_t *j = (const job_t *)arg;
    float *restrict p = j->p, *restrict sq = j->sq, *restrict acc = j->acc;
    const float lr = j->lr, rho = j->rho, keep = j->keep, eps = j->eps;
    if (j->p16 == NULL) {
        const float *restrict gf = (const float *)j->g;
        for (int64_t i = j->lo; i < j->hi; i++) { UPDATE(gf[i]) }
    } else {
        const uint16_t *restrict gh = (const uint16_t *)j->g;
        uint16_t *restrict p16 = j->p16;
        for (int64_t i = j->lo; i < j->hi; i++) { UPDATE(from_bf16(gh[i])) p16[i] = to_bf16(p[i]); }
    }
    return NULL;
}

/* The tensor in `threads` contiguous chunks, one per thread (the caller's among them). */
int adadelta(float *p, const void *g, float *sq, float *acc, uint16_t *p16, int64_t n,
             float lr, float rho, float keep, float eps, int threads) {
    enum { MAX = 64 };
    job_t jobs[MAX]; pthread_t tid[MAX]; int started[MAX] = {0};
    if (threads < 1) threads = 1;
    if (threads > MAX) threads = MAX;
    int64_t chunk = ((n + threads - 1) / threads + 15) / 16 * 16;
    for (int t = 0; t < threads; t++) {
        int64_t lo = t * chunk, hi = lo + chunk < n ? lo + chunk : n;
        jobs[t] = (job_t){p, sq, acc, g, p16, lo < n ? lo : n, hi, lr, rho, keep, eps};
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, run, &jobs[t]) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t]) run(&jobs[t]);  /* no thread to be had: this one does the chunk */
    run(&jobs[0]);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(tid[t], NULL);
    return 0;
}
"""

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared",
         "-pthread")

# Below this many elements a tensor is updated by one thread: starting a thread (~20 us)
# costs more than it saves below a few hundred us of work (3.2M elements: 3.6 ms on one core).
PARALLEL_FROM = 1 << 18


class NativeAdadelta:
    """``update(p, g, square_avg, acc_delta, p16, lr, rho, eps)`` on flat CPU tensors."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._fn = library.adadelta
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] + [ctypes.c_float] * 4 + [
            ctypes.c_int]

    def update(self, p: torch.Tensor, g: torch.Tensor, square_avg: torch.Tensor,
               acc_delta: torch.Tensor, p16: torch.Tensor | None, lr: float, rho: float,
               eps: float) -> None:
        n = p.numel()
        threads = torch.get_num_threads() if n >= PARALLEL_FROM else 1
        # (1 - rho) in double, then fp32: what the eager form's scalar multiply uses.
        self._fn(p.data_ptr(), g.data_ptr(), square_avg.data_ptr(), acc_delta.data_ptr(),
                 None if p16 is None else p16.data_ptr(), n, lr, rho, 1 - rho, eps, threads)


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


@functools.cache  # one build check and one dlopen a process, for every kind of kernel
def load(cache_dir: Path) -> NativeAdadelta:
    """The kernel, built into ``cache_dir`` on first use. Raises OSError (no compiler, the
    build failed: its message says why) or RuntimeError (not built for this platform)."""
    if platform.system() != "Linux":
        raise RuntimeError(f"the C kernel is built on Linux only (this is {platform.system()})")
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler ($CC, cc, gcc or clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join((SOURCE, " ".join(FLAGS), cc, version, platform.machine(),
                                    _cpu_flags())).encode()).hexdigest()[:16]
    path = cache_dir / "kernels" / f"adadelta-{key}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, out = Path(tmp) / "adadelta.c", Path(tmp) / "adadelta.so"
            src.write_text(SOURCE)
            built = subprocess.run([cc, *FLAGS, str(src), "-o", str(out), "-lm"],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                last = (built.stderr.strip().splitlines() or ["no message"])[-1][:300]
                raise OSError(f"{cc} could not build the kernel: {last}")
            os.replace(out, path)  # whole or absent: two processes may build at once
    return NativeAdadelta(ctypes.CDLL(str(path)))
