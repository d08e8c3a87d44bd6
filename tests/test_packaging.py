"""The wheel `pip install .` builds ships every file of the package: the code, the built-in
models, the shipped studies and the notebook's published numbers. Installed from that wheel
alone, cnnbench finds each data file its code opens."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# How the code opens its data files: resources.files("cnnbench") / "studies" / ...
LOOKUP = re.compile(r'resources\.files\("cnnbench"\)((?:\s*/\s*"[^"]+")+)')


def _source_files(package: Path) -> set[str]:
    """Every file under src/cnnbench as the wheel names it, less Python's byte-code caches."""
    return {"cnnbench/" + p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel of a copy of the checkout, and the copy's src/cnnbench (a build in place
    would leave build/ and egg-info in the checkout; the copy is what the wheel is held to)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    # With setuptools at hand (Python 3.11's venvs have it) the build needs no network;
    # without it, pip fetches the build backend pyproject.toml names, as `pip install .` does.
    isolation = [] if importlib.util.find_spec("setuptools") is None else [
        "--no-build-isolation"]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps",
                          *isolation, "--quiet", "-w", str(tmp / "dist")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = (tmp / "dist").glob("cnnbench-*.whl")
    return whl, tree / "src" / "cnnbench"


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if n.startswith("cnnbench/") and not n.endswith("/")}


def test_the_wheel_holds_every_file_under_src_cnnbench_and_nothing_else(built):
    wheel, package = built
    shipped, source = _wheel_files(wheel), _source_files(package)
    data = sorted(f for f in source if not f.endswith(".py"))
    assert data, "src/cnnbench has no data files: the check below would prove nothing"
    assert sorted(source - shipped) == [], "in src/cnnbench but not in the wheel " \
        "(add a pattern to [tool.setuptools.package-data] in pyproject.toml)"
    assert sorted(shipped - source) == []


def test_every_data_folder_the_code_opens_is_in_the_wheel(built):
    wheel, package = built
    shipped = _wheel_files(wheel)
    lookups = set()
    for path in package.rglob("*.py"):
        for m in LOOKUP.finditer(path.read_text()):
            parts = re.findall(r'"([^"]+)"', m.group(1))
            lookups.add("cnnbench/" + "/".join(parts))
    # The three the package has today: if one is renamed, this test must see it.
    assert {"cnnbench/specs", "cnnbench/studies",
            "cnnbench/reference/notebook_results.json"} <= lookups
    for target in sorted(lookups):
        assert any(f == target or f.startswith(target + "/") for f in shipped), target


def test_installed_from_the_wheel_alone_cnnbench_finds_its_models_studies_and_reference(
        built, tmp_path):
    wheel, _ = built
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-index", "--target", str(target), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    probe = (
        "import cnnbench, sys\n"
        "from cnnbench.model.spec import get_spec, list_models\n"
        "from cnnbench.report.figures import notebook_reference\n"
        "from cnnbench.study.studyfile import load_study\n"
        "print(cnnbench.__file__)\n"
        "print(','.join(list_models()))\n"
        "print(get_spec('CNN_MNIST_2').name)\n"
        "print(len(load_study('notebook-claims').ablations))\n"
        "print(','.join(sorted(notebook_reference())))\n")
    # The wheel's copy first on the path, ahead of the checkout's editable install.
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    where, models, spec, ablations, reference = out.stdout.split("\n")[:5]
    assert Path(where).is_relative_to(target), where
    four = "CNN_MNIST_1,CNN_MNIST_2,CNN_MNIST_3,CNN_MNIST_4"
    assert models == four and spec == "CNN_MNIST_2" and int(ablations) >= 1
    assert reference == four
