"""Class names in figures are drawn with glyphs, never as empty boxes, on a plain install."""

from __future__ import annotations

import warnings

import numpy as np

from cnnbench.data.datasets import KMNIST, MNIST
from cnnbench.report.charts import class_labels, confusion_png


def _missing_glyph_warnings(classes) -> list[str]:
    cm = np.eye(len(classes), dtype=np.int64) * 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = confusion_png(cm, "Confusion matrix", classes)
    assert png.startswith(b"\x89PNG")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_kmnist_confusion_matrix_draws_every_class_name_without_a_missing_glyph():
    # matplotlib warns "Glyph 12362 (HIRAGANA LETTER O) missing from font(s) DejaVu Sans" for
    # each box it draws instead of a character.
    assert _missing_glyph_warnings(KMNIST.classes) == []


def test_kmnist_names_fall_back_to_their_reading_or_to_a_font_that_has_the_kana():
    labels, families = class_labels(KMNIST.classes)
    if families is None:  # no installed font has hiragana: the romanized reading
        assert labels == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    else:  # a font with kana is installed: the names as they are, drawn in it
        assert labels == list(KMNIST.classes) and len(families) == 2


def test_a_name_the_default_font_lacks_is_drawn_in_an_installed_font_that_has_it():
    # Circled letters are in STIXGeneral (shipped with matplotlib) but not in DejaVu Sans.
    labels, families = class_labels(["Ⓐ (a)", "Ⓑ (b)"])
    assert labels == ["Ⓐ (a)", "Ⓑ (b)"]
    assert families == ["DejaVu Sans", "STIXGeneral"]
    assert _missing_glyph_warnings(["Ⓐ (a)", "Ⓑ (b)"]) == []


def test_names_the_default_font_has_are_left_alone():
    assert class_labels(MNIST.classes) == (list(MNIST.classes), None)
    assert class_labels(["T-shirt/top", "Ankle boot"]) == (["T-shirt/top", "Ankle boot"], None)
