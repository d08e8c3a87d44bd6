"""Names and paths, whatever they hold: a model name outside the allowed characters is refused
saying the rule, no name writes outside --out, and Rich markup or str.format braces in a name
or path print as they are, unwrapped."""

from __future__ import annotations

import io
import json

import pytest
from conftest import cnnbench_main, run_args, spec_dict, tiny_data, write_spec

from cnnbench.model.spec import SpecError, build_spec

# --- names become file names ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escaped", "/tmp/elsewhere/x", "a/b", "..", ".hidden",
                                  "-rf", "m{}", "x[/]", "with space", "é", "x" * 101])
def test_a_name_outside_the_rule_is_refused_saying_the_rule(name):
    with pytest.raises(SpecError) as e:
        build_spec(spec_dict(name), source="bad.yaml")
    msg = str(e.value)
    assert msg.startswith("bad.yaml: 'name' ") and "A-Z a-z 0-9 _ . - [ ] = ," in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["CNN_MNIST_2[activation=relu,norm=none]", "a.b-c_1", "x" * 100])
def test_ablation_style_names_are_accepted(name):
    assert build_spec(spec_dict(name)).name == name


def test_a_spec_named_to_escape_out_writes_nothing_outside(tmp_path):
    target = tmp_path / "elsewhere"
    spec = write_spec(tmp_path / "evil.yaml", f"../../{target.name}/x")
    code, out, err = cnnbench_main(*run_args(tmp_path, spec))
    assert code == 2
    assert err.count("\n") == 1 and "evil.yaml: 'name' '../../elsewhere/x' is not allowed" in err
    assert not target.exists() and not (tmp_path / "x.png").exists()
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.png"))


def test_an_ablation_name_trains_and_its_plot_lands_inside_out(tmp_path):
    name = "CNN_MNIST_2[activation=relu,norm=none]"
    code, out, err = cnnbench_main(*run_args(tmp_path, write_spec(tmp_path / "a.yaml", name)))
    assert code == 0, err
    assert (tmp_path / "out" / f"{name}.png").is_file()
    assert name in json.loads((tmp_path / "out" / "results.json").read_text())["models"]


def test_output_path_refuses_a_name_that_leaves_its_folder(tmp_path):
    from cnnbench.atomic import output_path
    assert output_path(tmp_path, "ok[a=1]", ".png") == tmp_path / "ok[a=1].png"
    for bad in ("../x", "a/../../x", "/etc/x", "..\\x"):
        with pytest.raises(ValueError, match="outside"):
            output_path(tmp_path, bad, ".png")


# --- names and paths through Rich markup and str.format ---------------------------------

def test_markup_in_a_name_prints_as_it_is(tmp_path):
    code, out, err = cnnbench_main(*run_args(tmp_path, write_spec(tmp_path / "n.yaml",
                                                                  "net[red]")))
    assert code == 0, err
    assert "net[red]" in out  # Rich would have eaten '[red]' as a colour
    assert "Plot:    " + str(tmp_path / "out" / "net[red].png") in out


def test_a_data_folder_called_like_a_closing_tag_does_not_crash_the_run(tmp_path):
    data = tiny_data(tmp_path / "x[/]")
    spec = write_spec(tmp_path / "s.yaml", "tiny")
    code, out, err = cnnbench_main("run", spec, "--dataset", "custom", "--data-dir", data,
                                   "--epochs", "1", "--out", tmp_path / "out", "--store",
                                   tmp_path / "st")
    assert code == 0, err
    assert f"user files in {data}: ok" in err


def test_the_progress_bar_takes_any_name():
    from rich.console import Console

    from cnnbench.train.engine import EpochLogs
    from cnnbench.train.progress import KerasProgress
    buf = io.StringIO()
    bar = KerasProgress(Console(file=buf, force_terminal=True, width=100), "m{}[/]")
    bar.on_epoch_begin(1, 1, 2)
    bar.on_step_end(1, {"loss": 1.0, "acc": 0.5})
    bar.on_epoch_end(EpochLogs(epoch=1, loss=1.0, acc=0.5, val_loss=1.0, val_acc=0.5,
                               seconds=0.1))
    assert "m{}[/] epoch 1/1" in buf.getvalue()


def test_data_log_lines_are_not_wrapped(tmp_path):
    data = tiny_data(tmp_path / ("d" * 120))
    code, out, err = cnnbench_main("run", write_spec(tmp_path / "s.yaml", "tiny"), "--dataset",
                                   "custom", "--data-dir", data, "--epochs", "1", "--out",
                                   tmp_path / "o", "--store", tmp_path / "st")
    assert code == 0, err
    assert f"data: user files in {data}: ok, a custom dataset of 10 classes (24 train, 6 test " \
           f"images); not pinned, SHA-256 recorded\n" in err
