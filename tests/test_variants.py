"""variants.py: factors as spec edits, designs, names, parameter counts, shared run ids."""

from __future__ import annotations

import pytest

from cnnbench.model.spec import SpecError, get_spec
from cnnbench.store.run_store import resolved_spec, run_id, run_key
from cnnbench.study.studyfile import load_study
from cnnbench.study.variants import build_ablation, parse_vary, same_run, unique_runs
from cnnbench.train.engine import TrainConfig

ACT = {"set": "activation", "layers": "hidden", "levels": ["sigmoid", "relu"]}
NORM = {"replace": "BatchNormalization#1", "levels": {
    "batchnorm": {"BatchNormalization": {}}, "dropout": {"Dropout": {"rate": 0.5}},
    "none": None}}


def ablation(design="factorial", **factors):
    return build_ablation({"base": "CNN_MNIST_2", "design": design, "factors": factors}, "t")


def by_name(a):
    return {v.name: v for v in a.variants}


def test_factorial_names_every_cell_and_crosses_all_levels():
    a = ablation(activation=ACT, norm=NORM)
    assert list(by_name(a)) == [
        "CNN_MNIST_2[activation=sigmoid,norm=batchnorm]",
        "CNN_MNIST_2[activation=sigmoid,norm=dropout]",
        "CNN_MNIST_2[activation=sigmoid,norm=none]",
        "CNN_MNIST_2[activation=relu,norm=batchnorm]",
        "CNN_MNIST_2[activation=relu,norm=dropout]",
        "CNN_MNIST_2[activation=relu,norm=none]"]
    assert by_name(a)["CNN_MNIST_2[activation=relu,norm=none]"].levels == {
        "activation": "relu", "norm": "none"}


def test_ofat_varies_one_factor_at_a_time_around_the_base():
    a = ablation("ofat", activation=ACT, norm=NORM)
    assert list(by_name(a)) == ["CNN_MNIST_2[base]", "CNN_MNIST_2[activation=relu]",
                                "CNN_MNIST_2[norm=dropout]", "CNN_MNIST_2[norm=none]"]
    assert by_name(a)["CNN_MNIST_2[norm=none]"].levels == {"activation": "sigmoid",
                                                           "norm": "none"}


def test_set_changes_every_hidden_layer_and_never_the_softmax_output():
    v = by_name(ablation(activation=ACT))["CNN_MNIST_2[activation=relu]"]
    acts = [(lay.kind, lay.args.get("activation")) for lay in v.spec.layers]
    assert acts == [("Conv2D", "relu"), ("Conv2D", "relu"), ("MaxPooling2D", None),
                    ("Conv2D", "relu"), ("Conv2D", "relu"), ("BatchNormalization", None),
                    ("Flatten", None), ("Dense", "relu"), ("Dense", "relu"),
                    ("Dense", "softmax")]
    assert v.spec.params == 5_367_950  # an activation has no parameters


def test_replace_and_remove_give_keras_parameter_counts():
    v = by_name(ablation(norm=NORM))
    # BatchNorm(128): 256 trainable + 256 moving statistics, Keras counts them all.
    assert v["CNN_MNIST_2[norm=batchnorm]"].spec.params == 5_367_950
    assert v["CNN_MNIST_2[norm=dropout]"].spec.params == 5_367_438
    assert [lay.kind for lay in v["CNN_MNIST_2[norm=dropout]"].spec.layers][5] == "Dropout"
    assert v["CNN_MNIST_2[norm=none]"].spec.params == 5_367_438
    assert len(v["CNN_MNIST_2[norm=none]"].spec.layers) == 9


def test_model_3_with_batchnorm_back_counts_as_model_4_without_its_dropout():
    a = build_ablation({"base": "CNN_MNIST_3", "design": "ofat", "factors": {
        "norm": {"replace": "Dropout#1", "levels": {"dropout": {"Dropout": {"rate": 0.5}},
                                                    "batchnorm": {"BatchNormalization": {}}}}}},
        "t")
    assert by_name(a)["CNN_MNIST_3[norm=batchnorm]"].spec.params == 5_368_078  # CNN_MNIST_4
    assert by_name(a)["CNN_MNIST_3[base]"].spec.params == 5_367_566


def test_repeat_drops_or_repeats_a_block_and_width_scales_units():
    a = ablation(depth={"repeat": [4, 5], "levels": {"conv4": 1, "conv2": 0, "conv6": 2}})
    v = by_name(a)
    convs = {n: sum(lay.kind == "Conv2D" for lay in x.spec.layers) for n, x in v.items()}
    assert convs == {"CNN_MNIST_2[depth=conv4]": 4, "CNN_MNIST_2[depth=conv2]": 2,
                     "CNN_MNIST_2[depth=conv6]": 6}
    # Two convs: 416 + 12,832 + BN(32) 128 + Dense(3200 -> 1024) 3,277,824 + 537,100 + 5,250.
    assert v["CNN_MNIST_2[depth=conv2]"].spec.params == 3_833_550
    w = by_name(ablation(width={"scale": "hidden", "levels": [1, 0.5]}))["CNN_MNIST_2[width=0.5]"]
    assert [lay.args.get("filters") or lay.args.get("units") for lay in w.spec.layers
            if lay.kind in ("Conv2D", "Dense")] == [8, 16, 32, 64, 512, 262, 10]


def test_training_factor_edits_settings_not_layers():
    a = ablation("ofat", lr={"training": "learning_rate", "levels": [1.0, 0.1]})
    base, low = a.variants
    assert (low.name, dict(low.training)) == ("CNN_MNIST_2[lr=0.1]", {"learning_rate": 0.1})
    assert resolved_spec(base.spec) == resolved_spec(low.spec)


def test_a_variant_is_keyed_under_its_base_name_so_two_designs_share_its_run():
    f = ablation(activation=ACT, norm=NORM)
    o = ablation("ofat", activation=ACT, norm=NORM)
    cell = by_name(f)["CNN_MNIST_2[activation=relu,norm=batchnorm]"]
    same = by_name(o)["CNN_MNIST_2[activation=relu]"]
    cfg = TrainConfig(seed=1, validation_split=0.1).to_dict()
    ids = [run_id(run_key(resolved_spec(v.spec), cfg, "fp")) for v in (cell, same)]
    assert ids[0] == ids[1] and same_run(cell, same)
    # The base cell is the base model itself: the same run as a plain CNN_MNIST_2 run.
    base_cell = by_name(f)["CNN_MNIST_2[activation=sigmoid,norm=batchnorm]"]
    assert run_id(run_key(resolved_spec(base_cell.spec), cfg, "fp")) == run_id(
        run_key(resolved_spec(get_spec("CNN_MNIST_2")), cfg, "fp"))
    other = by_name(f)["CNN_MNIST_2[activation=relu,norm=none]"]
    assert run_id(run_key(resolved_spec(other.spec), cfg, "fp")) != ids[0]
    assert len(unique_runs([f, o])) == 6  # the 4 OFAT variants are all factorial cells


def test_notebook_claims_ships_and_its_shared_variants_train_once():
    s = load_study("notebook-claims")
    assert [a.name for a in s.ablations] == ["depth-activation", "norm-activation", "model-3"]
    assert s.holdout == {"validation_split": 0.1, "early_stopping": 3, "min_delta": 0.001,
                         "baseline": 2.0}  # runs stuck at chance stop early
    assert len(unique_runs(s.ablations)) == 12  # 4 + 6 + 4 variants, 2 shared
    assert [c.name for c in s.claims] == ["depth", "dropout-worst", "model-3-relu",
                                          "model-3-batchnorm", "model-3-lr"]


@pytest.mark.parametrize("factor, message", [
    ({"set": "activation", "levels": ["relu"]}, "2 or more distinct levels"),
    ({"set": "activation", "layers": "Conv2D#9", "levels": ["relu", "tanh"]},
     "has 4 Conv2D layer"),
    ({"set": "activation", "levels": ["relu", "swish"]},
     "'activation' parameter of Conv2D must be"),
    ({"replace": 42, "levels": {"a": None, "b": {"Dropout": {"rate": 0.5}}}},
     "outside the base's layers 1..10"),
    ({"repeat": [4, 5], "levels": [1, -1]},
     "level '-1': the 'repeat' parameter of a factor must be a non-negative integer"),
    ({"sett": "activation", "levels": [1, 2]}, "exactly one of"),
])
def test_bad_factors_get_one_line_errors_naming_the_factor(factor, message):
    with pytest.raises(SpecError, match=message) as e:
        ablation(f=factor)
    assert "factor 'f'" in str(e.value) or "variant" in str(e.value)


def test_vary_shortcuts_build_the_same_factors_as_the_study_file():
    spec = get_spec("CNN_MNIST_2")
    assert parse_vary("activation=sigmoid,relu", spec) == ("activation", ACT)
    name, norm = parse_vary("norm=batchnorm,dropout,none", spec)
    assert norm == {"replace": 6, "levels": NORM["levels"]}
    assert parse_vary("Conv2D#4.use_bias=false,true", spec)[1] == {
        "set": "use_bias", "layers": "Conv2D#4", "levels": [False, True]}
    assert parse_vary("lr=1.0,0.1", spec)[1]["levels"] == [1.0, 0.1]
    with pytest.raises(SpecError, match="unknown factor 'colour'"):
        parse_vary("colour=red,blue", spec)


def test_a_learning_rate_factor_sets_the_rate_of_the_studys_optimizer():
    """SGD as Adadelta: the factor edits the optimizer's learning_rate, whichever it is; the
    base level is the base run, however its settings were spelled."""
    from cnnbench.study.ablation import groups, variant_config
    a = ablation("ofat", lr={"training": "learning_rate", "levels": [0.01, 0.1]})
    base = {"optimizer": "SGD", "optimizer_args": (("momentum", 0.9),)}
    kw = variant_config(base, by_name(a)["CNN_MNIST_2[lr=0.1]"])
    assert (kw["optimizer"], dict(kw["optimizer_args"])) == ("SGD", {
        "learning_rate": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0})
    assert [g.label for g in groups([a], base)] == ["base", "learning_rate=0.1"]
    # Adadelta by default; a level equal to its default rate is the base run, not a second one
    b = ablation("ofat", lr={"training": "learning_rate", "levels": [1.0, 0.1]})
    assert [(g.label, len(g.variants)) for g in groups([b], {})] == [
        ("base", 1), ("learning_rate=0.1", 1)]
    assert dict(variant_config({}, b.variants[1])["optimizer_args"])["learning_rate"] == 0.1


@pytest.mark.parametrize("factor, says", [
    ({"training": "learning_rate", "levels": [1.0, -1]},
     "t: factor 'lr': level '-1': the 'learning_rate' parameter of training must be a number "
     ">= 0. Got -1 instead."),
    ({"training": "batch_size", "levels": [128, 0]},
     "the 'batch_size' parameter of training must be a positive integer (at most 10_000_000). "
     "Got 0 instead."),
    ({"training": "optimizer", "levels": ["Adadelta", "sgd"]},
     "level 'sgd': unknown optimizer 'sgd'. Did you mean SGD?"),
])
def test_a_bad_training_level_fails_when_the_study_is_read(factor, says):
    with pytest.raises(SpecError) as e:
        ablation("ofat", lr=factor)
    assert says in str(e.value)


# --- selectors select exactly, factors change something ---------------------------------

@pytest.mark.parametrize("layers, says", [
    ("Conv2D#0", "'Conv2D#0': the base has 4 Conv2D layer(s); write Conv2D#1..Conv2D#4, or "
                 "Conv2D#-1 for the last."),
    ("Conv2D#+1", "'Conv2D#+1': the base has 4 Conv2D layer(s)"),
    ("Conv2D#01", "'Conv2D#01': the base has 4 Conv2D layer(s)"),
    ("Conv2D#-5", "'Conv2D#-5': the base has 4 Conv2D layer(s)"),
    ("Conv2D# 1", "'Conv2D# 1': the base has 4 Conv2D layer(s)"),
    ([], "a list of layers names each layer once and at least one. Got []."),
    ([1, 1], "a list of layers names each layer once and at least one. Got [1, 1]."),
    (True, "a layer selector is an index"),
])
def test_a_selector_selects_exactly_what_it_says_or_is_refused(layers, says):
    with pytest.raises(SpecError) as e:
        ablation(f={"set": "activation", "layers": layers, "levels": ["sigmoid", "relu"]})
    assert says in str(e.value)


def test_the_nth_of_a_kind_counts_from_one_and_minus_one_is_the_last():
    def convs(selector):
        v = by_name(ablation(f={"set": "activation", "layers": selector,
                                "levels": ["sigmoid", "relu"]}))["CNN_MNIST_2[f=relu]"]
        return [lay.args["activation"] for lay in v.spec.layers if lay.kind == "Conv2D"]
    assert convs("Conv2D#1") == ["relu", "sigmoid", "sigmoid", "sigmoid"]
    assert convs("Conv2D#-1") == ["sigmoid", "sigmoid", "sigmoid", "relu"]
    assert convs("Conv2D#-4") == convs("Conv2D#1")


@pytest.mark.parametrize("factor, says", [
    ({"scale": "Flatten", "levels": [1, 2]},
     "'scale' multiplies filters or units, but layer 7 (Flatten) has neither"),
    ({"scale": [1, 7], "levels": [1, 2]}, "but layer 7 (Flatten) has neither"),
    ({"set": "activation", "levels": {"a": "relu", "b": "relu"}},
     "levels 'a' and 'b' have the same value 'relu'; each level must be a different model"),
    ({"training": "optimizer", "levels": {"a": "Adadelta", "b": {"Adadelta": None}}},
     "levels 'a' and 'b' have the same value"),
    ({"scale": "hidden", "levels": [1, 1.0001]},  # rounds back to every width it had
     "levels '1' and '1.0001' make the same model with the same settings in every variant"),
    ({"set": "activation", "layers": "Conv2D#1", "levels": ["sigmoid", "relu"],
      "base": "relu"}, None),  # a base level other than the first is fine
])
def test_a_factor_whose_levels_change_nothing_is_refused(factor, says):
    if says is None:
        assert len(ablation(f=factor).variants) == 2
        return
    with pytest.raises(SpecError) as e:
        ablation(f=factor)
    assert says in str(e.value) and str(e.value).startswith("t: ")
    assert "factor 'f'" in str(e.value)


def test_levels_that_matter_only_beside_another_factor_are_kept():
    """Without layers 4-5 (depth=conv2) the use_bias of layer 5 changes nothing; with them it
    does: the factor is kept, as the factorial design has cells where it matters."""
    a = ablation(depth={"repeat": [4, 5], "levels": {"conv2": 0, "conv4": 1}},
                 bias={"set": "use_bias", "layers": 5, "levels": [False, True]})
    names = by_name(a)
    assert same_run(names["CNN_MNIST_2[depth=conv2,bias=false]"],
                    names["CNN_MNIST_2[depth=conv2,bias=true]"])
    with pytest.raises(SpecError, match="levels 'false' and 'true' make the same model"):
        ablation("ofat", depth={"repeat": [4, 5], "levels": {"conv2": 0, "conv4": 1}},
                 bias={"set": "use_bias", "layers": 5, "levels": [False, True]})


# --- bounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("factor, says", [
    ({"repeat": [4, 5], "levels": [1, 17]},
     "level '17': the 'repeat' parameter of a factor must be a non-negative integer (at most "
     "16). Got 17 instead."),
    ({"scale": "hidden", "levels": [1, 65]},
     "level '65': the 'scale' parameter of a factor must be a number in (0, 64]. Got 65"),
    ({"scale": "hidden", "levels": [1, float("inf")]}, "(0, 64]. Got inf instead."),
    ({"scale": "hidden", "levels": [1, 10**400]}, "Got an integer of about 401 digits"),
    ({"training": "learning_rate", "levels": [1.0, 10**400]},
     "the 'learning_rate' parameter of training must be a number >= 0. Got an integer of about "
     "401 digits (beyond a float's 1.8e308) instead."),
    ({"training": "epochs", "levels": [1, 10**23]},
     "the 'epochs' parameter of training must be a positive integer (at most 100_000)"),
    ({"set": "activation", "levels": [f"a{i}" for i in range(300)]},
     "300 levels; a factor has at most 256 (split it into several ablations)."),
])
def test_a_factor_past_its_bounds_is_one_line_naming_the_bound(factor, says):
    with pytest.raises(SpecError) as e:
        ablation(f=factor)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_scaled_width_past_the_layer_bound_is_refused_with_it(tmp_path):
    (tmp_path / "wide.yaml").write_text(
        "name: wide\nlayers: [Flatten, {Dense: {units: 2048, activation: relu}},\n"
        "         {Dense: {units: 10, activation: softmax}}]\n")
    with pytest.raises(SpecError) as e:
        build_ablation({"base": "wide.yaml", "factors": {"width": {
            "scale": "hidden", "levels": [1, 64]}}}, "t", tmp_path)
    assert str(e.value).startswith("t: variant wide[width=64]: layer 2 (Dense): the 'units' "
                                   "parameter of Dense must be at most 65_536")


def test_a_design_is_counted_before_any_variant_is_built():
    """2 ** 200 cells: refused at once, the count capped, never multiplied out."""
    many = {f"f{i}": {"set": "activation", "levels": ["sigmoid", "relu"]} for i in range(200)}
    with pytest.raises(SpecError) as e:
        ablation(**many)
    assert str(e.value).startswith(
        "t: the factorial design of 200 factor(s) (2 x 2 x 2 x 2 x 2 x 2 x 2 x 2 x 2")
    assert str(e.value).endswith(
        "levels) makes over 1,000,000,000 variants; an ablation makes at most 256 "
        "(cnnbench.study.variants.MAX_VARIANTS): use fewer levels, design: ofat, or several "
        "ablations.")
    nine = dict(list(many.items())[:9])
    with pytest.raises(SpecError, match="makes 512 variants; an ablation makes at most 256"):
        ablation(**nine)


def test_a_study_counts_each_ablations_variants_against_what_the_others_left():
    data = {"base": "CNN_MNIST_2", "factors": {"activation": ACT, "norm": NORM}}
    assert len(build_ablation(data, "t", budget=6).variants) == 6
    with pytest.raises(SpecError, match="its 6 variants take the study past 1,024 variants in "
                                        "all"):
        build_ablation(data, "t", budget=5)


# --- one model, one name -----------------------------------------------------------------

CLASH = """\
ablations:
  - name: wide-all
    base: CNN_MNIST_2
    factors: {width: {scale: hidden, levels: [1, 2]}}
  - name: wide-convs
    base: CNN_MNIST_2
    factors: {width: {scale: Conv2D, levels: [1, 2]}}
"""


def test_two_models_under_one_name_are_refused_naming_both_ablations(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(CLASH)
    with pytest.raises(SpecError) as e:
        load_study(path)
    assert str(e.value) == (
        f"{path}: ablations 'wide-all' and 'wide-convs' make two different models (layers or "
        f"settings) both named CNN_MNIST_2[width=2]: wide-all's CNN_MNIST_2[width=2] and "
        f"wide-convs's CNN_MNIST_2[width=2]; rename a factor or a level of one so that each "
        f"model has its own name.")
    path.write_text(CLASH.replace("{width: {scale: Conv2D", "{conv_width: {scale: Conv2D"))
    assert len(load_study(path).ablations) == 2


def test_each_model_trains_under_one_name_the_base_under_its_own():
    from cnnbench.study.ablation import groups
    s = load_study("notebook-claims")
    (base, low_lr) = groups(s.ablations, s.train_config_kwargs())
    assert [v.spec.name for v in base.variants] == [
        "CNN_MNIST_2", "CNN_MNIST_2[activation=relu]", "CNN_MNIST_2[depth=conv2]",
        "CNN_MNIST_2[depth=conv2,activation=relu]", "CNN_MNIST_2[norm=dropout]",
        "CNN_MNIST_2[norm=dropout,activation=relu]", "CNN_MNIST_2[norm=none]",
        "CNN_MNIST_2[norm=none,activation=relu]", "CNN_MNIST_3",
        "CNN_MNIST_3[activation=relu]", "CNN_MNIST_3[norm=batchnorm]"]
    assert [v.spec.name for v in low_lr.variants] == ["CNN_MNIST_3[lr=0.1]"]
    assert base.aliases["CNN_MNIST_2"] == [
        "depth-activation: CNN_MNIST_2[depth=conv4,activation=sigmoid]",
        "norm-activation: CNN_MNIST_2[norm=batchnorm,activation=sigmoid]"]
    # The name is not part of the run key: the ids stay those of the variants' own specs.
    by_alias = {v.name: v for a in s.ablations for v in a.variants}
    for v in base.variants:
        assert resolved_spec(v.spec) == resolved_spec(by_alias[v.name].spec)
    assert resolved_spec(base.variants[0].spec) == resolved_spec(get_spec("CNN_MNIST_2"))


def test_a_base_level_is_named_when_the_study_trains_at_another_setting():
    from cnnbench.study.ablation import groups
    s = load_study("notebook-claims")
    at_half = s.train_config_kwargs() | {"optimizer_args": (("learning_rate", 0.5),)}
    names = [v.spec.name for g in groups(s.ablations[2:], at_half) for v in g.variants]
    assert names == ["CNN_MNIST_3[lr=1]", "CNN_MNIST_3[activation=relu,lr=1]",
                     "CNN_MNIST_3[norm=batchnorm,lr=1]", "CNN_MNIST_3[lr=0.1]"]


def test_a_study_stores_each_model_once_under_its_one_name(tmp_path, capsys):
    """Two ablations share the base and its relu variant: four runs, each stored and listed
    under its one name; the base model under its own."""
    import json

    from conftest import tiny_data

    from cnnbench.cli import main
    from cnnbench.store.run_store import RunStore
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nlayers: [Flatten, {Dense: {units: 8, activation: sigmoid}},\n"
        "         {Dense: {units: 10, activation: softmax}}]\n")
    (tmp_path / "study.yaml").write_text(f"""\
data_dir: {tiny_data(tmp_path / 'data')}
training: {{epochs: 1, seeds: [0]}}
ablations:
  - name: act
    base: tiny.yaml
    factors: {{activation: {{set: activation, levels: [sigmoid, relu]}}}}
  - name: act-width
    base: tiny.yaml
    factors:
      activation: {{set: activation, levels: [sigmoid, relu]}}
      width: {{scale: hidden, levels: [1, 2]}}
""")
    code = main(["run", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "out"),
                 "--store", str(tmp_path / "store")])
    assert code == 0, capsys.readouterr().err
    names = ["tiny", "tiny[activation=relu]", "tiny[width=2]", "tiny[activation=relu,width=2]"]
    assert sorted(r.model for r in RunStore(tmp_path / "store").runs()) == sorted(names)
    (results,) = (tmp_path / "out").rglob("results.json")
    assert sorted(json.loads(results.read_text())["models"]) == sorted(names)


def test_the_vary_form_the_help_shows_selector_dot_argument_builds_validly_named_variants():
    from cnnbench.study.plan import ablation_study
    study = ablation_study("CNN_MNIST_2", ["Dense#1.units=10,12"], "factorial")
    (ablation,) = study.ablations
    assert [v.name for v in ablation.variants] == ["CNN_MNIST_2[Dense_1.units=10]",
                                                   "CNN_MNIST_2[Dense_1.units=12]"]
    assert [v.spec.layers[7].args["units"] for v in ablation.variants] == [10, 12]
    assert ablation.factors[0].name == "Dense#1.units"  # What matters shows what was typed


def test_a_vary_error_carries_the_command_prefix_once():
    from conftest import cnnbench_main, error_line
    code, _, err = cnnbench_main("ablate", "CNN_MNIST_2", "--vary", "Dense#1.units=10,10.5")
    line = error_line(err, "ablate")
    assert code == 2 and line.count("cnnbench ablate") == 1
    assert line.startswith("cnnbench ablate: error: --vary: ablations[1]: variant "
                           "CNN_MNIST_2[Dense_1.units=10.5]: layer 8 (Dense): the 'units'")
