"""The package's folders are its stages, and imports go one way between them.

base (errors, constraints, atomic, backend) < data < model < store < train < study < report < cli,
with analysis beside train: it reads the store and the model, never training. A module may
import its own stage and those this table allows; function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cnnbench

ROOT = Path(cnnbench.__file__).parent
BASE = {"errors", "constraints", "atomic", "backend"}
ALLOWED: dict[str, set[str]] = {
    "data": BASE,
    "model": BASE | {"data"},
    "store": BASE | {"data", "model"},
    "train": BASE | {"data", "model", "store"},
    "analysis": BASE | {"data", "model", "store"},
    "study": BASE | {"data", "model", "store", "train", "analysis"},
    "report": BASE | {"data", "model", "store", "train", "analysis", "study"},
}
for b in BASE:
    ALLOWED[b] = BASE - {b}


def stage_of(module: str) -> str:
    """'cnnbench.model.spec' -> 'model'; 'cnnbench' itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """Every cnnbench module ``path`` imports, with its line, at any depth of the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("cnnbench"):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("cnnbench")]
    return out


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if stage not in ALLOWED:
            continue  # cli, __init__, __main__: the top may import anything
        for line, module in imports(path):
            target = stage_of(module)
            if target and target != stage and target not in ALLOWED[stage]:
                bad.append(f"{rel}:{line} ({stage}) imports {module} ({target})")
    return bad


def test_every_module_belongs_to_a_stage_or_the_base() -> None:
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__", "cli"}
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert top == BASE
    assert folders == set(ALLOWED) - BASE


def test_imports_go_one_way_between_stages() -> None:
    assert violations() == []


def test_the_check_sees_a_backward_import(tmp_path) -> None:
    """The check can fail: a model module importing the engine is reported."""
    pkg = tmp_path / "cnnbench"
    (pkg / "model").mkdir(parents=True)
    for b in BASE:
        (pkg / f"{b}.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "bad.py").write_text("def f():\n    from cnnbench.train.engine import fit\n")
    assert violations(pkg) == ["model/bad.py:2 (model) imports cnnbench.train.engine (train)"]
