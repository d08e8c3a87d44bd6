"""import-keras: Sequential models from source, parsed with ast, never executed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
