"""The report's figures as PNG bytes (for embedding): curves over seeds, confusion matrices,
misclassified digits, gradient norms. The notebook's published curves are drawn faintly behind.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbench.store.records import RunRecord

if TYPE_CHECKING:  # matplotlib is imported when the first figure is drawn
    from matplotlib.figure import Figure


def _plt() -> ModuleType:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _curves(histories: Sequence[Mapping[str, Sequence[float]]], key: str
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over the runs that reached every epoch (diverged runs end early)."""
    series = [h[key] for h in histories if h.get(key)]
    if not series:
        return None
    n = max(len(s) for s in series)
    full = np.array([s for s in series if len(s) == n], dtype=float)
    if not len(full):
        return None
    return np.arange(1, n + 1), full.mean(axis=0)


def history_png(name: str, histories: Sequence[Mapping[str, Sequence[float]]],
                reference: Mapping[str, Sequence[float]] | None = None,
                val_label: str = "test") -> bytes:
    """The notebook's figure: accuracy and loss, train vs test; thin lines per seed, bold
    mean, and the notebook's own curves faint and wide behind. One history per run.
    ``val_label``: what val_* is, "test" (the notebook's protocol) or "validation"."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, title in ((axes[0], "acc", "Model Accuracy"), (axes[1], "loss", "Model Loss")):
        for k, color, label in ((key, "C0", "train"), (f"val_{key}", "C1", val_label)):
            if reference and reference.get(k):
                ref = reference[k]
                ax.plot(range(1, len(ref) + 1), ref, color=color, alpha=0.2, lw=5,
                        label=f"notebook {label}")
            if len(histories) > 1:
                for h in histories:
                    ys = h.get(k) or []
                    ax.plot(range(1, len(ys) + 1), ys, color=color, alpha=0.35, lw=0.8)
            mean = _curves(histories, k)
            if mean is not None:
                suffix = f" (mean of {len(histories)})" if len(histories) > 1 else ""
                ax.plot(*mean, "o-", color=color, ms=3, label=label + suffix)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(name)
    fig.tight_layout()
    return _png(fig)


def val_acc_overlay_png(groups: Mapping[str, Sequence[RunRecord]],
                        reference: Mapping[str, Mapping[str, Any]] | None = None,
                        what: str = "test accuracy") -> bytes:
    """Every model's mean validation accuracy per epoch on one axis (``what`` it is: the
    test set in the notebook's protocol, else a holdout)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, (model, runs) in enumerate(groups.items()):
        color = f"C{i % 10}"
        ref = ((reference or {}).get(model) or {}).get("history", {}).get("val_acc")
        if ref:
            ax.plot(range(1, len(ref) + 1), ref, color=color, alpha=0.2, lw=5)
        if len(runs) > 1:  # seeds thin: a mean alone would hide a seed that got stuck
            for r in runs:
                ys = r.history.get("val_acc") or []
                ax.plot(range(1, len(ys) + 1), ys, color=color, alpha=0.35, lw=0.8)
        mean = _curves([r.history for r in runs], "val_acc")
        if mean is not None:
            ax.plot(*mean, "o-", color=color, ms=3, label=model)
    if reference:
        ax.plot([], [], color="grey", alpha=0.3, lw=5, label="notebook (faint)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.set_title(f"{what[0].upper() + what[1:]} per epoch, all models (bold: mean over seeds; "
                 f"thin: each seed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --- class names a font can draw -----------------------------------------------------------
# matplotlib's own font, DejaVu Sans, has no kana: KMNIST's "お (o)" would be drawn as boxes.

# Fonts whose every glyph is a placeholder box (matplotlib ships one): never a fallback.
_PLACEHOLDER_FONTS = ("Last Resort",)


@cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font
    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError):
        return frozenset()


def _default_font() -> tuple[str, frozenset[int]]:
    """The family figures are drawn in, and the characters its font has."""
    from matplotlib import font_manager, rcParams
    path = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    return font_manager.get_font(path).family_name, _charmap(path)


def _drawable(text: str, chars: frozenset[int]) -> bool:
    return all(ord(c) in chars or c.isspace() for c in text)


@cache
def _fallback_family(needed: str) -> str | None:
    """An installed font family that has every character of ``needed``, or None."""
    from matplotlib import font_manager
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda f: (f.name, f.fname)):
        if entry.name.startswith(_PLACEHOLDER_FONTS):
            continue
        if _drawable(needed, _charmap(entry.fname)):
            return entry.name
    return None


def _romanized(label: str, index: int, chars: frozenset[int]) -> str:
    """What of ``label`` the font can draw: the reading in parentheses of ``お (o)``, else
    the drawable characters, else the class's index."""
    m = re.fullmatch(r"\s*(.*?)\s*\((.+)\)\s*", label)
    for part in (m.group(2), m.group(1)) if m else ():
        if part and _drawable(part, chars):
            return part
    kept = "".join(c for c in label if ord(c) in chars).strip(" ()")
    return kept or str(index)


def class_labels(classes: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Tick labels a figure draws without empty boxes, and the font families to draw them
    in (None: the default). Names the default font lacks are drawn with an installed font
    that has them (matplotlib falls back glyph by glyph along the list); with none installed,
    as their romanized part: ``お (o)`` -> ``o``."""
    family, chars = _default_font()
    labels = [str(c) for c in classes]
    missing = "".join(sorted({c for label in labels for c in label
                              if not c.isspace() and ord(c) not in chars}))
    if not missing:
        return labels, None
    other = _fallback_family(missing)
    if other is not None:
        return labels, [family, other]
    return [_romanized(label, i, chars) for i, label in enumerate(labels)], None


def confusion_png(cm: np.ndarray, title: str, classes: Sequence[str]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.imshow(np.log1p(cm), cmap="Blues")
    k = len(cm)
    labels, families = class_labels(classes)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    if families:
        for tick in (*ax.get_xticklabels(), *ax.get_yticklabels()):
            tick.set_fontfamily(families)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() or 1
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6.5,
                        color="white" if np.log1p(cm[i, j]) > 0.6 * np.log1p(top) else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def misclassified_png(x_test: np.ndarray, y_test: np.ndarray, preds: np.ndarray, title: str,
                      max_images: int = 32, cols: int = 8) -> bytes | None:
    """The first test digits the run gets wrong, each titled 'predicted / true'."""
    wrong = np.flatnonzero(preds != y_test)[:max_images]
    if not len(wrong):
        return None
    plt = _plt()
    rows = -(-len(wrong) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.75, rows * 0.9 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(x_test[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{preds[i]} / {y_test[i]}", fontsize=8, color="C3")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def gradient_png(norms: Mapping[str, Mapping[str, float]]) -> bytes:
    """Gradient norm per parameterised layer (first layer left), one line per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for i, (model, g) in enumerate(norms.items()):
        ax.semilogy(range(len(g)), list(g.values()), "o-", color=f"C{i % 10}", label=model)
        for x, (layer, v) in enumerate(g.items()):
            ax.annotate(layer, (x, v), fontsize=6, alpha=0.7, xytext=(2, 3),
                        textcoords="offset points")
    ax.set_xlabel("parameterised layer (input side left)")
    ax.set_ylabel("gradient L2 norm")
    ax.set_title("Gradient norm per layer, early in training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
