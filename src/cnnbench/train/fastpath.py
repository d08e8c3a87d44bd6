"""The engine's fast paths, kept beside the loop so that the loop reads as Keras' ``fit``.

* precision: ``auto`` resolves to bf16 where the CPU has bf16 units (or on CUDA);
* channels-last weights on the CPU (``prepare_model``);
* the Adadelta update fused by ``torch.compile`` into one pass over each parameter
  (``optimizer_step``), with the eager step as its fallback;
* bf16 copies of the Conv2d/Linear weights that the optimizer step keeps in sync
  (``bf16_weight_copies``), instead of autocast casting every weight twice a step;
* freed memory kept for reuse instead of handed back to the OS (``keep_freed_memory``).

Each trick states the number it bought; ``tests/test_fast_paths.py`` checks each against the
reference path (bit-exact where the docstring says so, else within the stated tolerance).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 pays."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast (convolutions and matmuls in bf16, the loss in fp32) or a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def prepare_model(model: nn.Module) -> nn.Module:
    """Channels-last weights on the CPU: oneDNN's NHWC kernels, and pooling without layout
    reorders (1.05-1.15x a step in fp32, and with bf16 1.34x more: bench/bench_engine.py)."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
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
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
                 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _kept


def _adadelta_update(p: torch.Tensor, g: torch.Tensor, square_avg: torch.Tensor,
                     acc_delta: torch.Tensor, lr: float, rho: float, eps: float) -> None:
    """Keras 2.2 / torch Adadelta for one tensor, the same formula as torch.optim.Adadelta."""
    square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
    delta = acc_delta.add(eps).sqrt().div(square_avg.add(eps).sqrt()).mul(g)
    acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
    p.add_(delta, alpha=-lr)


def _adadelta_update_bf16(p: torch.Tensor, g16: torch.Tensor, square_avg: torch.Tensor,
                          acc_delta: torch.Tensor, p16: torch.Tensor, lr: float, rho: float,
                          eps: float) -> None:
    """``_adadelta_update`` from a bf16 gradient, also writing the bf16 copy of the new weights
    the next forward pass uses (see ``make_train_step``)."""
    _adadelta_update(p, g16.float(), square_avg, acc_delta, lr, rho, eps)
    p16.copy_(p)


_fused_kernels: dict[str, Callable[..., None]] = {}


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


def _fused_kernel(bf16_weights: bool = False) -> Callable[..., None]:
    """The Adadelta update compiled once per process into one loop over each tensor."""
    key = "bf16" if bf16_weights else "fp32"
    if key not in _fused_kernels:
        import torch._dynamo
        # One graph per (rank, layout) of parameter: a handful per model, a few dozen per study.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        fn = _adadelta_update_bf16 if bf16_weights else _adadelta_update
        _fused_kernels[key] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _fused_kernels[key]


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


def optimizer_step(optimizer: torch.optim.Optimizer, compile: bool = True,
                   weights16: dict[torch.Tensor, torch.Tensor] | None = None
                   ) -> Callable[[], Any]:
    """The optimizer's step; for Adadelta, fused by torch.compile where a compiler is at hand.

    Eager Adadelta makes about ten passes over every parameter tensor; the fused kernel makes
    one (CNN_MNIST_2: 17.5 ms -> 1.9 ms a step here, a third of a bf16 step). The kernel is
    used from the first step in every process, so the same settings give the same numbers;
    they can differ from eager Adadelta in the last bit. It keeps torch.optim.Adadelta's state
    (square_avg, acc_delta, step), so checkpoints are the same either way. If compilation
    fails (no C++ compiler), it warns and uses the eager step.

    ``weights16`` maps a parameter to the bf16 copy the forward pass used (``make_train_step``):
    the step reads that copy's gradient and writes the updated weights back into it.
    """
    weights16 = weights16 or {}
    eager = _eager_step(optimizer, weights16)
    if not compile or type(optimizer) is not torch.optim.Adadelta:
        return eager
    try:
        kernel, kernel16 = _fused_kernel(), _fused_kernel(bf16_weights=True)
    except Exception as e:  # pragma: no cover - platform without dynamo
        warnings.warn(f"fused Adadelta unavailable ({e}); using the eager step", stacklevel=2)
        return eager
    fallback = False

    @torch.no_grad()
    def step() -> None:
        nonlocal fallback
        if fallback:
            eager()
            return
        for group in optimizer.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p in group["params"]:
                w = weights16.get(p)
                grad = p.grad if w is None else w.grad
                if grad is None:
                    continue
                state = optimizer.state[p]
                if not state:  # as torch.optim.Adadelta initialises it
                    state["step"] = torch.tensor(0.0)
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                try:
                    if w is None:
                        kernel(*_flat_views((p, grad, state["square_avg"], state["acc_delta"])),
                               lr, rho, eps)
                    else:
                        kernel16(*_flat_views((p, grad, state["square_avg"], state["acc_delta"],
                                               w)), lr, rho, eps)
                except Exception as e:  # compilation failed: stay correct, be slower
                    if p is not group["params"][0] or state["step"] > 1:
                        raise
                    warnings.warn(f"fused Adadelta unavailable ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]}); using the eager step",
                                  stacklevel=2)
                    state["step"] -= 1
                    fallback = True
                    eager()
                    return
    return step


def bf16_weight_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    """bf16 leaf copies of the Conv2d/Linear parameters, by name: the tensors autocast would
    otherwise cast from fp32 in every forward pass, and cast back in every backward pass."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    full = f"{prefix}.{name}" if prefix else name
                    out[full] = p.detach().to(torch.bfloat16).requires_grad_()
    return out
