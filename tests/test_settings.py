"""Every training setting is declared once (settings.py); the config, the study file and the
start-of-run line read that declaration."""

from __future__ import annotations

import dataclasses

import pytest
from test_ablation_cli import _setup

from cnnbench.settings import DEFAULTS, NOT_IN_KEY, SETTINGS, STUDY_FIELDS, seeds_of
from cnnbench.study.plan import Overrides, build_plan
from cnnbench.study.studyfile import load_study
from cnnbench.train.engine import TrainConfig
from cnnbench.workflow.run import settings_line


def test_the_train_config_has_exactly_the_declared_settings_and_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert list(fields) == [s.name for s in SETTINGS]
    assert fields == DEFAULTS
    assert NOT_IN_KEY == ("eval_batch_size",)  # speed only: the run ids stay as they were


def test_a_study_file_takes_every_setting_it_declares_and_refuses_others(tmp_path):
    assert {"epochs", "batch_size", "validation_split", "early_stopping", "seeds",
            "loss"} <= set(STUDY_FIELDS)
    assert "eval_batch_size" not in STUDY_FIELDS and "precision" not in STUDY_FIELDS
    f = tmp_path / "s.yaml"
    f.write_text("models: [CNN_MNIST_1]\ntraining: {validation_size: 500, early_stopping: 0, "
                 "monitor: val_acc}\n")
    config = build_plan(load_study(f), Overrides()).config(0)
    assert (config.validation_size, config.early_stopping, config.monitor) == (500, 0, "val_acc")


@pytest.mark.parametrize(("value", "message"), [
    ([], "must be an integer or a non-empty list"),
    ([1, 2, 1], "seed(s) 1 given more than once"),
    ([2**63], "is out of range"),
    (list(range(1001)), "at most 1000"),
])
def test_seeds_are_checked_by_one_rule(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        seeds_of(value, "seeds")


def test_the_first_line_says_every_default_that_differs_between_kinds_of_study(tmp_path):
    notebook = build_plan(None, Overrides())
    line = settings_line(notebook, "fp32", 60000, 60000, 10000)
    assert line == ("Settings: precision fp32 (default for the notebook's study); validation on "
                    "the 10000 test images, every epoch (default); 12 epochs (default); "
                    "training images: all 60000 (default)")
    ablation = build_plan(load_study(_setup(tmp_path)), Overrides(training={"train_limit": 300}))
    line = settings_line(ablation, "bf16", 300, 270, 10000)
    assert "precision bf16 (asked: auto, default: bf16 where the hardware has it)" in line
    assert "validation on the last 30 training images (default for ablations)" in line
    assert "training images: the first 300 (--train-limit)" in line
