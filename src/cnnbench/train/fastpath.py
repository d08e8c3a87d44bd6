"""The engine's fast paths, kept beside the loop so that the loop reads as Keras' ``fit``.

* channels-last weights on the CPU (``prepare_model``);
* the Adadelta update fused into one pass over each parameter (``optimizer_step``): a C loop
  on the CPU (``native_adadelta``), ``torch.compile``'s kernel elsewhere, with a bit-identical
  eager form where neither can be built;
* the optimizer step keeps the bf16 weight copies of ``precision.bf16_weight_copies`` in
  sync, instead of autocast casting every weight twice a step;
* freed memory kept for reuse instead of handed back to the OS (``keep_freed_memory``).

Each trick states the number it bought; ``tests/test_fast_paths.py`` checks each against the
reference path (bit-exact where the docstring says so, else within the stated tolerance).
"""

from __future__ import annotations

import ctypes
import functools
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


def prepare_model(model: nn.Module) -> nn.Module:
    """Channels-last weights on the CPU: oneDNN's NHWC kernels, and pooling without layout
    reorders (1.05-1.15x a step in fp32, and with bf16 1.34x more: bench/bench_engine.py)."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_kept = False


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (once per process; False where the C
    library is not glibc).

    A training step allocates and frees tensors of up to tens of MB. glibc serves such sizes
    with fresh mmaps and trims freed heap back to the OS, so every step pays page faults
    and the kernel's zeroing of the pages, inside whichever op touches them first: ReLU's
    forward and backward took 6-32 ms of CNN_MNIST_1's step, varying from run to run.
    Serving blocks of up to 32 MB (glibc's maximum) from the heap and never trimming it:
    CNN_MNIST_1's fp32 step 82.8 -> 69.7 ms, one thread. The process keeps its peak memory
    (a few hundred MB here) until it exits.
    """
    global _kept
    if _kept:
        return True
    try:
        libc = ctypes.CDLL(None)  # the process' own symbols: libc's, without a lookup
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # glibc's, not another libc's
    except (OSError, AttributeError, TypeError):
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
                 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _kept


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root, in eager mode: what the compiled kernel computes.

    torch's eager CPU ``sqrt`` is 1 ulp off for about a fifth of fp32 inputs here, and slow
    (1M elements: 7.4 ms, 21 % of them off); NumPy's is IEEE's, correctly rounded (0.7 ms).
    On CUDA, torch's is IEEE's.
    """
    if x.device.type != "cpu":
        return x.sqrt()
    return torch.from_numpy(np.sqrt(x.numpy()))


def _adadelta_update(p: torch.Tensor, g: torch.Tensor, square_avg: torch.Tensor,
                     acc_delta: torch.Tensor, lr: float, rho: float, eps: float,
                     sqrt: Callable[[torch.Tensor], torch.Tensor] = torch.sqrt) -> None:
    """Keras 2.2 / torch Adadelta for one tensor, the formula of torch.optim.Adadelta.

    Written as separate multiplies and adds (no ``addcmul``, which the compiler turns into a
    fused multiply-add), so that compiled (``sqrt=torch.sqrt``: exact there) and eager
    (``sqrt=_sqrt``) round alike: the two are bit-identical, and a run may switch from one
    to the other at any step (``optimizer_step``).
    """
    square_avg.mul_(rho).add_(g * g * (1 - rho))
    delta = sqrt(acc_delta + eps).div(sqrt(square_avg + eps)).mul(g)
    acc_delta.mul_(rho).add_(delta * delta * (1 - rho))
    p.sub_(delta * lr)


def _adadelta_update_bf16(p: torch.Tensor, g16: torch.Tensor, square_avg: torch.Tensor,
                          acc_delta: torch.Tensor, p16: torch.Tensor, lr: float, rho: float,
                          eps: float, sqrt: Callable[[torch.Tensor], torch.Tensor] = torch.sqrt
                          ) -> None:
    """``_adadelta_update`` from a bf16 gradient, also writing the bf16 copy of the new weights
    the next forward pass uses (see ``make_train_step``)."""
    _adadelta_update(p, g16.float(), square_avg, acc_delta, lr, rho, eps, sqrt)
    p16.copy_(p)


def _flat_views(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """1-D views of dense tensors laid out alike (channels-last included), else the tensors.

    An elementwise update does not care about shape: flat views let one compiled graph serve
    every parameter, instead of one graph per shape (13 for CNN_MNIST_2, 13 s of compiling).
    """
    first = tensors[0]
    dense = first.is_contiguous() or first.is_contiguous(memory_format=torch.channels_last)
    if dense and all(t.shape == first.shape and t.stride() == first.stride() for t in tensors):
        return tuple(t.as_strided((t.numel(),), (1,), t.storage_offset()) for t in tensors)
    return tensors


class _Kernel:
    """The fused Adadelta update, one pass over each tensor, built once per process,
    hyperparameters and kind (fp32 weights, or fp32 weights with bf16 copies) at the first
    step that needs it: on the CPU a C loop (``native_adadelta``), elsewhere torch.compile's
    kernel. For the tensors it does not serve, and where it cannot be built (no compiler),
    the eager form runs: bit-identical, slower.

    The step waits for the build. torch.compile's took 4 s to the first step with its cache
    warm, 12 s cold (``bench/bench_startup.py``); compiling it in a background thread while
    training went on gave runs in worker processes and resumed runs other numbers than
    uninterrupted ones (dynamo restores random generator state when it ends tracing).
    """

    def __init__(self, lr: float, rho: float, eps: float, bf16: bool, device: str) -> None:
        self.args = (lr, rho, eps, bf16, device)
        self.fused: Callable[..., None] | None = None
        self.failed: BaseException | None = None

    def wait(self) -> bool:
        """Build (once); whether it built."""
        if self.fused is None and self.failed is None:
            try:
                self.fused = _build(*self.args)
            except Exception as e:  # no C compiler, or no dynamo: the eager form goes on
                self.failed = e
                first = str(e).splitlines()[0][:200] if str(e) else ""
                warnings.warn(f"fused Adadelta unavailable ({type(e).__name__}: {first}); "
                              f"its eager form runs (the same numbers, slower)", stacklevel=2)
        return self.failed is None


def _build(lr: float, rho: float, eps: float, bf16: bool, device: str
           ) -> Callable[..., None]:
    """The fused update of flat fp32 tensors ``(p, g, square_avg, acc_delta[, p16])``: the C
    loop on the CPU (against torch.compile's kernel, one thread: 78.6 -> 4.6 us a call for a
    500-element tensor, 3.96 -> 3.61 ms for CNN_MNIST_1's 3.2M-element Dense kernel;
    ``bench/bench_adadelta.py``), torch.compile's kernel on other devices."""
    if device != "cpu":
        return _compiled_update(lr, rho, eps, bf16, device)
    from cnnbench.data.datasets import default_cache_dir
    from cnnbench.train.native_adadelta import load
    kernel = load(default_cache_dir())
    if bf16:
        return lambda p, g, s, a, p16: kernel.update(p, g, s, a, p16, lr, rho, eps)
    return lambda p, g, s, a: kernel.update(p, g, s, a, None, lr, rho, eps)


def _compiled_update(lr: float, rho: float, eps: float, bf16: bool, device: str
                     ) -> Callable[..., None]:
    """``_build``'s update compiled by torch.compile, for 1-D tensors of any size above 1
    (compiled by running it once on zeros)."""
    import torch._dynamo
    # One graph per kind and hyperparameters: a few per study.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    kernel = torch.compile(_adadelta_update_bf16 if bf16 else _adadelta_update,
                           dynamic=True, fullgraph=True)
    zeros = [torch.zeros(64, device=device) for _ in range(4)]
    if bf16:
        zeros[1] = zeros[1].bfloat16()
        zeros.append(torch.zeros(64, dtype=torch.bfloat16, device=device))
    with torch.no_grad():
        kernel(*zeros, lr, rho, eps)
    return lambda *flat: kernel(*flat, lr, rho, eps)


_kernels: dict[tuple[float, float, float, bool, str], _Kernel] = {}

# Ctrl-C and SIGTERM while a torch.compile'd call runs: dynamo's frame machinery drops the
# KeyboardInterrupt the handler raises there (torch 2.13: 15 % of SIGINTs timed into kernel
# calls were lost, the call returned normally; CI saw a run go on to finish after Ctrl-C).
# So while the fused step runs, these signals are noted and re-raised when it returns: 15 us
# a step. (The C loop on the CPU needs no such care; the hold also keeps a step whole.)
_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: list[int] = []


def _note_signal(signum: int, frame: Any) -> None:
    _held.append(signum)


class _SignalsHeld:
    """Run the block with SIGINT/SIGTERM noted, not handled; then hand the first noted one to
    the handler it would have met (KeyboardInterrupt, for Ctrl-C). Outside the main thread,
    where handlers cannot be set, and for SIG_DFL/SIG_IGN (nothing to lose), a no-op."""

    def __enter__(self) -> None:
        self.handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        note: Callable[[int, Any], None] = _note_signal
        if "torch._dynamo" in sys.modules:  # dynamo must not trace the handler itself
            note = _dynamo_skipped_note()
        for s in _HELD_SIGNALS:
            h = signal.getsignal(s)
            if callable(h) and getattr(h, "__wrapped__", h) is not _note_signal:
                self.handlers[s] = h
                signal.signal(s, note)

    def __exit__(self, *exc: object) -> None:
        for s, h in self.handlers.items():
            signal.signal(s, h)
        noted, _held[:] = _held[:1], []
        for s in noted:
            if s in self.handlers:
                self.handlers[s](s, None)  # raises: KeyboardInterrupt for Ctrl-C


@functools.cache
def _dynamo_skipped_note() -> Callable[[int, Any], None]:
    skipped: Callable[[int, Any], None] = torch.compiler.disable(_note_signal)
    return skipped


def _kernel(lr: float, rho: float, eps: float, bf16: bool, device: str) -> _Kernel:
    """The kernel for these hyperparameters (dynamo specialises on them), started once."""
    key = (lr, rho, eps, bf16, device)
    if key not in _kernels:
        _kernels[key] = _Kernel(*key)
    return _kernels[key]


def _eager_step(optimizer: torch.optim.Optimizer,
                weights16: dict[torch.Tensor, torch.Tensor]) -> Callable[[], Any]:
    """The optimizer's own step; with bf16 weight copies, their gradients in and weights out."""
    if not weights16:
        return optimizer.step

    @torch.no_grad()
    def step() -> None:
        for p, w in weights16.items():
            p.grad = None if w.grad is None else w.grad.float()
        optimizer.step()
        for p, w in weights16.items():
            w.copy_(p)
    return step


def _adadelta_state(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    state: dict[str, Any] = optimizer.state[p]
    if not state:  # as torch.optim.Adadelta initialises it
        state["step"] = torch.tensor(0.0)
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    return state


def _fused_update(optimizer: torch.optim.Optimizer, weights16: dict[torch.Tensor, torch.Tensor],
                  kernel: Callable[[dict[str, Any], bool], _Kernel]) -> None:
    """One Adadelta update of every parameter: the fused kernel where it serves the tensor,
    else its bit-identical eager form."""
    for group in optimizer.param_groups:
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        for p in group["params"]:
            w = weights16.get(p)
            grad = p.grad if w is None else w.grad
            if grad is None:
                continue
            state = _adadelta_state(optimizer, p)
            args = (p, grad, state["square_avg"], state["acc_delta"])
            flat = _flat_views(args if w is None else (*args, w))
            k = kernel(group, w is not None)
            fused = k.fused if k.wait() else None
            # Sizes 0 and 1, non-flat layouts, other dtypes would need graphs of their own
            # (and the C loop reads fp32 weights and an fp32 or, with a copy, bf16 gradient).
            if (fused is not None and flat[0].dim() == 1 and p.numel() > 1
                    and p.dtype == flat[2].dtype == flat[3].dtype == torch.float32
                    and grad.dtype == (torch.float32 if w is None else torch.bfloat16)):
                fused(*flat)
            elif w is None:
                fp, fg, fsq, facc = flat
                _adadelta_update(fp, fg, fsq, facc, lr, rho, eps, sqrt=_sqrt)
            else:
                fp, fg, fsq, facc, fw = flat
                _adadelta_update_bf16(fp, fg, fsq, facc, fw, lr, rho, eps, sqrt=_sqrt)


def optimizer_step(optimizer: torch.optim.Optimizer, compile: bool = True,
                   weights16: dict[torch.Tensor, torch.Tensor] | None = None
                   ) -> Callable[[], Any]:
    """The optimizer's step; for Adadelta, one fused pass over each parameter.

    Eager Adadelta makes about ten passes over every parameter tensor; the fused kernel makes
    one (CNN_MNIST_2: 17.5 ms -> 1.9 ms a step here, a third of a bf16 step). It is compiled at
    the first step (``_Kernel``); its eager form, for tensors the kernel does not serve and
    where no compiler is at hand, gives the same bits, so a run's numbers do not depend on
    whether a compiler is at hand. They can differ from torch.optim.Adadelta's in the last
    bit (another order of roundings). It keeps torch.optim.Adadelta's state (square_avg,
    acc_delta, step), so checkpoints are the same either way. ``compile=False``: torch's own
    step, the reference the tests hold the kernel to.

    ``weights16`` maps a parameter to the bf16 copy the forward pass used (``make_train_step``):
    the step reads that copy's gradient and writes the updated weights back into it.
    """
    weights16 = weights16 or {}
    if not compile or type(optimizer) is not torch.optim.Adadelta:
        return _eager_step(optimizer, weights16)

    device = str(optimizer.param_groups[0]["params"][0].device)

    def kernel(group: dict[str, Any], bf16: bool) -> _Kernel:
        return _kernel(group["lr"], group["rho"], group["eps"], bf16, device)

    def kinds(group: dict[str, Any]) -> set[bool]:
        return {p in weights16 for p in group["params"] if p.requires_grad}

    built = False

    def step() -> None:
        nonlocal built
        if not built:  # outside the hold: Ctrl-C during the build stops it at once
            wait_compiled()
            built = True
        with _SignalsHeld(), torch.no_grad():
            _fused_update(optimizer, weights16, kernel)

    def wait_compiled() -> bool:
        """Block until the fused kernels are built; whether they all were (tests, benchmarks)."""
        return all([kernel(g, bf16).wait() for g in optimizer.param_groups
                    for bf16 in kinds(g)])

    step.wait_compiled = wait_compiled  # type: ignore[attr-defined]
    return step
