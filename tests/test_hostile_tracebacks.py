"""Issue 12, item 13 (less the sqlite one) and its 'Also' list: inputs that gave a traceback
get one clear line and a non-zero exit; a Dense + BatchNormalization model trains on a last
batch of one image, as Keras does; import-keras quotes YAML-looking names; kmnist says it is
unpinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.cli import main
from cnnbench.model.spec import load_spec

SRC = Path(__file__).resolve().parents[1] / "src"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str, command: str) -> str:
    """The one error line of a refusal; nothing else on stderr says 'error' or 'Traceback'."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnnbench {command}: error: "), lines[0]
    return lines[0]


def tiny_spec(tmp_path: Path, *layers: dict, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, *layers, {"Dense": {"units": 10, "activation": "softmax"}}]}))
    return path


def tiny_data(folder: Path, n_train: int = 24) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(6, dtype=np.uint8) % 10}
    import struct
    for name, a in arrays.items():
        (folder / name).write_bytes(struct.pack(">HBB", 0, 8, a.ndim)
                                    + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
    return folder


def run_args(tmp_path: Path, spec: Path, n_train: int = 24) -> list:
    return ["run", spec, "--dataset", "custom", "--data-dir",
            tiny_data(tmp_path / "data", n_train), "--epochs", "1", "--out", tmp_path / "out",
            "--store", tmp_path / "store"]


# --- devices and seeds ---------------------------------------------------------------------

@pytest.mark.parametrize("device, says", [
    ("foo", "--device 'foo': expected auto, cpu, cuda or cuda:N"),
    ("cuda", "--device cuda: this torch (" if not __import__("torch").cuda.is_available()
     else "unused"),
])
def test_a_bad_device_is_one_line(tmp_path, capsys, device, says):
    if says == "unused":
        pytest.skip("this machine has CUDA")  # CI's has none: the case runs there
    code, out, err = cli(capsys, *run_args(tmp_path, tiny_spec(tmp_path)), "--device", device)
    assert code == 2
    assert says in error_line(err, "run")
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.csv"))


@pytest.mark.parametrize("option", ["--seed", "--seeds"])
def test_a_seed_beyond_64_bits_is_refused_in_one_line(tmp_path, capsys, option):
    try:
        code = main(["run", option, "99999999999999999999", "--out", str(tmp_path)])
    except SystemExit as e:  # refused by the parser itself
        code = e.code
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("cnnbench run: error: ") and option in line
    assert "9223372036854775807" in line and "99999999999999999999" in line


def test_seeds_k_is_bounded(tmp_path, capsys):
    code, out, err = cli(capsys, "run", "--seeds", "100000000000", "--out", tmp_path)
    assert code == 2
    line = error_line(err, "run")
    assert line.startswith("cnnbench run: error: --seeds") and "100000000000" in line
    assert "1000" in line.replace("100000000000", "")


def test_a_study_seed_beyond_64_bits_is_refused(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("models: [CNN_MNIST_1]\ntraining: {seeds: [1, 18446744073709551616]}\n")
    code, out, err = cli(capsys, "run", study, "--out", tmp_path / "o")
    assert code == 2
    assert "s.yaml: training.seeds: 18446744073709551616 is out of range" in error_line(err, "run")


# --- BatchNormalization on a batch of one --------------------------------------------------

def test_dense_batchnorm_trains_on_a_last_batch_of_one(tmp_path, capsys):
    # 25 images in batches of 8: the last batch holds one image (torch refused it every epoch).
    spec = tiny_spec(tmp_path, {"Dense": {"units": 16, "activation": "relu"}},
                     {"BatchNormalization": {}})
    code, out, err = cli(capsys, *run_args(tmp_path, spec, n_train=25), "--batch-size", "8",
                         "--epochs", "2")
    assert code == 0, err
    assert "Epoch 2/2 - 4/4 - " in out
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["models"]["tiny"]["status"] == "finished"


def test_batchnorm_on_one_value_per_channel_is_keras_arithmetic():
    import torch

    from cnnbench.model.build import BatchNorm1d, BatchNorm2d
    for bn, x in ((BatchNorm1d(3, eps=1e-3, momentum=0.01), torch.tensor([[1.0, -2.0, 4.0]])),
                  (BatchNorm2d(3, eps=1e-3, momentum=0.01),
                   torch.tensor([1.0, -2.0, 4.0]).view(1, 3, 1, 1))):
        bn.running_var.fill_(2.0)
        with torch.no_grad():
            bn.bias.copy_(torch.tensor([0.5, 0.25, -1.0]))
        x.requires_grad_(True)
        y = bn.train()(x)
        # The batch's variance is 0: the output is beta, the input's gradient 0.
        assert y.flatten().tolist() == [0.5, 0.25, -1.0]
        y.sum().backward()
        assert x.grad.abs().sum().item() == 0.0
        # Keras: moving_mean = 0.99 * 0 + 0.01 * x; moving_variance = 0.99 * 2 + 0.01 * 0.
        assert torch.allclose(bn.running_mean, 0.01 * torch.tensor([1.0, -2.0, 4.0]))
        assert torch.allclose(bn.running_var, torch.full((3,), 1.98))
        assert bn.num_batches_tracked.item() == 1


# --- import-keras ---------------------------------------------------------------------------

def import_keras(tmp_path: Path, capsys, source: str, suffix: str = ".py"):
    path = tmp_path / f"model{suffix}"
    path.write_text(source)
    return cli(capsys, "import-keras", path, "--out", tmp_path / "specs")


DENSE = "model = Sequential()\nmodel.add(Flatten(input_shape=(28, 28, 1)))\n" \
        "model.add(Dense(n, activation='softmax'))\n"


@pytest.mark.parametrize("constant, says", [
    ("n = 1.5 * 1" + "0" * 400, "'n' is not a module-level constant"),
    ("n = 1" + "0" * 30, "'n' is not a module-level constant"),
    ("n = 1e308 * 10", "'n' is not a module-level constant"),
])
def test_huge_constants_are_not_computed(tmp_path, capsys, constant, says):
    code, out, err = import_keras(tmp_path, capsys, f"{constant}\n{DENSE}")
    assert code == 1 and "Traceback" not in err
    assert says in out and not (tmp_path / "specs" / "model_1.yaml").exists()


def test_repeated_squaring_stops_at_64_bits(tmp_path, capsys):
    # Each name squares the one before: n40 = 3 ** (2 ** 40), a number of 2 ** 40 * 1.6 bits.
    source = "n0 = 3\n" + "".join(f"n{k} = n{k - 1} * n{k - 1}\n" for k in range(1, 41)) \
        + "n = n40\n" + DENSE
    path = tmp_path / "square.py"
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # A subprocess with a time limit: before the fix this ran for ever (3**(2**40)).
    r = subprocess.run([sys.executable, "-m", "cnnbench", "import-keras", str(path), "--out",
                        str(tmp_path / "specs")], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'n' is not a module-level constant" in r.stdout
    assert r.stdout.count("too large a number") == 0  # n7 onwards simply are not constants


def test_a_direct_huge_argument_is_named(tmp_path, capsys):
    source = DENSE.replace("Dense(n,", "Dense(1.5 * 1" + "0" * 400 + ",")
    code, out, err = import_keras(tmp_path, capsys, source)
    assert code == 1
    assert "is too large a number for a layer argument" in " ".join(out.split())
    assert "Traceback" not in err


def test_input_with_a_bare_number_is_a_problem_not_a_crash(tmp_path, capsys):
    code, out, err = import_keras(tmp_path, capsys, "model = Sequential([Input(5), Flatten(), "
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
def test_a_malformed_notebook_is_one_line(tmp_path, capsys, notebook, says):
    code, out, err = import_keras(tmp_path, capsys, json.dumps(notebook), ".ipynb")
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
def test_deeply_nested_expressions_are_reported(tmp_path, capsys, expression):
    got, out, err = import_keras(tmp_path, capsys, f"n = {expression}\n{DENSE}")
    assert got == 2 and "Traceback" not in err
    assert TOO_DEEP in out and not (tmp_path / "specs").exists()


def test_an_expression_within_the_nesting_limit_is_followed(tmp_path, capsys):
    got, out, err = import_keras(tmp_path, capsys, f"n = {'+'.join(['1'] * 50)}\n{DENSE}")
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


def test_a_5000_digit_literal_is_skipped_not_a_traceback(tmp_path, capsys):
    code, out, err = import_keras(tmp_path, capsys, f"n = 1{'0' * 5000}\n{DENSE}")
    assert code == 2 and "Traceback" not in err
    assert "skipped 1 code block(s) that are not Python" in out


@pytest.mark.parametrize("heading", ["True", "null", "on", "No", "yes"])
def test_yaml_looking_headings_are_quoted_names(tmp_path, capsys, heading):
    source = f"# {heading}\n```python\n{DENSE.replace('(n,', '(10,')}```\n"
    code, out, err = import_keras(tmp_path, capsys, source, ".md")
    assert code == 0, out + err
    written = tmp_path / "specs" / f"{heading}.yaml"
    assert load_spec(written).name == heading
    assert f"name: '{heading}'\n" in written.read_text()


# --- kmnist ---------------------------------------------------------------------------------

def test_kmnist_says_loudly_that_it_is_unpinned(tmp_path):
    from cnnbench.data.datasets import load_dataset
    lines: list[str] = []
    ds = load_dataset("kmnist", data_dir=tiny_data(tmp_path / "k"), log=lines.append,
                      sources=("user",))
    assert ds.info.name == "kmnist"
    assert lines[-1].startswith(f"data: user files in {tmp_path / 'k'}: ok, BUT UNPINNED: "
                                f"kmnist has no published checksums in cnnbench")
