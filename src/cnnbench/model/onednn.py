"""Dense layers through oneDNN's fp32 matmul on the CPU, instead of the BLAS torch picks,
where it is the faster of the two on this machine (:mod:`cnnbench.model.gemm` measures).

torch's CPU ``F.linear`` in fp32 calls MKL's sgemm, which on the AMD CPUs this was built on
runs at under half of what the same core does in oneDNN: CNN_MNIST_2's Dense(1024) over
128x4608 took 85 / 80 / 82 GFLOP/s (forward, input gradient, weight gradient) through MKL and
177 / 174 / 185 through oneDNN's matmul, one thread; two threads 163 / 149 / 156 against
347 / 339 / 387 (median of 15 calls each, 2026-12-02).

The arithmetic stays fp32 (oneDNN's default, strict math mode: no bf16 or TF32 inside); the
sums are taken in another order than MKL's, so results differ from ``F.linear``'s in the last
bits (relative 1e-6), as two BLAS libraries do. ``tests/test_fast_paths.py`` holds forward
and gradients to a float64 reference at fp32 tolerance, and checks the op is the one run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnbench.model import gemm

_linear_pointwise: Callable[..., torch.Tensor] | None = getattr(
    getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
              ) -> torch.Tensor:
    """``a @ b.T (+ bias)`` by oneDNN; ``a`` and ``b`` may be transposed views (no copy)."""
    assert _linear_pointwise is not None  # usable() checked it before the first call
    return _linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        return _matmul_t(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        dx = _matmul_t(grad, weight.t()) if ctx.needs_input_grad[0] else None  # grad @ W
        dw = _matmul_t(grad.t(), x.t()) if ctx.needs_input_grad[1] else None  # grad.T @ x
        db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this matmul goes to oneDNN: the faster of the two here (gemm.py), fp32 on the
    CPU, 2-D input, autocast off (under
    bf16 autocast ``F.linear`` already runs on oneDNN, in bf16), and not being traced or
    compiled: an exported model (TorchScript, ONNX) holds the portable ``linear``."""
    return (_linear_pointwise is not None and x.device.type == "cpu" and x.dim() == 2
            and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling() and gemm.choice() == "onednn")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``, through oneDNN where :func:`usable` says so."""
    if usable(x, weight):
        # torch leaves autograd.Function.apply unannotated.
        out: torch.Tensor = _OneDNNLinear.apply(x.contiguous(), weight, bias)  # type: ignore[no-untyped-call]
        return out
    return F.linear(x, weight, bias)
