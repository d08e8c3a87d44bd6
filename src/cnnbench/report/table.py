"""Terminal tables: the study's summary, a Keras-style model summary, the model list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from cnnbench.model.layers import keras_layer_names
from cnnbench.model.spec import ModelSpec


def describe_batchnorm(spec: ModelSpec) -> str:
    return "Yes" if spec.uses_batchnorm else "No"


def describe_dropout(spec: ModelSpec) -> str:
    """The notebook's wording: ``Yes (0.5)`` or ``No``."""
    rates = spec.dropout_rates
    return f"Yes ({', '.join(f'{r:g}' for r in rates)})" if rates else "No"


def add_whole_column(table: Table, header: str, **kwargs: Any) -> None:
    """A column whose cells wrap (folding a long word) rather than end in an ellipsis: two
    variant names that differ only at the end must stay apart in a narrow terminal."""
    table.add_column(header, overflow="fold", **kwargs)


def summary_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The notebook's summary columns, derived from the specs, plus parameters and time.

    Each row: spec, test_loss, test_accuracy (fraction), seconds, status.
    """
    t = Table(title="Summary", title_justify="left")
    for col in ("Model", "Batch Normalization", "Dropout"):
        add_whole_column(t, col)
    for col in ("Test Loss", "Test Accuracy", "Params", "Train time"):
        # Numbers never wrap: the name column gives way first.
        add_whole_column(t, col, justify="right", no_wrap=True)
    for r in rows:
        spec = r["spec"]
        acc = f"{100 * r['test_accuracy']:.2f} %" if r["status"] == "finished" else r["status"]
        t.add_row(Text(spec.name), describe_batchnorm(spec), describe_dropout(spec),
                  f"{r['test_loss']:.4f}", acc, f"{spec.params:,}", f"{r['seconds']:.0f} s")
    return t


def _fmt_mb(n_params: int) -> str:
    return f"{n_params * 4 / 2**20:.2f} MB"


def model_summary(spec: ModelSpec) -> tuple[Table, list[str]]:
    """Keras' ``model.summary()``: layer, output shape, parameters; with MACs per image."""
    t = Table(title=f'Model: "{spec.name}"', title_justify="left")
    t.add_column("Layer (type)")
    t.add_column("Output Shape")
    t.add_column("Param #", justify="right")
    t.add_column("MACs / image", justify="right")
    names = keras_layer_names(layer.kind for layer in spec.layers)
    for name, layer in zip(names, spec.layers, strict=True):
        shape = "(None, " + ", ".join(map(str, layer.output_shape)) + ")"
        t.add_row(f"{name} ({layer.kind})", shape, f"{layer.params:,}",
                  f"{layer.macs:,}" if layer.macs else "0")
    totals = [
        f"Total params: {spec.params:,} ({_fmt_mb(spec.params)})",
        f"Trainable params: {spec.trainable_params:,} ({_fmt_mb(spec.trainable_params)})",
        f"Non-trainable params: {spec.non_trainable_params:,} "
        f"({_fmt_mb(spec.non_trainable_params)})",
        f"Forward MACs per image: {spec.macs:,}; training FLOPs per image: "
        f"{spec.train_flops_per_image / 1e6:.1f} M",
    ]
    return t, totals


def models_table(specs: Sequence[ModelSpec]) -> Table:
    t = Table(box=None, pad_edge=False)
    add_whole_column(t, "Model")
    t.add_column("Layers")
    t.add_column("Params", justify="right", no_wrap=True)
    for spec in specs:
        t.add_row(Text(spec.name), spec.shorthand(), f"{spec.params:,}")
    return t


def variants_table(study: str, rows: Sequence[tuple[str, str, str, int, str, str]]) -> Table:
    """A study's variants: ablation, variant, the one name its model and settings are stored
    under (several variants of several ablations can be one run), parameters, training edits,
    layers."""
    table = Table(title=f"{study}: variants")
    for col in ("Ablation", "Variant", "Stored as", "Params", "Training", "Layers"):
        table.add_column(col, justify="right" if col == "Params" else "left",
                         overflow="fold", min_width=12 if col in ("Variant", "Stored as")
                         else None)
    for ablation, variant, stored, params, training, layers in rows:
        table.add_row(Text(ablation), Text(variant), Text("same" if stored == variant else stored),
                      f"{params:,}", training, layers)
    return table
