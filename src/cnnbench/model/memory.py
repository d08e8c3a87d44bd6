"""Memory a run needs, estimated from its spec, checked before training as disk space is.

A spec of a few lines can describe a model whose activations or parameters exceed any
machine (``Conv2D: {filters: 1000000}``): refused at planning with the estimate, rather than
found out by the kernel's OOM killer mid-epoch. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnnbench.model.spec import ModelSpec, SpecError

if TYPE_CHECKING:  # torch is imported only for a CUDA device
    import torch

GiB = 2**30
# float32 bytes kept per parameter while training: the weights, their gradients, Adadelta's
# two accumulators, and the three copies a checkpoint write holds (state, bytes, file buffer).
BYTES_PER_PARAM = 4 * 7
# float32 bytes per activation element of a training batch: the layer's output kept for the
# backward pass, its gradient, and the activation function's or dropout mask's copy.
BYTES_PER_ACTIVATION = 4 * 3


def activations_per_image(spec: ModelSpec) -> int:
    """Elements of every layer's output (and the input) for one image."""
    total = 1
    for v in spec.input_shape:
        total *= v
    for layer in spec.layers:
        n = 1
        for v in layer.output_shape:
            n *= v
        total += n
    return total


def memory_needed(spec: ModelSpec, batch_size: int, eval_batch_size: int = 500) -> int:
    """Bytes one run of ``spec`` needs at its peak: training step or evaluation batch."""
    return BYTES_PER_PARAM * spec.params + max(_activation_bytes(spec, batch_size,
                                                                 eval_batch_size))


def _activation_bytes(spec: ModelSpec, batch_size: int, eval_batch_size: int) -> tuple[int, int]:
    """(a training batch's, an evaluation batch's): evaluation keeps no activations for a
    backward pass, only a layer's input and output at a time."""
    train = BYTES_PER_ACTIVATION * batch_size * activations_per_image(spec)
    evaluate = 4 * 2 * eval_batch_size * max(
        (_elements(layer.output_shape) for layer in spec.layers), default=0)
    return train, evaluate


def _elements(shape: Sequence[int]) -> int:
    n = 1
    for v in shape:
        n *= v
    return n


def available_memory() -> int | None:
    """Bytes of RAM available to a new process (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(specs: Sequence[ModelSpec], batch_size: int, eval_batch_size: int = 500,
                 available: int | None = None, where: str = "this machine") -> None:
    """SpecError naming the first spec whose run would not fit ``available`` bytes."""
    if available is None:
        available = available_memory()
        if available is None:
            return
    for spec in specs:
        need = memory_needed(spec, batch_size, eval_batch_size)
        if need > available:
            train, evaluate = _activation_bytes(spec, batch_size, eval_batch_size)
            what = (f"a {batch_size}-image training batch" if train >= evaluate
                    else f"a {eval_batch_size}-image evaluation batch")
            raise SpecError(
                f"{spec.source}: {spec.name} needs about {need / GiB:,.1f} GiB of memory to "
                f"train (activations of {what} {max(train, evaluate) / GiB:,.1f} GiB; "
                f"{spec.params:,} parameters with their gradients and optimizer state "
                f"{BYTES_PER_PARAM * spec.params / GiB:,.1f} GiB); {where} has "
                f"{available / GiB:,.1f} GiB available. Use a smaller --batch-size or model.")


def gpu_memory(device: torch.device) -> tuple[int | None, str]:
    """(free bytes, 'the GPU ...') for a CUDA device; (None, 'this machine') otherwise, so
    that :func:`check_memory` measures the host's RAM."""
    if device.type != "cuda":
        return None, "this machine"
    import torch
    free, _total = torch.cuda.mem_get_info(device)
    return free, f"the GPU {device}"
