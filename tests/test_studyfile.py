"""Study files: models, dataset and training settings, validated with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cnnbench_main, error_line

from cnnbench.model.spec import SpecError
from cnnbench.study.studyfile import load_study
from cnnbench.train.engine import TrainConfig

TINY = """\
name: tiny
layers:
  - Conv2D: {filters: 4, kernel_size: 3, activation: relu}
  - GlobalAveragePooling2D
  - Dense: {units: 10, activation: softmax}
"""


def study(tmp_path: Path, text: str) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "tiny.yaml").write_text(TINY)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as e:
        load_study(path)
    return str(e.value)


def test_full_study_file_resolves_models_relative_to_itself(tmp_path):
    s = load_study(study(tmp_path, """\
name: fashion
models: [CNN_MNIST_1, models/tiny.yaml]
dataset: fashion-mnist
training:
  optimizer: {SGD: {learning_rate: 0.05, momentum: 0.9}}
  loss: categorical_crossentropy
  batch_size: 64
  epochs: 2
  seeds: [0, 1]
"""))
    assert [m.name for m in s.specs] == ["CNN_MNIST_1", "tiny"]
    assert s.dataset == "fashion-mnist" and s.seeds == (0, 1)
    assert s.optimizer_args == {"learning_rate": 0.05, "momentum": 0.9, "nesterov": False,
                                "weight_decay": 0.0}
    config = TrainConfig(seed=1, **s.train_config_kwargs())
    assert config.optimizer_label() == ("SGD(learning_rate=0.05, momentum=0.9, "
                                        "nesterov=False, weight_decay=0.0)")
    assert (config.epochs, config.batch_size) == (2, 64)


def test_defaults_are_the_notebooks(tmp_path):
    s = load_study(study(tmp_path, "models: [CNN_MNIST_2]\n"))
    config = TrainConfig(**s.train_config_kwargs())
    assert config == TrainConfig()  # Adadelta(1.0, 0.95, 1e-7), batch 128, 12 epochs, seed 0
    assert s.dataset is None and s.data_dir is None  # the CLI then loads MNIST


def test_adadelta_arguments_go_to_the_configs_optimizer_args_as_any_others(tmp_path):
    s = load_study(study(tmp_path, "models: [CNN_MNIST_2]\ntraining:\n"
                                   "  optimizer: {Adadelta: {lr: 0.5, epsilon: 1e-6}}\n"))
    config = TrainConfig(**s.train_config_kwargs())
    assert (config.optimizer, config.optimizer_args) == (
        "Adadelta", (("learning_rate", 0.5), ("rho", 0.95), ("epsilon", 1e-6)))


@pytest.mark.parametrize("body, expected", [
    ("models: [CNN_MNIST_9]\n",
     "study.yaml: models[1]: unknown model 'CNN_MNIST_9'. Did you mean"),
    ("models: [CNN_MNIST_1]\nepochs: 3\n",
     "study.yaml: unknown field 'epochs'. A study file has: name, description, models"),
    ("models: [CNN_MNIST_1]\ntraining: {epoch: 3}\n",
     "study.yaml: training: unknown field 'epoch'. Did you mean 'epochs'? Its fields:"),
    ("models: [CNN_MNIST_1]\ntraining: {epochs: 0}\n",
     "study.yaml: the 'epochs' parameter of training must be a positive integer (at most 100_000). "
     "Got 0 instead."),
    ("models: [CNN_MNIST_1]\ntraining: {optimizer: adam}\n",
     "study.yaml: training.optimizer: unknown optimizer 'adam'. Did you mean Adam? "
     "Known optimizers: Adadelta, SGD, Adam, AdamW, RMSprop."),
    ("models: [CNN_MNIST_1]\ntraining: {optimizer: {Adam: {momentum: 0.9}}}\n",
     "study.yaml: training.optimizer: Adam has no argument 'momentum'. Its arguments: "
     "learning_rate, beta_1, beta_2, epsilon, amsgrad."),
    ("models: [CNN_MNIST_1]\ntraining: {optimizer: {SGD: {momentum: 1.5}}}\n",
     "study.yaml: training.optimizer: the 'momentum' parameter of SGD must be a number in "
     "[0, 1). Got 1.5 instead."),
    ("models: [CNN_MNIST_1]\ntraining: {loss: mse}\n",
     "study.yaml: training.loss: unknown loss 'mse'. Known: categorical_crossentropy"),
    ("models: [CNN_MNIST_1]\ntraining: {seeds: [1, 1]}\n",
     "study.yaml: training.seeds: seed(s) 1 given more than once"),
    ("models: [CNN_MNIST_1]\ndataset: cifar10\n",
     "study.yaml: dataset: unknown dataset 'cifar10'. Known: mnist, fashion-mnist, kmnist"),
    ("models: [CNN_MNIST_1, CNN_MNIST_1]\n",
     "study.yaml: models: the model name(s) ['CNN_MNIST_1'] appear twice"),
    ("models: []\n", "study.yaml: 'models' must be a non-empty list"),
])
def test_study_errors_name_the_file_and_field(tmp_path, body, expected):
    assert expected in error_of(study(tmp_path, body))


def test_an_error_in_a_model_file_names_that_file_and_layer(tmp_path):
    path = study(tmp_path, "models: [models/tiny.yaml]\n")
    (tmp_path / "models" / "tiny.yaml").write_text(TINY.replace("filters: 4", "filters: -4"))
    msg = error_of(path)
    assert msg.startswith(str(tmp_path / "models" / "tiny.yaml") + ": layer 1 (Conv2D): the "
                          "'filters' parameter of Conv2D must be a positive integer. "
                          "Got -4 instead.")


def test_bad_yaml_in_the_study_names_its_line(tmp_path):
    path = study(tmp_path, "models: [CNN_MNIST_1\ntraining: {}\n")
    assert error_of(path).startswith(f"{path}:2:")


HUGE = "1" + "0" * 400  # an integer past a float's 1.8e308, as YAML reads it


@pytest.mark.parametrize("body, says", [
    (f"models: [CNN_MNIST_1]\ntraining: {{optimizer: {{SGD: {{learning_rate: {HUGE}}}}}}}\n",
     "study.yaml: training.optimizer: the 'learning_rate' parameter of SGD must be a number "
     ">= 0. Got an integer of about 401 digits (beyond a float's 1.8e308) instead."),
    ("models: [CNN_MNIST_1]\ntraining: {optimizer: {Adadelta: {rho: .inf}}}\n",
     "the 'rho' parameter of Adadelta must be a number in [0, 1). Got inf instead."),
    ("models: [CNN_MNIST_1]\ntraining: {epochs: 100000000000000000000000}\n",
     "study.yaml: the 'epochs' parameter of training must be a positive integer (at most "
     "100_000). Got 100000000000000000000000 instead."),
    ("ablations: [{base: CNN_MNIST_2, factors: {w: {scale: hidden, levels: [1, .inf]}}}]\n",
     "study.yaml: ablations[1]: factor 'w': level 'inf': the 'scale' parameter of a factor "
     "must be a number in (0, 64]. Got inf instead."),
    ("ablations: [{base: CNN_MNIST_2, factors: {lr: {training: learning_rate, levels: "
     f"[1.0, {HUGE}]}}}}}}]\n", "Got an integer of about 401 digits"),
    ("ablations: [{base: CNN_MNIST_2, factors: {d: {repeat: [4, 5], levels: [1, 1000000]}}}]\n",
     "level '1000000': the 'repeat' parameter of a factor must be a non-negative integer (at "
     "most 16). Got 1000000 instead."),
])
def test_numbers_past_a_float_or_a_bound_in_a_study_are_one_line(tmp_path, capsys, body, says):
    from cnnbench.cli import main
    path = study(tmp_path, body)
    assert says in error_of(path)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--store",
                 str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and says in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_a_study_whose_ablations_make_too_many_variants_is_refused_before_building_them(
        tmp_path):
    """Five 256-variant ablations: the fifth is refused by count, before any of its cells."""
    factors = ", ".join(f"f{i}: {{set: activation, layers: [{(1, 2, 4, 5)[i]}], levels: "
                        f"[{', '.join(['sigmoid', 'relu', 'tanh', 'elu'])}]}}"
                        for i in range(4))
    ablation = f"{{base: CNN_MNIST_2, factors: {{{factors}}}}}"
    names = ", ".join(f"{{name: a{i}, " + ablation[1:] for i in range(5))
    path = study(tmp_path, f"ablations: [{names}]\n")
    assert error_of(path) == (f"{path}: ablations[5]: its 256 variants take the study past 1,024 "
                   "variants in all (cnnbench.study.variants.MAX_STUDY_VARIANTS): split the "
                   "ablations into several studies.")


def test_a_study_seed_beyond_64_bits_is_refused(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("models: [CNN_MNIST_1]\ntraining: {seeds: [1, 18446744073709551616]}\n")
    code, out, err = cnnbench_main("run", study, "--out", tmp_path / "o")
    assert code == 2
    assert "s.yaml: training.seeds: 18446744073709551616 is out of range" in error_line(err, "run")


@pytest.mark.parametrize("levels", ["[[1], [2]]", "[{}, Flatten]", "[{Dropout: 0.5}, Flatten]",
                                    "[3, Flatten]"])
def test_an_insert_level_that_is_no_layer_is_one_line_naming_the_file_ablation_and_factor(
        tmp_path, levels):
    path = study(tmp_path, "ablations:\n  - base: CNN_MNIST_2\n    factors:\n"
                           f"      ins: {{insert_after: 2, levels: {levels}}}\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: ablations[1]: factor 'ins': level ")
    assert "a 'insert_after' level is a layer, e.g. Flatten" in msg and "\n" not in msg


def test_an_unknown_ablation_base_names_the_file_and_the_field(tmp_path):
    path = study(tmp_path, "ablations:\n  - base: cnn_mnist_2\n    factors:\n"
                           "      act: {set: activation, levels: [relu, sigmoid]}\n")
    assert error_of(path).startswith(f"{path}: ablations[1].base: unknown model 'cnn_mnist_2'. "
                                     "Did you mean CNN_MNIST_2")
