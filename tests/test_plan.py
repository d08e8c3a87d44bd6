"""The study plan ``cnnbench run`` builds from its options and study file (no data, no training)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_ablation_cli import _setup

from cnnbench.cli import build_parser
from cnnbench.cli.run import plan_of as plan_of_args
from cnnbench.errors import UsageError
from cnnbench.model.spec import get_spec
from cnnbench.settings import SETTING
from cnnbench.study.plan import ExecutorSettings, Overrides, PlanGroup, StudyPlan, build_plan
from cnnbench.study.studyfile import load_study


def plan_of(*argv: str) -> StudyPlan:
    return plan_of_args(build_parser(["run"]).parse_args(["run", *argv]))


def test_a_plain_study_is_one_group_with_a_config_a_seed_and_a_folder_a_seed(tmp_path):
    plan = plan_of("--models", "CNN_MNIST_1", "CNN_MNIST_2", "--seeds", "2", "--epochs", "3",
                   "--out", str(tmp_path), "--jobs", "2", "--force", "--log", "tensorboard")
    assert plan.groups == (PlanGroup("", (get_spec("CNN_MNIST_1"), get_spec("CNN_MNIST_2")),
                                     {"epochs": 3}),)
    assert plan.seeds == (0, 1) and plan.specs == list(plan.groups[0].specs)
    assert (plan.force, plan.loggers, plan.executor) == (True, ("tensorboard",),
                                                         ExecutorSettings("local", 2))
    assert [(c.seed, c.epochs) for c in plan.configs(plan.groups[0])] == [(0, 3), (1, 3)]
    assert [plan.out_for(plan.groups[0], s) for s in plan.seeds] == [tmp_path / "seed-0",
                                                                      tmp_path / "seed-1"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.force = False  # type: ignore[misc]


def test_one_seed_writes_into_out_itself():
    plan = plan_of("--models", "CNN_MNIST_1", "--seed", "7")
    assert plan.seeds == (7,) and plan.out_for(plan.groups[0], 7) == Path("cnnbench-results")


def test_an_ablation_study_is_planned_as_groups_of_settings_each_in_its_folder(tmp_path):
    plan = plan_of(str(_setup(tmp_path)), "--out", str(tmp_path / "out"))
    assert [g.label for g in plan.groups] == ["base", "learning_rate=0.001"]
    assert [len(g.specs) for g in plan.groups] == [2, 2]  # relu, tanh under each rate
    assert plan.seeds == (0, 1) and [a.name for a in plan.ablations] == ["act-lr", "act-only"]
    assert [c.name for c in plan.claims] == ["tanh"]
    assert plan.out_for(plan.groups[1], 1) == tmp_path / "out" / "runs" / \
        "learning_rate=0.001" / "seed-1"
    assert plan.data_dir == tmp_path / "bars"
    # The study's own settings, before the ablation varies them, head the run's output.
    assert plan.config(0).to_dict() == plan.configs(plan.groups[0])[0].to_dict()


def test_fp32_is_the_default_for_the_notebooks_study_and_auto_for_every_other(tmp_path):
    from cnnbench.train.precision import cpu_has_bf16

    spec = tmp_path / "mine.yaml"
    spec.write_text("name: MINE\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten: {}\n"
                    "  - Dense: {units: 10, activation: softmax}\n")
    auto = "bf16" if cpu_has_bf16() else "fp32"
    cases = {
        (): "fp32",  # the notebook's study
        ("--models", "CNN_MNIST_2", "--epochs", "1"): "fp32",  # its models on MNIST
        ("--model-file", str(spec)): auto,
        ("--models", "CNN_MNIST_1", "--model-file", str(spec)): auto,
        ("--dataset", "fashion-mnist"): auto,
        ("--precision", "fp32", "--dataset", "fashion-mnist"): "fp32",  # asked for: as asked
        ("--precision", "bf16"): "bf16",
        (str(_setup(tmp_path)),): auto,  # an ablation study
    }
    for argv, want in cases.items():
        plan = plan_of(*argv)
        assert plan.config(0).precision == want, argv
    assert plan_of().default_precision() == "fp32"
    assert plan_of("--dataset", "kmnist").default_precision() == "auto"


def test_flags_override_the_study_file_and_each_setting_says_where_it_came_from(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("models: [CNN_MNIST_1]\ntraining: {epochs: 5, batch_size: 64, "
                     "seeds: [3, 4]}\n")
    plan = build_plan(load_study(study), Overrides(training={"epochs": 2}))
    config = plan.config(3)
    assert (config.epochs, config.batch_size, plan.seeds) == (2, 64, (3, 4))
    assert plan.origin["epochs"] == "--epochs" and plan.origin["batch_size"] == "study file"
    assert plan.origin["seeds"] == "study file"
    assert build_plan(None, Overrides()).origin.get("epochs", "default") == "default"


def test_an_ablation_validates_on_a_holdout_unless_told_otherwise(tmp_path):
    study = load_study(_setup(tmp_path))
    assert build_plan(study, Overrides()).training["validation_split"] == 0.1
    told = build_plan(study, Overrides(training={"validation_split": 0.0}))
    assert "validation_split" not in told.training and not told.config(0).holdout
    assert build_plan(None, Overrides()).config(0).holdout is False  # the notebook's protocol


def test_contradictions_are_refused_before_any_data_is_loaded():
    with pytest.raises(UsageError, match=r"^--early-stopping 2 needs a held-out validation"):
        build_plan(None, Overrides(training={"early_stopping": 2}))
    with pytest.raises(UsageError, match="--ray-address a:1 is for --executor ray"):
        build_plan(None, Overrides(executor=ExecutorSettings("local", ray_address="a:1")))
    with pytest.raises(UsageError, match="--jobs 2 is for --executor local"):
        build_plan(None, Overrides(executor=ExecutorSettings("ray", jobs=2)))
    with pytest.raises(UsageError, match="appear twice"):
        build_plan(None, Overrides(models=("CNN_MNIST_1", "CNN_MNIST_1")))


def test_every_flag_of_a_setting_comes_from_its_one_declaration():
    parser = build_parser(["run"])
    run = parser._subparsers._group_actions[0].choices["run"]  # the run command's parser
    actions = {a.dest: a for a in run._actions}
    for name in ("epochs", "batch_size", "train_limit", "validation_split", "early_stopping"):
        s = SETTING[name]
        assert actions[name].option_strings == [s.option] and s.help in actions[name].help
    assert f"(default {SETTING['batch_size'].default})" in actions["batch_size"].help
    args = parser.parse_args(["run", "--batch-size", "64", "--validation-split", "0.2"])
    assert (args.batch_size, args.validation_split) == (64, 0.2)
