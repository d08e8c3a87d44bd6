"""The study's summary table in a narrow terminal: names wrap, never end in an ellipsis."""

from __future__ import annotations

from rich.console import Console

from cnnbench.model.spec import build_spec, get_spec
from cnnbench.report.table import summary_table

NAMES = ("CNN_MNIST_2[depth=conv4,activation=sigmoid]", "CNN_MNIST_2[depth=conv4,activation=relu]")


def _rows(names):
    base = get_spec("CNN_MNIST_2").raw
    return [{"spec": build_spec(dict(base, name=n)), "test_loss": 0.0312, "test_accuracy": 0.99,
             "seconds": 301.0, "status": "finished"} for n in names]


def _render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text().splitlines()


def _model_column(lines: list[str]) -> list[str]:
    """Each row's Model cell, its folded lines joined: a row starts where Test Loss has a
    number; the lines after it without one continue its cells."""
    cells: list[str] = []
    for line in lines:
        parts = line.split("│")
        if len(parts) < 8:
            continue
        model, loss = parts[1].strip(), parts[4].strip()
        if loss:
            cells.append(model)
        elif model and cells:
            cells[-1] += model
    return cells


def test_two_names_differing_only_at_the_end_stay_whole_and_apart_at_80_columns():
    lines = _render(summary_table(_rows(NAMES)), 80)
    assert all(len(ln) <= 80 for ln in lines)
    assert "…" not in "\n".join(lines)
    assert _model_column(lines) == list(NAMES)


def test_a_variant_name_keeps_its_brackets_rather_than_being_read_as_markup():
    lines = _render(summary_table(_rows(["CNN_MNIST_2[width=2]"])), 120)
    assert any("CNN_MNIST_2[width=2]" in ln for ln in lines)


def test_the_model_list_keeps_long_names_whole_at_80_columns():
    from cnnbench.report.table import models_table
    lines = _render(models_table([r["spec"] for r in _rows(NAMES)]), 80)
    assert all(len(ln) <= 80 for ln in lines) and "…" not in "\n".join(lines)
    width = lines[0].index("Layers")  # no box: the Model column is what precedes Layers
    names: list[str] = []
    for line in lines[1:]:
        cell = line[:width].strip()
        if line.rstrip().endswith("5,367,950"):  # a row's first line carries its Params
            names.append(cell)
        elif cell:
            names[-1] += cell
    assert names == list(NAMES)


def test_a_studys_variants_say_the_one_name_each_is_stored_under():
    """Several variants of several ablations are one run: the base variant is stored as the
    base model itself, and a variant whose name says more than it changes, under less."""
    from cnnbench.report.table import variants_table
    from cnnbench.study.summary import summary_target
    spec, (study, rows) = summary_target("notebook-claims")
    assert spec is None and study == "notebook-claims"
    stored = {(a, v): s for a, v, s, *_ in rows}
    assert stored[("depth-activation", "CNN_MNIST_2[depth=conv4,activation=sigmoid]")] == \
        "CNN_MNIST_2"
    assert stored[("depth-activation", "CNN_MNIST_2[depth=conv4,activation=relu]")] == \
        "CNN_MNIST_2[activation=relu]"
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(variants_table(study, rows))
    assert "Stored as" in console.export_text()
