"""Keras ``Sequential`` models from Python or notebook source, as spec files, never executed.

Reads ``.py`` files, ``.ipynb`` notebooks (their code cells) or notebook text with fenced code
blocks (e.g. a notebook exported to Markdown), parses the code with :mod:`ast` and follows,
statement by statement, ``model = Sequential()`` / ``model.add(Layer(...))`` (across cells;
a new ``Sequential()`` starts a new model) and ``Sequential([Layer(...), ...])``. Names used
as arguments (``Dense(num_classes)``) resolve when they are simple module-level constants.
Anything else is reported with its line, never guessed.

keras_source.py finds the code blocks; keras_layers.py translates one layer call.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.atomic import atomic_write_text, output_path
from cnnbench.model.keras_layers import (
    DEFAULTS_ONLY,
    IGNORED,
    KERAS_CLASSES,
    MAX_INT_BITS,
    Untranslatable,
    call_name,
    const_value,
    record_constants,
    translate_layer,
    unparse,
)
from cnnbench.model.keras_source import (
    MAX_NESTING,
    MAX_SOURCE_BYTES,
    TOO_DEEP,
    Block,
    block_where,
    nesting,
    read_blocks,
    strip_magics,
)
from cnnbench.model.spec import ModelSpec, SpecError, build_spec

__all__ = [  # the names of keras_source and keras_layers stay importable from here
    "DEFAULTS_ONLY", "IGNORED", "KERAS_CLASSES", "MAX_INT_BITS", "MAX_NESTING",
    "MAX_SOURCE_BYTES", "TOO_DEEP", "Block", "ImportResult", "ImportedModel",
    "Untranslatable", "import_keras", "nesting", "read_blocks", "spec_yaml",
    "translate_layer", "write_specs",
]


@dataclass
class ImportedModel:
    name: str
    where: str  # of the Sequential() call
    input_shape: list[int] | None = None
    layers: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # untranslatable: no spec is written
    notes: list[str] = field(default_factory=list)  # assumptions made
    spec: ModelSpec | None = None


@dataclass
class ImportResult:
    source: str
    models: list[ImportedModel]
    problems: list[str]  # outside any model
    skipped_blocks: list[str]  # code blocks that are not Python (outputs, shell)


# --- following the models -------------------------------------------------------------------

class _Follower:
    def __init__(self, path: Path) -> None:
        # ASCII and short: model names become file names and must pass spec.check_name.
        self.stem = re.sub(r"[^A-Za-z0-9_]+", "_", path.stem)[:60].strip("_") or "model"
        self.consts: dict[str, Any] = {}
        self.live: dict[str, ImportedModel] = {}  # variable -> model being built
        self.models: list[ImportedModel] = []
        self.problems: list[str] = []
        self.used_names: set[str] = set()

    def _name(self, given: str | None, heading: str | None) -> str:
        """Sequential(name=...), else the heading above the code, else FILE_n; each once."""
        name = next((n for n in (given, heading) if n and n not in self.used_names), None)
        if name is None:
            n = len(self.models) + 1
            while f"{self.stem}_{n}" in self.used_names:
                n += 1
            name = f"{self.stem}_{n}"
        self.used_names.add(name)
        return name

    def _start(self, var: str, call: ast.Call, block: Block) -> None:
        given, notes = _given_name(call, block.where(call.lineno))
        model = ImportedModel(self._name(given, block.heading), block.where(call.lineno))
        if given is not None and model.name != given:
            notes.append(f"{model.where}: the name {given!r} is taken by an earlier model; "
                         f"named {model.name}")
        model.notes += notes
        self.models.append(model)
        self.live[var] = model
        items = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg == "layers"), None)
        if items is None:
            return
        if not isinstance(items, ast.List | ast.Tuple):
            model.problems.append(f"{block.where(call.lineno)}: Sequential("
                                  f"{unparse(items)}) is not a literal list of layers")
            return
        for item in items.elts:
            self._add(model, item, block)

    def _add(self, model: ImportedModel, node: ast.expr, block: Block) -> None:
        where = block.where(node.lineno)
        if call_name(node) in ("Input", "InputLayer"):
            assert isinstance(node, ast.Call)
            shape_node = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg in ("shape", "input_shape")), None)
            try:
                shape = const_value(shape_node, self.consts) if shape_node else None
            except Untranslatable as e:
                model.problems.append(f"{where}: {e}")
                return
            if shape is not None and not isinstance(shape, list):
                # Input(5): Keras reads it as shape (5,), which no image model takes.
                model.problems.append(f"{where}: {unparse(node)}: the shape must be a tuple "
                                      f"(height, width, channels), got {shape!r}")
                return
            model.input_shape = shape
            return
        if not isinstance(node, ast.Call):
            model.problems.append(f"{where}: {unparse(node)} is not a layer call")
            return
        try:
            kind, args, input_shape = translate_layer(node, self.consts)
        except Untranslatable as e:
            shape_kw = next((k for k in node.keywords if k.arg == "input_shape"), None)
            if shape_kw is not None and f"'{unparse(shape_kw.value)}'" in str(e):
                # Keras' own examples set input_shape in an if/else on the data format.
                node = ast.Call(node.func, node.args,
                                [k for k in node.keywords if k is not shape_kw])
                model.notes.append(f"{where}: input_shape={unparse(shape_kw.value)} "
                                   f"is not a constant; assumed [28, 28, 1]")
                self._add(model, ast.copy_location(node, shape_kw.value), block)
                return
            model.problems.append(f"{where}: {e}")
            return
        if input_shape is not None:
            if model.layers:
                model.notes.append(f"{where}: input_shape on a layer that is not the first; "
                                   f"ignored")
            else:
                model.input_shape = input_shape
        model.layers.append({kind: args})

    def statement(self, stmt: ast.stmt, block: Block) -> None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                stmt.targets[0], ast.Name) and call_name(stmt.value) == "Sequential":
            assert isinstance(stmt.value, ast.Call)
            self._start(stmt.targets[0].id, stmt.value, block)
            return
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:  # rebinding a model variable ends that model
                if isinstance(t, ast.Name):
                    self.live.pop(t.id, None)
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "add" and isinstance(call.func.value, ast.Name)):
            var = call.func.value.id
            where = block.where(stmt.lineno)
            if var not in self.live:
                self.problems.append(f"{where}: {var}.add(...) on a variable that holds no "
                                     f"Sequential model here")
            elif len(call.args) != 1:
                self.live[var].problems.append(f"{where}: {var}.add takes one layer")
            else:
                self._add(self.live[var], call.args[0], block)
            return
        if not isinstance(stmt, ast.Expr | ast.Assign | ast.Import | ast.ImportFrom):
            # .add(...) inside if/for/def: it depends on running the code.
            for node in ast.walk(stmt):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "add" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id in self.live):
                    self.live[node.func.value.id].problems.append(
                        f"{block.where(node.lineno)}: {unparse(node, 60)} sits inside "
                        f"a {type(stmt).__name__.lower()} block; it is not followed without "
                        f"running the code")
        record_constants(stmt, self.consts)


def _given_name(call: ast.Call, where: str) -> tuple[str | None, list[str]]:
    """``Sequential(..., name='mnist_cnn')``'s name as a spec name (letters, digits, ``_ . -``:
    it becomes a file name), with a note where it had to change or could not be read."""
    node = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "name"), None)
    if node is None:
        return None, []
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None, [f"{where}: name={unparse(node)} is not a constant string; not used"]
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", node.value).lstrip("_.-")[:100].rstrip("_")
    if not name:
        return None, [f"{where}: name={node.value!r} has no letter or digit; not used"]
    if name != node.value:
        return name, [f"{where}: name={unparse(node)} became {name} (a spec name is "
                      f"letters, digits and _ . -)"]
    return name, []


def import_keras(path: str | Path) -> ImportResult:
    """Find the Sequential models of a source file and validate each as a spec."""
    path = Path(path)
    follower = _Follower(path)
    skipped = []
    for block in read_blocks(path):
        code = strip_magics(block.code)
        if not code.strip():
            continue
        try:
            tree = ast.parse(code)
        except (RecursionError, MemoryError):  # nesting the parser cannot hold
            follower.problems.append(f"{block_where(block)}: {TOO_DEEP}")
            continue
        except (SyntaxError, ValueError):  # ValueError: a 5000-digit int literal
            last = block.first_line + max(code.count("\n"), 0)
            skipped.append(f"cell {block.cell}" if block.cell is not None
                           else f"lines {block.first_line}-{last}")
            continue
        deep = next((stmt for stmt in tree.body if nesting(stmt) > MAX_NESTING), None)
        if deep is not None:  # 1+1+...+1 1,200 times parses: skipped all the same
            follower.problems.append(f"{block.where(deep.lineno)}: {TOO_DEEP}")
            continue
        for stmt in tree.body:
            try:
                follower.statement(stmt, block)
            except RecursionError:  # only with the stack nearly full already at the call
                follower.problems.append(f"{block.where(stmt.lineno)}: {TOO_DEEP}")
    for model in follower.models:
        if not model.layers and not model.problems:
            model.problems.append(f"{model.where}: the model has no layers")
        if model.problems:
            continue
        data = {"name": model.name, "input_shape": model.input_shape or [28, 28, 1],
                "layers": [{k: _plain(a)} for layer in model.layers for k, a in layer.items()]}
        try:
            model.spec = build_spec(data, source=f"{path} ({model.name}, {model.where})")
        except SpecError as e:
            model.problems.append(str(e))
    return ImportResult(str(path), follower.models, follower.problems, skipped)


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def spec_yaml(model: ImportedModel, source: str) -> str:
    """The spec file text of an imported model, in the style of the built-in specs."""
    assert model.spec is not None
    def comment(text: str) -> str:  # a file name or note with a newline stays a comment
        return "# " + " ".join(text.splitlines())

    lines = [comment(f"Imported by cnnbench import-keras from {source} ({model.where})."),
             f"# {model.spec.params:,} parameters.",
             *[comment(f"Note: {n}") for n in model.notes],
             # safe_dump: a heading 'True', 'null' or 'on' stays a string, quoted.
             yaml.safe_dump({"name": model.name}, width=1000).strip(),
             f"input_shape: {list(model.spec.input_shape)}",
             "layers:"]
    for layer in model.layers:
        for kind, args in layer.items():
            flow = yaml.safe_dump(_plain(args), default_flow_style=True, width=1000,
                                  sort_keys=False).strip()
            lines.append(f"  - {kind}: {flow}")
    return "\n".join(lines) + "\n"


def write_specs(result: ImportResult, out_dir: str | Path) -> list[Path]:
    """Write one ``NAME.yaml`` per translated model into ``out_dir``; return the paths."""
    out = Path(out_dir)
    paths = []
    for model in result.models:
        if model.spec is None:
            continue
        out.mkdir(parents=True, exist_ok=True)  # only once there is a spec to write
        path = output_path(out, model.name, ".yaml")
        # Whole or not at all: on a full disk the file a name had stays as it was.
        atomic_write_text(path, spec_yaml(model, Path(result.source).name))
        paths.append(path)
    return paths
