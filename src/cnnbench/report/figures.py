"""The notebook's published numbers, and its figure per model written to a file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def notebook_reference() -> dict[str, Any]:
    """The notebook's published numbers (Keras 2.2, 2019), shipped with the package."""
    ref = resources.files("cnnbench") / "reference" / "notebook_results.json"
    models: dict[str, Any] = json.loads(ref.read_text())["models"]
    return models


def plot_history(name: str, history: dict[str, list[float]], path: Path,
                 reference: dict[str, list[float]] | None = None) -> Path:
    """Save the notebook's two-panel figure for one run, the notebook's curves behind."""
    from cnnbench.atomic import atomic_write_bytes
    from cnnbench.report.charts import history_png
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, history_png(name, [history], reference))
    return path
