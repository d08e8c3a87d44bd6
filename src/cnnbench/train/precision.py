"""Which arithmetic a run trains in: fp32, or bf16 autocast where the hardware has bf16 units
(``auto``), with bf16 copies of the weights the optimizer step keeps in sync."""

from __future__ import annotations

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
