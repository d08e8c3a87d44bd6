"""A report never mixes what differs: runs are pooled and tested only with runs trained under
the same settings, every run id it covers is listed once, each p says its test and family, and
an ablation's What-matters section comes back from the store alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_ablation_cli import _setup
from test_cli_run_files import SPEC, make_dataset

from cnnbench.analysis.effects import Observation, ofat_effects
from cnnbench.cli import main
from cnnbench.model.spec import build_spec
from cnnbench.report.content import collect, pairwise_rows, setting_groups
from cnnbench.report.markdown import render_markdown
from cnnbench.store.records import RunRecord
from cnnbench.store.run_store import RunStore

Y = np.arange(200) % 10


def _spec(name: str, units: int = 16):
    return build_spec({"name": name, "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": units, "activation": "relu"}},
        {"Dense": {"units": 10, "activation": "softmax"}}]})


def _run(model: str, seed: int, acc: float, spec=None, rid: str | None = None,
         **settings) -> RunRecord:
    """A finished run whose predictions are right on the first ``acc`` of the images."""
    preds = Y.copy()
    wrong = int(round((1 - acc) * len(Y)))
    preds[:wrong] = (preds[:wrong] + 1) % 10
    config = {"epochs": 2, "batch_size": 32, "seed": seed, "train_limit": None,
              "precision": "fp32", "optimizer": "Adadelta",
              "optimizer_args": {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-7},
              "validation_split": 0.0, "validation_size": 0, "early_stopping": None,
              "eval_batch_size": 500} | settings
    h = {"loss": [1.0, 0.5], "acc": [0.5, acc], "val_loss": [1.0, 0.6],
         "val_acc": [0.5, acc], "seconds": [1.0, 1.0]}
    return RunRecord(model, spec or _spec(model), seed, h, 0.6, float(np.mean(preds == Y)),
                     preds, config=config, run_id=rid or f"{model}-{seed}-{len(settings)}"
                     f"{sorted(settings.items())}")


def test_runs_under_different_settings_are_never_pooled_nor_tested_across_groups():
    runs = ([_run("A", s, 0.90 + 0.01 * s, train_limit=2000) for s in range(3)]
            + [_run("A", s, 0.60 + 0.01 * s, train_limit=3000) for s in range(3)]
            + [_run("B", s, 0.80 + 0.01 * s, train_limit=2000) for s in range(3)])
    c = collect(runs, Y)
    assert [g.label for g in c.setting_groups] == ["train_limit=2000", "train_limit=3000"]
    assert [s.model for s in c.stats] == ["A [train_limit=2000]", "B [train_limit=2000]",
                                          "A [train_limit=3000]"]
    assert [s.n for s in c.stats] == [3, 3, 3]  # A's six runs are two models of three seeds
    # The one test: A against B at 2000 images; nothing across train_limit.
    assert [(x.a, x.b) for x in c.comparisons] == [("A [train_limit=2000]",
                                                    "B [train_limit=2000]")]
    assert c.comparisons[0].family == "the 1 model pair under [train_limit=2000]"
    assert c.conclusions[0].startswith("These 9 runs were trained under 2 different settings;"
                                       " each group is summarised apart and no test compares "
                                       "runs of different groups")
    assert "[train_limit=2000]: 6 run(s) of A, B; [train_limit=3000]: 3 run(s) of A." in \
        c.conclusions[0]


def test_a_group_is_labelled_by_the_settings_that_differ_and_nothing_else():
    runs = [_run("A", 0, 0.9), _run("A", 1, 0.9),
            _run("A", 0, 0.8, validation_split=0.1, precision="bf16", optimizer="Adam",
                 optimizer_args={"learning_rate": 0.001}),
            _run("A", 0, 0.8, optimizer_args={"learning_rate": 0.1, "rho": 0.95,
                                              "epsilon": 1e-7})]
    labels = [g.label for g in setting_groups(runs)]
    assert labels == ["fp32, Adadelta(learning_rate=1.0), test-set validation",
                      "bf16, Adam, holdout 10 %",
                      "fp32, Adadelta(learning_rate=0.1), test-set validation"]
    # Same optimizer, another learning rate: the label names the argument that differs.
    two = setting_groups([_run("A", 0, 0.9), _run("A", 0, 0.8, optimizer_args={
        "learning_rate": 0.1, "rho": 0.95, "epsilon": 1e-7})])
    assert [g.label for g in two] == ["learning_rate=1.0", "learning_rate=0.1"]
    # One group: names stay as they are.
    one = setting_groups([_run("A", 0, 0.9), _run("A", 1, 0.8)])
    assert len(one) == 1 and one[0].label == "" and one[0].models == ["A"]


def test_one_name_over_two_architectures_is_two_models():
    runs = [_run("net", s, 0.9, spec=_spec("net", 16), rid=f"n16-{s}") for s in range(2)] + \
           [_run("net", s, 0.7, spec=_spec("net", 32), rid=f"n32-{s}") for s in range(2)]
    c = collect(runs, Y)
    names = [s.model for s in c.stats]
    assert len(names) == 2 and all(re.fullmatch(r"net \[layers [0-9a-f]{6}\]", n)
                                   for n in names)
    assert [s.n for s in c.stats] == [2, 2]


def test_a_run_given_twice_counts_once_and_every_run_id_is_listed():
    a, b = _run("A", 0, 0.9, rid="aaaa1111"), _run("A", 1, 0.8, rid="bbbb2222")
    c = collect([a, a, b, a], Y)
    assert c.stats[0].n == 2 and c.stats[0].seeds == [0, 1]
    assert [r["Run id"] for r in c.run_rows] == ["aaaa1111", "bbbb2222"]
    md = render_markdown(c)
    assert "## Runs" in md and "| aaaa1111 | A | 0 | finished | 90.00 |" in md
    assert md.count("aaaa1111") == 1 + md.count("runs aaaa1111")


def test_every_p_value_names_its_test_and_its_family():
    runs = [_run(m, s, acc + 0.01 * s) for m, acc in (("A", 0.9), ("B", 0.7), ("C", 0.5))
            for s in range(3)]
    rows = pairwise_rows(collect(runs, Y).comparisons)
    assert {r["Holm over"] for r in rows} == {"the 3 model pairs"}
    assert {r["Test"] for r in rows} == {"Welch t-test over 3 and 3 seeds"}
    obs = [Observation(f"v{lvl}", {"f": lvl}, s, 0.9 - 0.1 * i + 0.01 * s, 0.1)
           for i, lvl in enumerate(("a", "b", "c")) for s in range(3)]
    effs = ofat_effects(obs, {"f": "a"})
    assert "over the 2 tests of this ablation" in effs[0].describe()


def test_a_stored_study_that_cannot_be_read_is_left_out_with_a_note():
    from cnnbench.report.whatmatters import stored_studies
    studies, notes = stored_studies({
        "r1": {"study": {"format": 99, "ablations": []}},
        "r2": {"study": {"format": 1, "ablations": [{"name": "x"}], "claims": [],
                         "runs": [["x", "v", "zero", "r2"]]}},
        "r3": {"model": {"name": "net"}, "key": {"spec": {"name": "net"}}}})  # not a variant
    assert studies == []
    assert notes == ["What matters: a study stored with these runs cannot be read (format 99, "
                     "this version reads 1); its section is left out.",
                     "What matters: a study stored with these runs cannot be read (KeyError: "
                     "'base'); its section is left out."]


def test_the_study_document_written_with_a_run_reads_back_whole(tmp_path):
    from cnnbench.report.whatmatters import STUDY_FORMAT, from_document
    from cnnbench.study.studydoc import STUDY_FORMAT as WRITTEN
    from cnnbench.study.studydoc import study_document
    from cnnbench.study.studyfile import load_study
    assert STUDY_FORMAT == WRITTEN
    study = load_study(_study(tmp_path))
    ids = {("act", v.name, seed): f"id-{v.name}-{seed}"
           for v in study.ablations[0].variants for seed in (0, 1)}
    doc = json.loads(json.dumps(study_document(study.ablations, study.claims, ids)))
    ablations, claims, runs = from_document(doc)
    assert runs == ids and list(claims) == list(study.claims)
    (a,) = ablations
    (want,) = study.ablations
    assert (a.name, a.design, a.base_levels, a.base.name) == (
        want.name, want.design, want.base_levels, want.base.name)
    assert [(v.name, dict(v.levels), v.spec.params) for v in a.variants] == [
        (v.name, dict(v.levels), v.spec.params) for v in want.variants]


def test_an_ablation_says_stuck_at_chance_once_in_the_diagnosis_wording(tmp_path):
    from cnnbench.report.markdown import _table
    from cnnbench.report.whatmatters import WhatMatters, markdown
    from cnnbench.study.ablation import AblationResult
    from cnnbench.study.studyfile import load_study
    (a,) = load_study(_study(tmp_path)).ablations
    tanh = a.variants[1].name
    result = AblationResult(a, [], {"acc": []}, {"acc": []}, {v.name: 2 for v in a.variants},
                            stuck={a.variants[0].name: (0, 2), tanh: (2, 2)},
                            gradient={tanh: 1e-4})
    assert any("stuck at chance" in s for s in result.sentences())  # the ablation's wording
    wm = WhatMatters([result], [], "", {})
    assert not any("stuck at chance" in line for line in wm.lines())
    section = "\n".join(markdown(wm, _table))
    assert "stuck at chance" not in section and f"| {tanh} | 2,071 | 0 | n/a | 2/2 |" in section


def test_a_holdout_runs_curves_say_validation_not_test(tmp_path):
    from cnnbench.report.html import write_report
    runs = [_run("A", s, 0.9, validation_split=0.1) for s in range(2)] + \
        [_run("B", s, 0.9) for s in range(2)]
    x = np.zeros((len(Y), 28, 28), dtype=np.uint8)
    html = write_report(runs, Y, x, tmp_path, reference={})["html"].read_text()
    assert 'alt="A [holdout 10 %] accuracy and loss, train and validation"' in html
    assert 'alt="B [test-set validation] accuracy and loss, train and test"' in html


# --- through the store and the CLI, on a toy dataset -----------------------------------------

STUDY = """\
data_dir: bars
training:
  optimizer: {Adam: {learning_rate: 0.01}}
  epochs: 1
  batch_size: 64
  seeds: [0, 1]
ablations:
  - name: act
    base: net.yaml
    design: ofat
    factors:
      activation: {set: activation, layers: hidden, levels: [relu, tanh]}
claims:
  - name: tanh
    says: <b>tanh</b> is worse than relu here
    ablation: act
    factor: activation
    expect: lower
    level: tanh
    than: [relu]
"""


def _study(tmp_path):
    return _setup(tmp_path, STUDY)


@pytest.mark.slow
def test_report_rebuilds_what_matters_from_the_store_alone(tmp_path, capsys):
    study, store = _study(tmp_path), tmp_path / "store"
    assert main(["run", str(study), "--store", str(store), "--out", str(tmp_path / "o1")]) == 0
    capsys.readouterr()
    ids = RunStore(store).done_ids()
    kept = RunStore(store).read_config(ids[0])["study"]
    assert [a["name"] for a in kept["ablations"]] == ["act"]
    assert sorted(r[3] for r in kept["runs"]) == sorted(ids)  # 2 variants x 2 seeds
    out = tmp_path / "o2"
    assert main(["report", "--store", str(store), "--out", str(out), "--data-dir",
                 str(tmp_path / "bars")]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "## What matters" in md and "### act" in md
    assert re.search(r"Claim \"&lt;b>tanh&lt;/b> is worse than relu here\" \(activation=tanh "
                     r"lower test accuracy than relu; Holm over its 1 comparison\(s\)\)", md)
    assert "<b>" not in md  # a claim's words are shown, never taken for HTML
    assert "over the 1 test of ablation act" in md  # What matters' family, by name
    assert "| the 1 test of ablation act |" in md and "| the 1 model pair |" in md
    assert "Claim \"<b>tanh</b> is worse" in printed  # the terminal shows the words as written
    for rid in ids:
        assert f"| {rid} |" in md


@pytest.mark.slow
def test_runs_stored_without_their_study_report_without_what_matters_and_say_why(
        tmp_path, capsys):
    study, store = _study(tmp_path), tmp_path / "store"
    assert main(["run", str(study), "--store", str(store), "--out", str(tmp_path / "o1")]) == 0
    s = RunStore(store)
    for rid in s.done_ids():  # as a run stored before the store kept its study
        path = s.folder(rid) / "config.json"
        doc = json.loads(path.read_text())
        del doc["study"]
        path.write_text(json.dumps(doc))
    capsys.readouterr()
    out = tmp_path / "o2"
    assert main(["report", "--store", str(store), "--out", str(out), "--data-dir",
                 str(tmp_path / "bars")]) == 0
    md = (out / "report.md").read_text()
    assert "## What matters" not in md
    assert "variants of an ablation stored without the study they were trained under" in md
    assert "variants of an ablation stored without" in capsys.readouterr().out


@pytest.mark.slow
def test_a_report_over_mixed_stored_runs_keeps_them_apart_and_counts_each_run_once(
        tmp_path, capsys):
    make_dataset(tmp_path / "bars")
    (tmp_path / "net.yaml").write_text(SPEC.format(name="net", units=3))
    store, data = tmp_path / "store", tmp_path / "bars"
    common = [str(tmp_path / "net.yaml"), "--epochs", "1", "--seeds", "2", "--data-dir",
              str(data), "--store", str(store), "--out", str(tmp_path / "o")]
    assert main(["run", *common, "--train-limit", "120"]) == 0
    assert main(["run", *common, "--train-limit", "180", "--validation-split", "0.1"]) == 0
    capsys.readouterr()
    ids = RunStore(store).done_ids()
    assert len(ids) == 4
    out = tmp_path / "mixed"
    assert main(["report", "--store", str(store), "--out", str(out), "--data-dir",
                 str(tmp_path / "bars")]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "trained under 2 different settings" in printed
    assert "net [train_limit=120, test-set validation]" in md
    assert "net [train_limit=180, holdout 10 %]" in md
    assert "## Pairwise comparisons" not in md  # one model a group: nothing to test
    for rid in ids:
        assert f"| {rid} |" in md
    # One run named three times, once by a prefix: one run, once.
    assert main(["report", ids[0], ids[0], ids[0][:10], "--store", str(store), "--out",
                 str(tmp_path / "one"), "--data-dir", str(data)]) == 0
    assert "Report of 1 run(s)" in capsys.readouterr().out
    one = (tmp_path / "one" / "report.md").read_text()
    assert one.count(f"| {ids[0]} |") == 1
    assert re.search(r"\| net \| No \| No \| 1 \| [\d.]+ \| n/a \|", one)  # 1 seed: no interval


def test_a_report_of_runs_on_folder_data_without_data_dir_asks_for_data_dir(tmp_path):
    make_dataset(tmp_path / "data")
    (tmp_path / "net.yaml").write_text(SPEC.format(name="net", units=3))
    store = tmp_path / "store"
    assert main(["run", str(tmp_path / "net.yaml"), "--epochs", "1", "--data-dir",
                 str(tmp_path / "data"), "--store", str(store), "--out", str(tmp_path / "o"),
                 "--train-limit", "60"]) == 0
    (rid,) = RunStore(store).done_ids()
    from conftest import cnnbench_main, error_line
    code, _, err = cnnbench_main("report", "--store", store, "--out", tmp_path / "r")
    assert code == 2 and not (tmp_path / "r").exists()
    assert error_line(err, "report") == (
        f"cnnbench report: error: run(s) {rid} were trained on 'data', a --data-dir dataset "
        "that cnnbench cannot fetch (it fetches mnist, fashion-mnist, kmnist): give "
        "--data-dir DIR with the folder of its idx files.")
