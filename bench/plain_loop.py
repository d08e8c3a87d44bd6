"""The reference: the plain PyTorch loop a user would write for the notebook's study.

Same model (cnnbench.model.build_model with torch's own nn.Dropout and nn.Linear), same
loss, same optimizer settings; written the ordinary way: NCHW fp32, eager Adadelta, the loss
read with ``.item()`` every step.
"""

from __future__ import annotations

import time

import torch

from cnnbench.model.build import build_model, clipped_categorical_crossentropy
from cnnbench.model.spec import ModelSpec


def plain_model(spec: ModelSpec) -> torch.nn.Module:
    """The spec's model as a user would build it: torch's nn.Dropout and nn.Linear, not
    cnnbench's (same initial weights)."""
    model = build_model(spec)
    for i, m in enumerate(model):
        if isinstance(m, torch.nn.Dropout):
            model[i] = torch.nn.Dropout(m.p)
        elif isinstance(m, torch.nn.Linear):
            model[i] = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            model[i].load_state_dict(m.state_dict())
    return model


def plain_train(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, epochs: int = 1,
                batch_size: int = 128, seed: int = 0) -> tuple[torch.nn.Module, list[float]]:
    """Train with a textbook loop; returns the model and the seconds of each epoch."""
    torch.manual_seed(seed)
    model = plain_model(spec)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    shuffle = torch.Generator().manual_seed(seed)  # the engine's shuffling, for equal accuracy
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=shuffle)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = clipped_categorical_crossentropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds.append(time.perf_counter() - start)
    return model, seconds


@torch.no_grad()
def plain_evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)
