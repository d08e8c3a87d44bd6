"""cli.main's exit codes (errors.py): 2 for input the user can fix, 1 for what failed while
running it (the store, the data, the disk); one line on stderr either way."""

from __future__ import annotations

import errno

from cnnbench.cli import _os_error, main


def error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith(f"cnnbench {command}: error: "), line
    return line


def test_help_states_the_exit_codes(capsys):
    assert main(["--help"]) == 0  # main returns every exit code, --help's included
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


def test_a_full_disk_exits_1_with_one_line_naming_the_file(tmp_path):
    """A file size limit answers the write past it with EFBIG, as a full disk answers with
    ENOSPC: the kernel's own refusal, in a process of its own, nothing patched. (/dev/full
    cannot stand in: a file is written whole by renaming over the target, so --out must be a
    plain file, and a device is refused before anything is written.)"""
    import subprocess
    import sys

    from cnnbench.model.build import build_model
    from cnnbench.model.spec import get_spec
    from cnnbench.model.weights import save_weights
    spec = get_spec("CNN_MNIST_1")
    weights = save_weights(tmp_path / "m.safetensors", build_model(spec), spec,
                           [str(i) for i in range(10)], "mnist")
    out = tmp_path / "copy.safetensors"
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
               "from cnnbench.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", limited, "export", str(weights), "--format",
                           "safetensors", "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    line = error_line(proc.stderr, "export")
    assert line == f"cnnbench export: error: File too large: {out}" and "Errno" not in line
    assert not out.exists()


def test_an_os_error_in_one_line():
    assert _os_error(OSError(errno.ENOSPC, "No space left on device", "/s/results.json")) == (
        "No space left on device: /s/results.json")
    assert _os_error(OSError("cannot write results to o: Read-only file system")) == (
        "cannot write results to o: Read-only file system")
