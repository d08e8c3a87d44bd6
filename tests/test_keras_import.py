"""import-keras: Sequential models from source, parsed with ast, never executed; huge, deeply
nested or malformed sources are named problems, never a traceback, and the specs are written
inside --out under safe, quoted names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import cnnbench_cli, cnnbench_main, error_line

from cnnbench.cli import main
from cnnbench.model.keras_import import import_keras
from cnnbench.model.spec import get_spec, load_spec

NOTEBOOK = Path("/work/shared/seed/notebook.md")
if not NOTEBOOK.is_file():  # the seed notebook lives beside the repository
    NOTEBOOK = Path(__file__).resolve().parents[2] / "shared" / "seed" / "notebook.md"


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason="the seed notebook is not on this machine")
def test_seed_notebook_yields_the_four_models_with_keras_parameter_counts(tmp_path, capsys):
    assert main(["import-keras", str(NOTEBOOK), "--out", str(tmp_path)]) == 0
    specs = [load_spec(tmp_path / f"CNN_MNIST_{i}.yaml") for i in range(1, 5)]
    assert [s.params for s in specs] == [3_274_634, 5_367_950, 5_367_566, 5_368_078]
    for s in specs:  # layer for layer the built-in models
        builtin = get_spec(s.name)
        assert [(x.kind, x.args, x.output_shape) for x in s.layers] == [
            (x.kind, x.args, x.output_shape) for x in builtin.layers]
    assert "CNN_MNIST_1 (line 70): 8 layers, 3,274,634 parameters" in capsys.readouterr().out


def test_python_file_with_a_layer_list_constants_and_input_shape(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("""\
from tensorflow import keras
from tensorflow.keras import layers
num_classes = 26
rows, cols = 28, 28
model = keras.Sequential([
    layers.Conv2D(8, kernel_size=(3, 3), strides=2, activation=tf.nn.relu,
                  input_shape=(rows, cols, 1)),
    layers.AveragePooling2D(pool_size=2, padding="same"),
    layers.BatchNormalization(momentum=0.99),
    layers.GlobalAveragePooling2D(),
    layers.Dropout(rate=0.25),
    layers.Dense(num_classes),
    layers.Activation("softmax"),
])
raise SystemExit("never executed")
""")
    result = import_keras(src)
    (model,) = result.models
    assert model.problems == []
    spec = model.spec
    assert spec.name == "net_1" and spec.input_shape == (28, 28, 1)
    assert [x.kind for x in spec.layers] == ["Conv2D", "AveragePooling2D", "BatchNormalization",
                                             "GlobalAveragePooling2D", "Dropout", "Dense",
                                             "Activation"]
    assert spec.layers[0].args["strides"] == (2, 2) and spec.layers[0].output_shape == (13, 13, 8)
    assert spec.num_classes == 26
    assert spec.params == (3 * 3 * 8 + 8) + 4 * 8 + (8 * 26 + 26)


def test_ipynb_cells_are_followed_and_a_new_sequential_starts_a_new_model(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": ["# Small net\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "model = Sequential()\n"]},
        {"cell_type": "code", "source": ["model.add(Flatten(input_shape=(28, 28, 1)))\n",
                                         "model.add(Dense(10, activation='softmax'))\n"]},
        {"cell_type": "code", "source": "model = Sequential()\nmodel.add(Flatten())\n"
                                        "model.add(Dense(64, 'relu'))\n"
                                        "model.add(Dense(10, activation='softmax'))\n"},
    ]
    nb = tmp_path / "two.ipynb"
    nb.write_text(json.dumps({"cells": cells, "nbformat": 4}))
    result = import_keras(nb)
    assert [m.name for m in result.models] == ["Small_net", "two_2"]
    assert [m.spec.params for m in result.models] == [7850, 784 * 64 + 64 + 650]
    assert result.models[0].where == "cell 2, line 2"


def test_untranslatable_parts_are_named_with_their_line(tmp_path, capsys):
    src = tmp_path / "odd.py"
    src.write_text("""\
model = Sequential()
model.add(Conv2D(8, 3, activation='relu'))
model.add(Reshape((26, 26 * 8)))
model.add(Conv2D(8, 3, kernel_regularizer=l2(0.01)))
for units in (64, 32):
    model.add(Dense(units))
model.add(Dense(n_classes, activation='softmax'))
""")
    result = import_keras(src)
    (model,) = result.models
    assert model.spec is None
    assert model.problems[0].startswith("line 3: Reshape(...) has no spec equivalent")
    assert model.problems[1].startswith("line 4: Conv2D argument 'kernel_regularizer' is not "
                                        "supported")
    assert model.problems[2].startswith("line 6: model.add(Dense(units)) sits inside a for block")
    assert model.problems[3] == "line 7: 'n_classes' is not a module-level constant"
    rc = main(["import-keras", str(src), "--out", str(tmp_path / "specs")])
    assert rc == 1
    assert "cannot translate: line 3: Reshape(...)" in capsys.readouterr().out
    assert not (tmp_path / "specs" / "odd_1.yaml").exists()


def test_no_model_is_a_usage_error(tmp_path, capsys):
    src = tmp_path / "empty.py"
    src.write_text("x = 1\n")
    assert main(["import-keras", str(src)]) == 2
    assert "no Sequential model found" in capsys.readouterr().err


MLP = ("model = Sequential([Flatten(input_shape=(28, 28, 1)), "
       "Dense(10, activation='softmax')]{name})\n")


def test_sequentials_own_name_names_the_spec(tmp_path, capsys):
    src = tmp_path / "named.py"
    src.write_text(MLP.format(name=", name='mnist_mlp'")
                   + "m = Sequential(name='wide net!')\nm.add(Flatten(input_shape=(28, 28, 1)))\n"
                   "m.add(Dense(10, activation='softmax'))\n"
                   + MLP.format(name=", name='mnist_mlp'"))
    assert main(["import-keras", str(src), "--out", str(tmp_path / "specs")]) == 0
    assert sorted(p.name for p in (tmp_path / "specs").iterdir()) == [
        "mnist_mlp.yaml", "named_3.yaml", "wide_net.yaml"]
    assert load_spec(tmp_path / "specs" / "mnist_mlp.yaml").name == "mnist_mlp"
    out = " ".join(capsys.readouterr().out.split())
    assert "note: line 2: name='wide net!' became wide_net" in out
    assert "note: line 5: the name 'mnist_mlp' is taken by an earlier model; named named_3" in out


def test_a_full_disk_leaves_no_empty_spec_and_keeps_the_one_there(tmp_path):
    """RLIMIT_FSIZE makes every write past 64 bytes fail with EFBIG, as a full disk would."""
    import os
    import resource
    import subprocess
    import sys
    src = tmp_path / "net.py"
    src.write_text(MLP.format(name=", name='mnist_mlp'"))
    out = tmp_path / "specs"
    out.mkdir()
    (out / "mnist_mlp.yaml").write_text("# the spec from before\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    r = subprocess.run([sys.executable, "-m", "cnnbench", "import-keras", str(src), "--out",
                        str(out)], capture_output=True, text=True, preexec_fn=small_files,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("cnnbench import-keras: error: File too large")
    assert [p.name for p in out.iterdir()] == ["mnist_mlp.yaml"]  # no temporary left either
    assert (out / "mnist_mlp.yaml").read_text() == "# the spec from before\n"


def test_a_source_over_the_size_bound_is_refused_before_it_is_read(tmp_path, capsys):
    from cnnbench.model.keras_import import MAX_SOURCE_BYTES
    src = tmp_path / "huge.ipynb"
    with src.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_SOURCE_BYTES + 1)
    assert main(["import-keras", str(src), "--out", str(tmp_path / "specs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cnnbench import-keras: error: {src}: over 32 MiB; import-keras reads at "
                   f"most 32 MiB (a notebook's outputs hold most of a large .ipynb: clear "
                   f"them, or save the code as .py).")


def test_import_keras_writes_only_inside_out_and_ascii_names(tmp_path):
    src = tmp_path / "nb.md"
    src.write_text("# Modèle über\n```python\nmodel = Sequential()\nmodel.add(Flatten("
                   "input_shape=(28, 28, 1)))\nmodel.add(Dense(10, activation='softmax'))\n```\n")
    code, out, err = cnnbench_main("import-keras", src, "--out", tmp_path / "specs")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "specs").iterdir())
    assert written == ["Mod_le_ber.yaml"]
    assert load_spec(tmp_path / "specs" / written[0]).name == "Mod_le_ber"


# --- huge, deep or malformed sources: a problem named, never a traceback --------------------------

def import_keras_cli(tmp_path: Path, source: str, suffix: str = ".py"):
    """``cnnbench import-keras`` of ``source`` saved as model.SUFFIX, into tmp_path/specs."""
    path = tmp_path / f"model{suffix}"
    path.write_text(source)
    return cnnbench_main("import-keras", path, "--out", tmp_path / "specs")


DENSE = "model = Sequential()\nmodel.add(Flatten(input_shape=(28, 28, 1)))\n" \
        "model.add(Dense(n, activation='softmax'))\n"


@pytest.mark.parametrize("constant, says", [
    ("n = 1.5 * 1" + "0" * 400, "'n' is not a module-level constant"),
    ("n = 1" + "0" * 30, "'n' is not a module-level constant"),
    ("n = 1e308 * 10", "'n' is not a module-level constant"),
])
def test_huge_constants_are_not_computed(tmp_path, constant, says):
    code, out, err = import_keras_cli(tmp_path, f"{constant}\n{DENSE}")
    assert code == 1 and "Traceback" not in err
    assert says in out and not (tmp_path / "specs" / "model_1.yaml").exists()


def test_repeated_squaring_stops_at_64_bits(tmp_path):
    # Each name squares the one before: n40 = 3 ** (2 ** 40), a number of 2 ** 40 * 1.6 bits.
    source = "n0 = 3\n" + "".join(f"n{k} = n{k - 1} * n{k - 1}\n" for k in range(1, 41)) \
        + "n = n40\n" + DENSE
    path = tmp_path / "square.py"
    path.write_text(source)
    # A subprocess with a time limit: before the fix this ran for ever (3**(2**40)).
    r = cnnbench_cli("import-keras", path, "--out", tmp_path / "specs", timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'n' is not a module-level constant" in r.stdout
    assert r.stdout.count("too large a number") == 0  # n7 onwards simply are not constants


def test_a_direct_huge_argument_is_named(tmp_path):
    source = DENSE.replace("Dense(n,", "Dense(1.5 * 1" + "0" * 400 + ",")
    code, out, err = import_keras_cli(tmp_path, source)
    assert code == 1
    assert "is too large a number for a layer argument" in " ".join(out.split())
    assert "Traceback" not in err


def test_input_with_a_bare_number_is_a_problem_not_a_crash(tmp_path):
    code, out, err = import_keras_cli(tmp_path, "model = Sequential([Input(5), Flatten(), "
                                                "Dense(10, activation='softmax')])\n")
    assert code == 1 and "Traceback" not in err
    assert "Input(5): the shape must be a tuple (height, width, channels), got 5" in out


@pytest.mark.parametrize("notebook, says", [
    ({"cells": ["print(1)"]}, "cell 1 is a str, not a mapping"),
    ({"cells": 5}, "'cells' is a int, not a list"),
    ([1, 2], "not a Jupyter notebook (JSON with 'cells')"),
    ({"cells": [{"cell_type": "code", "source": [1, 2]}]},
     "not a Jupyter notebook: the 'source' of cell 1 is [1, 2], not a string or a list of "
     "strings."),
    ({"cells": [{"cell_type": "markdown", "source": {"a": 1}}]},
     "the 'source' of cell 1 is {'a': 1}, not a string"),
])
def test_a_malformed_notebook_is_one_line(tmp_path, notebook, says):
    code, out, err = import_keras_cli(tmp_path, json.dumps(notebook), ".ipynb")
    assert code == 2
    assert says in error_line(err, "import-keras")


TOO_DEEP = ("line 1: nested more than 100 levels deep; the code block is skipped "
            "(import-keras follows at most 100)")


@pytest.mark.parametrize("expression", [
    "+".join(["1"] * 100_000),  # past the parser's own limit
    "-" * 100_000 + "1",
    "+".join(["1"] * 1200),  # parses; past the importer's count of 100 levels
    "+".join(["1"] * 101),
])
def test_deeply_nested_expressions_are_reported(tmp_path, expression):
    got, out, err = import_keras_cli(tmp_path, f"n = {expression}\n{DENSE}")
    assert got == 2 and "Traceback" not in err
    assert TOO_DEEP in out and not (tmp_path / "specs").exists()


def test_an_expression_within_the_nesting_limit_is_followed(tmp_path):
    got, out, err = import_keras_cli(tmp_path, f"n = {'+'.join(['1'] * 50)}\n{DENSE}")
    assert got == 0, out + err
    assert load_spec(tmp_path / "specs" / "model_1.yaml").layers[-1].args["units"] == 50


def _at_depth(depth: int, f):
    return f() if depth <= 0 else _at_depth(depth - 1, f)


@pytest.mark.parametrize("limit, headroom", [(1000, None), (1000, 40), (100_000, None),
                                             (100_000, 40), (5_000, 2_000)])
def test_the_nesting_limit_holds_whatever_the_stack_and_the_recursion_limit(
        tmp_path, limit, headroom):
    """The same answer with Python's default recursion limit or a raised one, called from a
    shallow stack or one a few frames short of the limit (the parser then gives up first)."""
    import inspect

    from cnnbench.model.keras_import import import_keras as follow
    path = tmp_path / "deep.py"
    path.write_text(f"n = {'+'.join(['1'] * 1200)}\n{DENSE}")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        depth = 0 if headroom is None else limit - len(inspect.stack(0)) - headroom
        result = _at_depth(depth, lambda: follow(path))
    finally:
        sys.setrecursionlimit(old)
    assert result.models == []
    assert [p.split(": ", 1)[1] for p in result.problems] == [TOO_DEEP.split(": ", 1)[1]]


def test_a_5000_digit_literal_is_skipped_not_a_traceback(tmp_path):
    code, out, err = import_keras_cli(tmp_path, f"n = 1{'0' * 5000}\n{DENSE}")
    assert code == 2 and "Traceback" not in err
    assert "skipped 1 code block(s) that are not Python" in out


@pytest.mark.parametrize("heading", ["True", "null", "on", "No", "yes"])
def test_yaml_looking_headings_are_quoted_names(tmp_path, heading):
    source = f"# {heading}\n```python\n{DENSE.replace('(n,', '(10,')}```\n"
    code, out, err = import_keras_cli(tmp_path, source, ".md")
    assert code == 0, out + err
    written = tmp_path / "specs" / f"{heading}.yaml"
    assert load_spec(written).name == heading
    assert f"name: '{heading}'\n" in written.read_text()
