"""export: ONNX gives cnnbench's probabilities (onnxruntime, 1e-5); TorchScript too. Every
format is written whole or not at all, never over the weights, never into a run store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnbench.cli import main
from cnnbench.data.tensors import images_to_tensor
from cnnbench.model.build import build_model, predict_proba
from cnnbench.model.spec import build_spec, get_spec
from cnnbench.model.weights import load_weights, save_weights

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def cnnbench_proba(model, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([predict_proba(model.eval(), x[i:i + 1000]).numpy()
                               for i in range(0, len(x), 1000)])


@pytest.mark.slow
def test_onnx_matches_cnnbench_on_the_whole_test_set(mnist_weights, mnist, tmp_path):
    out = tmp_path / "model.onnx"
    assert main(["export", str(mnist_weights), "--format", "onnx", "--out", str(out)]) == 0
    x = images_to_tensor(mnist.x_test)  # all 10000
    expected = cnnbench_proba(load_weights(mnist_weights).model, x)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["probabilities"], {"image": x[i:i + 1000].numpy()})[0]
                          for i in range(0, len(x), 1000)])
    assert got.shape == (10000, 10)
    assert np.abs(got - expected).max() < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).all()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["cnnbench.classes"]) == [str(i) for i in range(10)]
    assert "name: CNN_MNIST_1" in meta["cnnbench.spec_yaml"]


@pytest.mark.slow
def test_onnx_and_torchscript_match_with_batchnorm_statistics(mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an export without --out goes
    # CNN_MNIST_2 has BatchNormalization: its running statistics must be exported, in eval mode.
    spec = get_spec("CNN_MNIST_2")
    torch.manual_seed(1)
    model = build_model(spec)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    weights = save_weights(tmp_path / "bn.safetensors", model, spec, [str(i) for i in range(10)])
    x = images_to_tensor(mnist.x_test[:2000])
    expected = cnnbench_proba(model, x)  # the model in memory, not what the file gives back

    assert main(["export", str(weights), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(tmp_path / "bn.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5

    assert main(["export", str(weights), "--format", "torchscript"]) == 0
    scripted = torch.jit.load(str(tmp_path / "bn.pt"))
    with torch.inference_mode():
        assert np.abs(scripted(x).numpy() - expected).max() < 1e-5

    copy = tmp_path / "copy" / "bn.safetensors"
    assert main(["export", str(weights), "--format", "safetensors", "--out", str(copy)]) == 0
    assert copy.read_bytes() == weights.read_bytes()  # the run's file itself, spec and classes
    assert list(load_weights(copy).classes) == [str(i) for i in range(10)]


# --- where exports go, and what they never overwrite ------------------------------------------

FORMATS = ("torchscript", "onnx", "safetensors")


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    """A 7,850-parameter model's weights, in a folder of their own."""
    spec = build_spec({"name": "tiny", "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]})
    torch.manual_seed(0)
    return save_weights(tmp_path / "w" / "tiny.safetensors", build_model(spec), spec,
                        [str(i) for i in range(10)], "mnist")


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# The file size limit makes every write past 16 kB fail with EFBIG ("File too large"), as a
# full disk fails with ENOSPC: the real kernel path, in a process of its own.
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16000, 16000))
from cnnbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_fails_in_one_line_and_leaves_the_previous_file_at_out(tiny_weights,
                                                                           tmp_path, fmt):
    out = tmp_path / "out" / f"model.{fmt}"
    out.parent.mkdir()
    out.write_bytes(b"the previous export")
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "export", str(tiny_weights),
                           "--format", fmt, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # not 134, torch's C++ abort
    assert proc.stderr.strip() == f"cnnbench export: error: File too large: {out}"
    assert out.read_bytes() == b"the previous export"
    assert os.listdir(out.parent) == [out.name]  # no temporary file left beside it


def test_export_refuses_an_out_that_is_the_weights_file_however_it_is_spelled(
        tiny_weights, tmp_path, monkeypatch, capsys):
    before = tiny_weights.read_bytes()
    link = tmp_path / "hard.safetensors"
    os.link(tiny_weights, link)
    monkeypatch.chdir(tiny_weights.parent)
    for out in ("tiny.safetensors", "./tiny.safetensors", str(tiny_weights), str(link)):
        assert main(["export", str(tiny_weights), "--format", "torchscript", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is the weights file being exported" in err
    assert tiny_weights.read_bytes() == before


def test_export_without_out_writes_to_the_current_folder_as_help_says(tiny_weights, tmp_path,
                                                                      monkeypatch, capsys):
    try:
        assert main(["export", "--help"]) == 0
    except SystemExit as e:  # argparse's own exit, where main lets it through
        assert e.code == 0
    assert "current folder" in " ".join(capsys.readouterr().out.split())
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", str(tiny_weights), "--format", "torchscript"]) == 0
    assert sorted(os.listdir(here)) == ["tiny.pt"]
    assert sorted(os.listdir(tiny_weights.parent)) == ["tiny.safetensors"]
    # A safetensors file already in the current folder is not copied onto itself.
    monkeypatch.chdir(tiny_weights.parent)
    assert main(["export", "tiny.safetensors", "--format", "safetensors"]) == 2
    assert "already a safetensors file in the current folder" in capsys.readouterr().err


def test_a_weights_file_inside_another_store_is_exported_to_the_current_folder(
        tiny_weights, tmp_path, monkeypatch, capsys):
    from cnnbench.store.run_store import RunStore
    store = RunStore(tmp_path / "other-store")  # not $CNNBENCH_STORE
    run = store.runs_dir / "0123abcd"
    run.mkdir(parents=True)
    (run / "weights.safetensors").write_bytes(tiny_weights.read_bytes())
    before = tree_hashes(store.root)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", str(run / "weights.safetensors"), "--format", "torchscript"]) == 0
    assert os.listdir(here) == ["tiny-0123abcd.pt"]
    for out in (run / "model.pt", store.root / "x.onnx"):
        assert main(["export", str(run / "weights.safetensors"), "--format", "torchscript",
                     "--out", str(out)]) == 2
        assert f"inside the run store {store.root.resolve()}" in capsys.readouterr().err
    assert tree_hashes(store.root) == before


def test_onnx_without_the_export_extra_names_the_pip_extra_in_one_line(tiny_weights, tmp_path,
                                                                       monkeypatch, capsys):
    # None in sys.modules makes `import onnx` fail as it does where the package is absent.
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_weights), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "needs the 'onnx' package" in err and "pip install 'cnnbench[export]'" in err
    assert not out.exists()


def test_a_successful_onnx_export_prints_only_where_it_went(tiny_weights, tmp_path):
    # A process of its own: torch's ONNX registry warns only the first time it is built.
    out = tmp_path / "m.onnx"
    proc = subprocess.run([sys.executable, "-m", "cnnbench", "export", str(tiny_weights),
                           "--format", "onnx", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no "torchvision is not installed. Skipping ..." lines
    assert "".join(proc.stdout.split()) == f"onnx:{out}"  # a narrow console may wrap it
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": np.zeros((3, 1, 28, 28), np.float32)})[0]
    assert got.shape == (3, 10) and np.allclose(got.sum(1), 1, atol=1e-6)


def test_an_out_that_is_a_folder_a_fifo_or_under_a_file_is_refused(tiny_weights, tmp_path,
                                                                        capsys):
    # The rename that writes an export would put a file where the FIFO (or a device) was.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for out, said in ((fifo, "is not a plain file"), (tmp_path, "is a folder"),
                      (fifo / "m.pt", f"{fifo} is a file, not a folder")):
        assert main(["export", str(tiny_weights), "--format", "safetensors", "--out",
                     str(out)]) == 2
        assert said in capsys.readouterr().err
    assert fifo.is_fifo()
