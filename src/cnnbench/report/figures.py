"""The notebook's figure per model: accuracy and loss side by side, train vs test."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def notebook_reference() -> dict[str, Any]:
    """The notebook's published numbers (Keras 2.2, 2019), shipped with the package."""
    ref = resources.files("cnnbench") / "reference" / "notebook_results.json"
    return json.loads(ref.read_text())["models"]


def plot_history(name: str, history: dict[str, list[float]], path: Path,
                 reference: dict[str, list[float]] | None = None) -> Path:
    """Save the notebook's two-panel figure; the notebook's own curves drawn faintly behind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "acc", "Model Accuracy Plot"),
                           (axes[1], "loss", "Model Loss Plot")):
        if reference:
            for k, color in ((key, "C0"), (f"val_{key}", "C1")):
                ref = reference.get(k) or []
                ax.plot(range(1, len(ref) + 1), ref, color=color, alpha=0.25, lw=3,
                        label=f"notebook {'test' if k.startswith('val') else 'train'}")
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", color="C0", label="train")
        ax.plot(epochs, history[f"val_{key}"], "o-", color="C1", label="test")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
