"""A run's full training state after an epoch, and its restoration: what a checkpoint holds.

Kept apart from the training loop so that the loop stays short; ``engine.fit`` uses both.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                   shuffle: torch.Generator, history: dict[str, list[float]]) -> dict[str, Any]:
    """Everything needed to continue bit-exactly after the last completed epoch.

    Model weights and buffers (BatchNorm statistics), Adadelta's accumulators, the shuffle
    generator, torch's global generator (dropout masks), numpy's and Python's generators,
    and the history so far. Tensors are cloned to the CPU so later steps cannot change them.
    """
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "numpy": _numpy_rng_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "epoch": len(history["loss"]),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": _cpu_clone(optimizer.state_dict()),
        "rng": rng,
        "history": {k: list(v) for k, v in history.items()},
    }


def restore_training_state(state: dict[str, Any], model: nn.Module,
                           optimizer: torch.optim.Optimizer, shuffle: torch.Generator
                           ) -> tuple[int, dict[str, list[float]]]:
    """Load a ``training_state`` into fresh objects; return the epochs done and the history."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    shuffle.set_state(rng["shuffle"])
    if "numpy" in rng:
        _set_numpy_rng_state(rng["numpy"])
    if "python" in rng:
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["epoch"]), {k: list(v) for k, v in state["history"].items()}


def _cpu_clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_clone(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_clone(v) for v in obj)
    return obj


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's legacy global state as plain values and a tensor (loadable with weights_only)."""
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy global generator's (MT19937) form
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"],
                         s["has_gauss"], s["cached_gaussian"]))
