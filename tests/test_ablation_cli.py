"""``cnnbench run`` of a study with ablations and claims, and ``cnnbench ablate``, on toy data."""

from __future__ import annotations

import re

import pytest
from test_cli_run_files import SPEC, make_dataset

from cnnbench.cli import main
from cnnbench.store.run_store import RunStore

STUDY = """\
data_dir: bars
training:
  optimizer: {Adam: {learning_rate: 0.01}}
  epochs: 2
  batch_size: 32
  seeds: [0, 1]
ablations:
  - name: act-lr
    base: net.yaml
    design: factorial
    factors:
      activation: {set: activation, layers: hidden, levels: [relu, tanh]}
      lr: {training: learning_rate, levels: [0.01, 0.001]}
  - name: act-only
    base: net.yaml
    design: ofat
    factors:
      activation: {set: activation, layers: hidden, levels: [relu, tanh]}
claims:
  - name: tanh
    says: tanh is worse than relu here
    ablation: act-lr
    factor: activation
    expect: lower
    level: tanh
    than: [relu]
"""


def _setup(tmp_path, study: str = STUDY):
    """The bars data, the spec net.yaml and ``study`` as study.yaml in ``tmp_path``."""
    make_dataset(tmp_path / "bars")
    (tmp_path / "net.yaml").write_text(SPEC.format(name="net", units=3))
    (tmp_path / "study.yaml").write_text(study)
    return tmp_path / "study.yaml"


@pytest.mark.slow
def test_an_ablation_study_trains_each_distinct_variant_once_and_says_what_matters(
        tmp_path, capsys):
    study, store, out = _setup(tmp_path), tmp_path / "store", tmp_path / "out"
    args = ["run", str(study), "--store", str(store), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    # 4 factorial cells; the OFAT's 2 variants are 2 of them: 4 variants x 2 seeds = 8 runs.
    assert "4 distinct variants x 2 seed(s) = 8 runs" in printed
    assert len(RunStore(store).runs()) == 8
    assert "validate on the last 24 of them" in printed  # 240 images, validation_split 0.1
    md = (out / "report.md").read_text()
    assert "## What matters" in md and "### act-lr" in md and "### act-only" in md
    assert re.search(r"Claim \"tanh is worse than relu here\" \(activation=tanh lower test "
                     r"accuracy than relu, the other factors held fixed; Holm over its 2 "
                     r"comparison\(s\)\): (SUPPORTED|"
                     r"CONTRADICTED|NOT SEPARABLE|MIXED)\.", md)
    assert "lr x activation interaction" in md or "activation x lr interaction" in md
    assert "Validation: the last 10 % of the training images" in md
    assert "Validation on the last part of the training images (Keras" in md  # the method
    assert (out / "runs" / "base" / "seed-0" / "results.json").is_file()
    assert (out / "runs" / "learning_rate=0.001" / "seed-1" / "results.json").is_file()
    # Again: every run is reused, nothing trains.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("reused run") == 8 and "Epoch 1/2" not in again


@pytest.mark.slow
def test_ablate_is_the_short_form_and_the_test_set_can_validate_on_request(tmp_path, capsys):
    make_dataset(tmp_path / "bars")
    (tmp_path / "net.yaml").write_text(SPEC.format(name="net", units=3))
    out = tmp_path / "out"
    rc = main(["ablate", str(tmp_path / "net.yaml"), "--vary", "activation=relu,tanh",
               "--design", "ofat", "--seeds", "2", "--epochs", "1", "--data-dir",
               str(tmp_path / "bars"), "--store", str(tmp_path / "s"), "--out", str(out),
               "--validation-split", "0"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "net[activation=tanh], seed 1" in printed
    assert "Train on 240 samples, validate on 60 samples" in printed
    md = (out / "report.md").read_text()
    assert "These runs validated on the test set after every epoch" in md
    assert "activation=tanh vs relu" in md


def test_summary_lists_a_studys_variants_and_shows_one(tmp_path, capsys):
    _setup(tmp_path)
    assert main(["summary", str(tmp_path / "study.yaml")]) == 0
    listing = capsys.readouterr().out
    assert "net[activation=tanh,lr=0.001]" in listing and "learning_rate=0.001" in listing
    assert main(["summary", str(tmp_path / "study.yaml"), "--variant",
                 "net[activation=tanh]"]) == 0
    assert 'Model: "net[activation=tanh]"' in capsys.readouterr().out
    assert main(["summary", str(tmp_path / "study.yaml"), "--variant", "net[tanh]"]) == 2
    assert "no variant 'net[tanh]'" in capsys.readouterr().err


STOPPING = """\
data_dir: bars
training:
  optimizer: {Adam: {learning_rate: 0.01}}
  epochs: 4
  batch_size: 32
  seeds: [0, 1]
  early_stopping: 1
  monitor: val_acc
  min_delta: 0.5     # no epoch after the first improves by half the accuracy
  baseline: 1.01     # nor beats this: the patience runs out at epoch 2
ablations:
  - name: act
    base: net.yaml
    design: ofat
    factors:
      activation: {set: activation, layers: hidden, levels: [relu, tanh]}
"""


@pytest.mark.slow
def test_runs_early_stopping_ends_are_finished_runs_and_the_report_counts_them(tmp_path,
                                                                              capsys):
    """Through worker processes (--jobs 2): a run that early stopping ended after 2 of its 4
    epochs is a finished run, reused as one, and the report says which stopped and when."""
    study, store, out = _setup(tmp_path, STOPPING), tmp_path / "store", tmp_path / "out"
    args = ["run", str(study), "--store", str(store), "--out", str(out), "--jobs", "2"]
    assert main(args) == 0, capsys.readouterr().err
    runs = RunStore(store).runs()
    assert len(runs) == 4 and {str(r.status) for r in runs} == {"finished"}
    assert {(r.epochs_planned, r.epochs_done) for r in runs} == {(4, 2)}
    md = (out / "report.md").read_text()
    assert ("Early stopping (patience 1 on val_acc, baseline 1.01) ended 4 of 4 runs early: "
            "8 of 16 epochs trained (50 % saved)") in md
    assert "| 2*, 2* |" in md  # each variant's two seeds, in the Epochs trained column
    assert "early stopping ended 2 of 2 runs, after epoch(s) 2, 2 of 4" in md
    assert main(args) == 0
    assert capsys.readouterr().out.count("reused run") == 4
