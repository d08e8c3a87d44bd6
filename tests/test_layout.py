"""The package's folders are its stages, and imports go one way between them.

base (errors, constraints, settings, atomic, backend) < data < model < store < train < study <
report < workflow < cli, with analysis beside train: it reads the store and the model, never
training. A module may import its own stage and those this table allows; function-level
imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cnnbench

ROOT = Path(cnnbench.__file__).parent
BASE = {"errors", "constraints", "settings", "atomic", "backend"}
ALLOWED: dict[str, set[str]] = {
    "data": BASE,
    "model": BASE | {"data"},
    "store": BASE | {"data", "model"},
    "train": BASE | {"data", "model", "store"},
    "analysis": BASE | {"data", "model", "store"},
    "study": BASE | {"data", "model", "store", "train", "analysis"},
    "report": BASE | {"data", "model", "store", "train", "analysis", "study"},
    "workflow": BASE | {"data", "model", "store", "train", "analysis", "study", "report"},
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
            continue  # cli/, __init__, __main__: the top may import anything
        for line, module in imports(path):
            target = stage_of(module)
            if target and target != stage and target not in ALLOWED[stage]:
                bad.append(f"{rel}:{line} ({stage}) imports {module} ({target})")
    return bad


def test_every_module_belongs_to_a_stage_or_the_base() -> None:
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__"}
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert top == BASE
    assert folders == set(ALLOWED) - BASE | {"cli"}


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


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the cnnbench modules it imports (function-level imports too; ``from
    package import name`` counts as the submodule when ``name`` is one)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in modules:
                    subs = {f"{node.module}.{a.name}" for a in node.names}
                    targets |= (subs & modules.keys()) or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """Package __init__ files that only name their stage are left out: they import nothing."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle(tmp_path) -> None:
    pkg = tmp_path / "cnnbench"
    (pkg / "study").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "study" / "__init__.py").write_text("")
    (pkg / "study" / "a.py").write_text("def f():\n    from cnnbench.study.b import g\n")
    (pkg / "study" / "b.py").write_text("from cnnbench.study import a\n")
    assert cycles(import_graph(pkg)) == [["cnnbench.study.a", "cnnbench.study.b"]]
