"""``--seeds auto``: seeds in rounds while a comparison is open, as a plan, a study file and a
real study on tiny data that is stopped and continued."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import cnnbench_main, error_line, run_args, write_spec

from cnnbench.cli import main
from cnnbench.model.spec import SpecError
from cnnbench.settings import AutoSeeds
from cnnbench.store.run_store import RunStore
from cnnbench.study.autoseeds import Pair, design_of, lines, next_round, pairs, states
from cnnbench.study.plan import Overrides, build_plan
from cnnbench.study.studyfile import build_study


def _study(seeds: object, base: Path) -> object:
    return build_study({"name": "s", "models": ["CNN_MNIST_1", "CNN_MNIST_2"],
                        "training": {"seeds": seeds}}, "s.yaml", base)


def test_a_study_file_asks_for_seeds_in_rounds_and_the_plan_starts_with_the_first(tmp_path):
    plan = build_plan(_study({"auto": True, "min": 2, "max": 5, "smallest_effect": 0.2},
                             tmp_path), Overrides())
    assert plan.auto == AutoSeeds(min=2, max=5, round=2, smallest_effect=0.2)
    assert plan.seeds == (0, 1)
    assert design_of(plan.auto).looks == (2, 4, 5)
    # Seeds named on the command line win over the file's rounds.
    fixed = build_plan(_study({"auto": True}, tmp_path), Overrides(seeds=(0, 1, 2)))
    assert fixed.auto is None and fixed.seeds == (0, 1, 2)


def test_a_seeds_mapping_without_auto_is_refused_with_the_field(tmp_path):
    with pytest.raises(SpecError, match=r"s.yaml: training.seeds: a mapping of seeds needs "
                                        r"'auto: true'. Got auto: None"):
        _study({"min": 2}, tmp_path)
    with pytest.raises(SpecError, match=r"training.seeds: min 6 and max 4; expected"):
        _study({"auto": True, "min": 6, "max": 4}, tmp_path)


def test_seeds_auto_with_too_many_numbers_is_a_usage_error(tmp_path):
    rc, _, err = cnnbench_main(*run_args(tmp_path, write_spec(tmp_path / "a.yaml", "a")),
                               "--seeds", "auto", "2", "4", "6")
    assert rc == 2
    assert "--seeds auto 2 4 6: expected 'auto', 'auto MAX' or 'auto MIN MAX'" in \
        error_line(err, "run")


def test_the_comparisons_are_the_model_pairs_or_each_variant_against_its_base(tmp_path):
    assert pairs(["a", "b", "c"]) == [Pair("", "a", "b"), Pair("", "a", "c"),
                                      Pair("", "b", "c")]
    study = build_study({"name": "s", "ablations": [{
        "name": "act", "base": "CNN_MNIST_2", "design": "ofat", "factors": {
            "activation": {"set": "activation", "layers": "hidden",
                           "levels": ["relu", "tanh", "sigmoid"]}}}]}, "s.yaml", tmp_path)
    got = pairs([], study.ablations, {})
    # The base level is the factor's first, relu; sigmoid is CNN_MNIST_2's own: its name.
    assert [(p.family, p.b) for p in got] == [("act", "CNN_MNIST_2[activation=relu]")] * 2
    assert sorted(p.a for p in got) == ["CNN_MNIST_2", "CNN_MNIST_2[activation=tanh]"]


def test_a_stopped_auto_seed_study_continues_where_it_stopped_and_retrains_nothing(tmp_path):
    # Two models that learn identically: every seed gives both the same accuracy, so the
    # comparison never separates; it runs to its maximum, or gives up for futility.
    a, b = write_spec(tmp_path / "a.yaml", "a"), write_spec(tmp_path / "b.yaml", "b")
    args = [str(x) for x in run_args(tmp_path, a)] + ["--model-file", str(b)]
    store, md = RunStore(tmp_path / "store"), tmp_path / "out" / "report.md"
    assert main([*args, "--seeds", "auto", "4"]) == 0  # looks at 3 and 4 seeds
    assert len(store.runs()) == 8
    first = md.read_text()
    assert "## Sequential seeds" in first and "O'Brien-Fleming" in first
    assert "a vs b: max reached (4 seeds, 2 look(s)" in first
    assert (tmp_path / "out" / "seed-3" / "results.json").is_file()
    # A larger maximum: looks at 3, 5, 7, 8; seeds 0-3 come from the store, seed 4 trains,
    # and at 5 seeds the comparison is futile (no spread at all: no seeds could separate it).
    rc, printed, _ = cnnbench_main(*args, "--seeds", "auto", "8")
    assert rc == 0
    assert printed.count("reused run") == 8
    assert "Look at 3 seeds: 0 of 1 comparison(s) decided; open: a vs b" in printed
    assert "Look at 5 seeds: 1 of 1 comparison(s) decided" in printed
    assert len(store.runs()) == 10
    assert "a vs b: futile (5 seeds, 2 look(s)" in md.read_text()
    assert "Runs used: 10 over 2 model(s); a fixed design of 8 seeds: 16." in md.read_text()


def test_the_next_round_trains_only_the_models_of_comparisons_still_open():
    design = design_of(AutoSeeds(min=3, max=10, round=2))
    apart = {0: 99.1, 1: 99.0, 2: 99.2}
    accuracy = {"good": apart, "stuck": {0: 11.3, 1: 11.2, 2: 11.4},
                "twin": {0: 99.0, 1: 99.2, 2: 99.1}}
    comparisons = [Pair("", "good", "stuck"), Pair("", "good", "twin")]
    now = states(comparisons, accuracy, design)
    assert now[comparisons[0]].status == "separated" and now[comparisons[1]].status == "open"
    seeds, models = next_round(now, design, 3)
    assert seeds == (3, 4) and models == {"good", "twin"}  # 'stuck' is done at 3 seeds
    assert next_round({p: replace(s, status="futile") for p, s in now.items()}, design, 5) \
        == ((), set())


def test_two_models_stuck_in_every_seed_stop_training_and_the_account_says_why():
    design = design_of(AutoSeeds(min=3, max=10, round=2))
    accuracy = {"base": {0: 11.35, 1: 11.35, 2: 11.35}, "lr": {0: 9.8, 1: 9.8, 2: 11.35},
                "relu": {0: 99.1, 1: 99.0, 2: 99.2}}
    stuck = {"base": dict.fromkeys(range(3), True), "lr": dict.fromkeys(range(3), True),
             "relu": dict.fromkeys(range(3), False)}
    comparisons = [Pair("m3", "lr", "base"), Pair("m3", "relu", "base")]
    unaware = states(comparisons, accuracy, design)
    assert unaware[comparisons[0]].status == "open"  # without the flags it would go on
    now = states(comparisons, accuracy, design, stuck=stuck)
    assert now[comparisons[0]].status == "both stuck" and not now[comparisons[0]].separated
    assert now[comparisons[1]].separated
    assert next_round(now, design, 3) == ((), set())
    (line,) = [x for x in lines(now, design) if x.startswith("[m3] lr vs base")]
    assert line.startswith("[m3] lr vs base: both stuck (3 seeds, 1 look(s)")
    assert "differ only in the class a stuck network leans to" in line


@pytest.mark.slow
def test_an_ablation_study_with_auto_seeds_tests_each_variant_against_its_base(tmp_path,
                                                                              capsys):
    from test_ablation_cli import STUDY, _setup
    study = _setup(tmp_path)
    study.write_text(STUDY.replace("seeds: [0, 1]", "seeds: {auto: true, min: 2, max: 2}"))
    out = tmp_path / "out"
    assert main(["run", str(study), "--store", str(tmp_path / "store"), "--out",
                 str(out)]) == 0
    assert "4 distinct variants x 2 to 2 seeds (seeds auto)" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    section = md[md.index("## Sequential seeds"):md.index("## Method")]
    assert "1 look at 2 seeds per model" in section
    for line in ("[act-lr] net[lr=0.001] vs net:", "[act-lr] net[activation=tanh] vs net:",
                 "[act-lr] net[activation=tanh,lr=0.001] vs net:",
                 "[act-only] net[activation=tanh] vs net:"):
        assert line in section
    assert "## What matters" in md
    assert len(RunStore(tmp_path / "store").runs()) == 8  # 4 distinct variants x 2 seeds


STUCK_STUDY = """\
data_dir: bars
training:
  optimizer: {Adam: {learning_rate: 0.01}}
  epochs: 2
  batch_size: 32
  seeds: {auto: true, min: 2, max: 4}
ablations:
  - name: frozen
    base: net.yaml
    design: ofat
    factors:
      lr: {training: learning_rate, levels: [1.0e-9, 2.0e-9]}
"""


@pytest.mark.slow
def test_an_auto_seeds_study_stops_a_comparison_of_two_stuck_variants_at_its_first_look(
        tmp_path, capsys):
    # Adam at 1e-9 leaves each network where it started: at chance, its softmax near uniform.
    from test_ablation_cli import _setup
    study = _setup(tmp_path, STUCK_STUDY)
    out = tmp_path / "out"
    assert main(["run", str(study), "--store", str(tmp_path / "store"), "--out",
                 str(out)]) == 0, capsys.readouterr().err
    assert "Look at 2 seeds: 1 of 1 comparison(s) decided" in capsys.readouterr().out
    assert len(RunStore(tmp_path / "store").runs()) == 4  # 2 variants x 2 seeds, no more
    md = (out / "report.md").read_text()
    assert "[frozen] net[lr=2e-09] vs net[lr=1e-09]: both stuck (2 seeds, 1 look(s)" in md
    assert ("lr=2e-09 vs 1e-09: test accuracy +0.00 points (set aside, not tested: both stuck "
            "in all 2 vs 2 runs)") in md
    assert "| 2e-09 vs 1e-09 | +0.00 | n/a | set aside: both stuck | n/a |" in md
