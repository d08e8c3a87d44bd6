"""The environment recorded with every run: versions and the settings that change its bits."""

from __future__ import annotations

import platform
from typing import Any

import torch

from cnnbench import __version__
from cnnbench.model import gemm


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and settings recorded with every result."""
    return {
        "cnnbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        # the library of fp32 Dense matmuls on the CPU (model/gemm.py): it changes the last bits
        "dense_gemm": gemm.choice() if device.type == "cpu" else None,
    }


# Settings that change the last bits of a run's numbers: a resume under other values than the
# run started with cannot be bit-identical to an uninterrupted run.
EXACTNESS_SETTINGS = ("torch", "device", "threads", "machine", "dense_gemm")


def bit_exact_under(env: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``env`` a run's bits depend on (config.json's ``bit_exact_under``)."""
    return {k: env.get(k) for k in EXACTNESS_SETTINGS}
