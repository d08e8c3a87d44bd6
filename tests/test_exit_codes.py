"""cli.main's exit codes (errors.py): 2 for input the user can fix, 1 for what failed while
running it (the store, the data, the disk); one line on stderr either way."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cnnbench.cli import _os_error, main


def error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith(f"cnnbench {command}: error: "), line
    return line


def test_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Exit codes: 0 done; 1 something failed while running" in capsys.readouterr().out


def test_a_spec_error_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlayers:\n  - Conv2D: {filters: -4, kernel_size: 3}\n"
                   "  - Flatten\n  - Dense: {units: 10, activation: softmax}\n")
    assert main(["summary", str(bad)]) == 2
    assert "'filters'" in error_line(capsys.readouterr().err, "summary")


def test_a_usage_error_of_the_command_line_exits_2(capsys):
    assert main(["run", "--seed", "1", "--seeds", "2"]) == 2
    assert "argument --seeds: not allowed with argument --seed" in error_line(
        capsys.readouterr().err, "run")


def test_a_store_path_under_a_file_exits_1(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--models", "CNN_MNIST_1", "--store", str(blocker / "store"),
                 "--out", str(tmp_path / "out")]) == 1
    assert f"the run store {blocker / 'store'} is not writable" in error_line(
        capsys.readouterr().err, "run")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_full_disk_exits_1_with_one_line_naming_the_file(tmp_path, capsys):
    """/dev/full answers every write with ENOSPC: a real full disk, nothing patched."""
    from cnnbench.model.build import build_model
    from cnnbench.model.spec import get_spec
    from cnnbench.model.weights import save_weights
    spec = get_spec("CNN_MNIST_1")
    weights = save_weights(tmp_path / "m.safetensors", build_model(spec), spec,
                           [str(i) for i in range(10)], "mnist")
    assert main(["export", str(weights), "--format", "safetensors", "--out", "/dev/full"]) == 1
    line = error_line(capsys.readouterr().err, "export")
    assert line.startswith("cnnbench export: error: No space left on device: ")
    assert line.endswith("/dev/full") and "Errno" not in line


def test_an_os_error_in_one_line():
    assert _os_error(OSError(errno.ENOSPC, "No space left on device", "/s/results.json")) == (
        "No space left on device: /s/results.json")
    assert _os_error(OSError("cannot write results to o: Read-only file system")) == (
        "cannot write results to o: Read-only file system")
