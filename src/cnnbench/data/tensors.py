"""Dataset arrays as the tensors training reads: images scaled as the notebook's ``x / 255``."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x H x W -> float32 N x 1 x H x W in [0, 1], as the notebook's ``x / 255``."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return (t.to(torch.float32) / 255.0).unsqueeze(1)


def labels_to_tensor(y: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
