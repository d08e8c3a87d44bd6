"""Keras ``Sequential`` models from Python or notebook source, as spec files, never executed.

Reads ``.py`` files, ``.ipynb`` notebooks (their code cells) or notebook text with fenced code
blocks (e.g. a notebook exported to Markdown), parses the code with :mod:`ast` and follows,
statement by statement, ``model = Sequential()`` / ``model.add(Layer(...))`` (across cells;
a new ``Sequential()`` starts a new model) and ``Sequential([Layer(...), ...])``. Names used
as arguments (``Dense(num_classes)``) resolve when they are simple module-level constants.
Anything else is reported with its line, never guessed.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnbench.atomic import atomic_write_text, output_path
from cnnbench.constraints import shown
from cnnbench.model.layers import INITIALIZERS, KINDS, keras_snake_case
from cnnbench.model.spec import ModelSpec, SpecError, build_spec

# Keras class name -> the registry's kind: each kind's own name and its aliases.
KERAS_CLASSES = {alias: kind.name for kind in KINDS.values()
                 for alias in (kind.name, *kind.keras_aliases)}
# Keras arguments a spec does not carry, accepted when they hold the value cnnbench uses
# (a kind's own argument of the same name comes first: LayerNormalization's epsilon).
DEFAULTS_ONLY: dict[str, tuple[Any, ...]] = {
    "data_format": ("channels_last", None),
    "dilation_rate": (1, (1, 1), [1, 1]),
    "axis": (-1, 3),
    "momentum": (0.99,),
    "epsilon": (0.001, 1e-3),
    "center": (True,),
    "scale": (True,),
    "noise_shape": (None,),
}
IGNORED = ("name", "seed", "trainable")  # no effect on what a spec describes
# A source file past this is not a model definition (a notebook of a few models with their
# outputs is a few MiB); it is refused before it is read whole.
MAX_SOURCE_BYTES = 32 << 20
# How deep a statement's syntax tree may nest (a Keras model nests about 8 levels): deeper
# code is skipped whole, the same whether Python's parser gave up first or this count did,
# so the outcome never depends on the recursion limit or the stack's depth at the call.
MAX_NESTING = 100
TOO_DEEP = (f"nested more than {MAX_NESTING} levels deep; the code block is skipped "
            f"(import-keras follows at most {MAX_NESTING})")


class Untranslatable(Exception):
    """A construct with no spec equivalent; the message says what."""


@dataclass
class Block:
    """One piece of code and where it lies in the file."""

    code: str
    first_line: int  # file line of the block's first line (1-based)
    cell: int | None = None  # notebook cell number (1-based) for .ipynb
    heading: str | None = None  # the last title-like text line before it

    def where(self, lineno: int) -> str:
        if self.cell is not None:
            return f"cell {self.cell}, line {lineno}"
        return f"line {self.first_line + lineno - 1}"


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


# --- reading the source ---------------------------------------------------------------------

_TITLE = re.compile(r"^(?:#{1,6}\s+)?([A-Za-z][\w\-. ]{0,60}?)\s*$")


def _title(line: str) -> str | None:
    """A text line that looks like a title: a lone identifier or a Markdown heading."""
    m = _TITLE.match(line.strip())
    if not m:
        return None
    text = m.group(1)
    if line.lstrip().startswith("#") or re.fullmatch(r"[A-Za-z][\w\-.]*", text):
        # ASCII only: the name becomes a file name and must pass spec.check_name.
        return re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_") or None
    return None


def _markdown_blocks(text: str) -> list[Block]:
    blocks, heading = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```|~~~)", lines[i])
        if not fence:
            heading = _title(lines[i]) or heading
            i += 1
            continue
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].lstrip().startswith(fence.group(1)):
            j += 1
        blocks.append(Block("\n".join(lines[start:j]), start + 1, heading=heading))
        i = j + 1
    return blocks


def _notebook_blocks(text: str, path: Path) -> list[Block]:
    try:
        nb = json.loads(text)
        cells = nb["cells"]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError) as e:
        raise SpecError(f"{path}: not a Jupyter notebook (JSON with 'cells'): "
                        f"{type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(cells, list):
        raise SpecError(f"{path}: not a Jupyter notebook: 'cells' is a "
                        f"{type(cells).__name__}, not a list.")
    blocks, heading = [], None
    for n, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            raise SpecError(f"{path}: not a Jupyter notebook: cell {n} is a "
                            f"{type(cell).__name__}, not a mapping with 'cell_type' and "
                            f"'source'.")
        src = cell.get("source", "")
        if isinstance(src, list) and all(isinstance(line, str) for line in src):
            src = "".join(src)
        elif not isinstance(src, str):
            raise SpecError(f"{path}: not a Jupyter notebook: the 'source' of cell {n} is "
                            f"{shown(src, 60)}, not a string or a list of strings.")
        if cell.get("cell_type") == "code":
            blocks.append(Block(src, 1, cell=n, heading=heading))
        else:
            for line in src.splitlines():
                heading = _title(line) or heading
    return blocks


def read_blocks(path: str | Path) -> list[Block]:
    """The code of a ``.py`` file, of an ``.ipynb``'s code cells, or of fenced blocks; at most
    :data:`MAX_SOURCE_BYTES` of them are read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SOURCE_BYTES + 1)
        if len(raw) > MAX_SOURCE_BYTES:
            raise SpecError(f"{path}: over {MAX_SOURCE_BYTES >> 20} MiB; import-keras reads "
                            f"at most {MAX_SOURCE_BYTES >> 20} MiB (a notebook's outputs hold "
                            f"most of a large .ipynb: clear them, or save the code as .py).")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read ({e}).") from e
    if path.suffix == ".py":
        return [Block(text, 1)]
    if path.suffix == ".ipynb":
        return _notebook_blocks(text, path)
    return _markdown_blocks(text)


def _strip_magics(code: str) -> str:
    """IPython lines (``%matplotlib``, ``!pip``) become blank lines, keeping line numbers."""
    return "\n".join("" if re.match(r"^\s*[%!]", line) else line for line in code.split("\n"))


# --- evaluating constant expressions --------------------------------------------------------

# A layer argument is a small number; bigger ones (x = x*x repeated, 1.5 * 10**400 spelled
# out) would take minutes or gigabytes to compute, or overflow a float: refused, not computed.
MAX_INT_BITS = 64


def _unparse(node: ast.AST, limit: int = 80) -> str:
    """Source text of a node for a message, shortened; never fails."""
    try:
        text = ast.unparse(node)
    except (ValueError, RecursionError, OverflowError):  # a 5000-digit int, deep nesting
        return f"<a {type(node).__name__} expression>"
    return text if len(text) <= limit else text[:limit] + "..."


def _bounded(v: Any, node: ast.AST) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > MAX_INT_BITS:
        raise Untranslatable(f"'{_unparse(node)}' is too large a number for a layer argument")
    if isinstance(v, float) and not math.isfinite(v):
        raise Untranslatable(f"'{_unparse(node)}' is not a finite number")
    return v


def _value(node: ast.AST, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return _bounded(node.value, node)
    if isinstance(node, ast.Tuple | ast.List):
        return [_value(e, consts) for e in node.elts]
    if isinstance(node, ast.Name):
        if node.id in consts:
            return consts[node.id]
        raise Untranslatable(f"'{node.id}' is not a module-level constant")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _value(node.operand, consts)
        if isinstance(v, int | float):
            return -v if isinstance(node.op, ast.USub) else v
        raise Untranslatable(f"'{_unparse(node)}' is not a constant expression")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult |
                                                  ast.FloorDiv | ast.Div):
        a, b = _value(node.left, consts), _value(node.right, consts)
        if isinstance(a, int | float) and isinstance(b, int | float):
            if isinstance(node.op, ast.FloorDiv | ast.Div) and b == 0:
                raise Untranslatable(f"division by zero in {_unparse(node)}")
            try:  # only the one operation asked for: a and b are bounded, so is the result
                v = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                     ast.FloorDiv: lambda: a // b, ast.Div: lambda: a / b}[type(node.op)]()
            except OverflowError as e:  # an int too large to become a float
                raise Untranslatable(f"'{_unparse(node)}' overflows ({e})") from e
            return _bounded(v, node)
    raise Untranslatable(f"'{_unparse(node)}' is not a constant expression")


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id
        if isinstance(f, ast.Attribute):
            return f.attr
    return None


def _record_constants(stmt: ast.stmt, consts: dict[str, Any]) -> None:
    """``x = 10`` and ``a, b = 28, 28`` at module level; anything else makes a name unknown."""
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            pairs: list[tuple[ast.AST, ast.AST | None]]
            if isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple) and len(
                    target.elts) == len(stmt.value.elts):
                pairs = list(zip(target.elts, stmt.value.elts, strict=True))
            else:
                pairs = [(target, stmt.value)]
            for t, v in pairs:
                for name in ast.walk(t):
                    if isinstance(name, ast.Name):
                        consts.pop(name.id, None)
                if isinstance(t, ast.Name) and v is not None:
                    try:
                        consts[t.id] = _value(v, consts)
                    except Untranslatable:
                        pass
    elif isinstance(stmt, ast.AugAssign | ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        consts.pop(stmt.target.id, None)
    else:
        # Names bound inside if/for/with/def are not constants one can rely on.
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                consts.pop(node.id, None)


# --- translating layers ---------------------------------------------------------------------

def _activation_value(node: ast.AST, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Attribute):  # tf.nn.relu, keras.activations.relu
        return node.attr
    v = _value(node, consts)
    return "linear" if v is None else v


def _initializer_value(node: ast.AST, consts: dict[str, Any]) -> Any:
    """'he_normal', 'HeNormal' or HeNormal() / keras.initializers.he_normal(seed=1) as the
    initializer's name; anything else as its value, for the spec to refuse."""
    if isinstance(node, ast.Call) and not node.args and all(
            k.arg == "seed" for k in node.keywords):
        name = _call_name(node)
    else:
        name = _value(node, consts)
    if isinstance(name, str):
        snake = keras_snake_case(name)
        return snake if snake in INITIALIZERS else name
    return name


def translate_layer(call: ast.Call, consts: dict[str, Any]
                    ) -> tuple[str, dict[str, Any], list[int] | None]:
    """A layer call as (kind, arguments, input_shape or None); raises Untranslatable."""
    name = _call_name(call)
    if name not in KERAS_CLASSES:
        what = _unparse(call.func)
        raise Untranslatable(f"{what}(...) has no spec equivalent (spec layers: "
                             f"{', '.join(KINDS)})")
    entry = KINDS[KERAS_CLASSES[name]]
    kind, order = entry.name, entry.positional
    if len(call.args) > len(order):
        raise Untranslatable(f"{kind} takes at most {len(order)} positional arguments here, "
                             f"got {len(call.args)}")
    given: list[tuple[str, ast.AST]] = list(zip(order, call.args, strict=False))
    for kw in call.keywords:
        if kw.arg is None:
            raise Untranslatable(f"{kind}(**{_unparse(kw.value)}) cannot be read without "
                                 f"running the code")
        given.append((entry.keras_renamed.get(kw.arg, kw.arg), kw.value))
    args: dict[str, Any] = {}
    input_shape = None
    for arg, node in given:
        if arg in ("input_shape", "input_dim"):
            shape = _value(node, consts)
            if arg == "input_shape" and not isinstance(shape, list):
                raise Untranslatable(f"input_shape={_unparse(node)}: expected a tuple "
                                     f"(height, width, channels)")
            input_shape = list(shape) if arg == "input_shape" else [shape]
            continue
        if arg in IGNORED:
            continue
        if arg not in DEFAULTS_ONLY and arg not in entry.args:
            raise Untranslatable(f"{kind} argument '{arg}' is not supported by specs "
                                 f"(supported: {', '.join(entry.args) or 'none'})")
        if arg == "activation":
            value = _activation_value(node, consts)
        elif arg.endswith("_initializer"):
            value = _initializer_value(node, consts)
        else:
            value = _value(node, consts)
        if arg not in entry.args:  # one of DEFAULTS_ONLY
            if value not in DEFAULTS_ONLY[arg]:
                raise Untranslatable(f"{kind}({arg}={value!r}): a spec supports only "
                                     f"{arg}={DEFAULTS_ONLY[arg][0]!r}")
            continue
        if kind == "Activation" and not isinstance(value, str):
            raise Untranslatable(f"Activation({value!r}): only activation names translate")
        args[arg] = tuple(value) if isinstance(value, list) else value
    if isinstance(args.get("padding"), str):
        args["padding"] = args["padding"].lower()
    return kind, args, input_shape


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
                                  f"{_unparse(items)}) is not a literal list of layers")
            return
        for item in items.elts:
            self._add(model, item, block)

    def _add(self, model: ImportedModel, node: ast.AST, block: Block) -> None:
        where = block.where(node.lineno)
        if _call_name(node) in ("Input", "InputLayer"):
            assert isinstance(node, ast.Call)
            shape_node = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg in ("shape", "input_shape")), None)
            try:
                shape = _value(shape_node, self.consts) if shape_node else None
            except Untranslatable as e:
                model.problems.append(f"{where}: {e}")
                return
            if shape is not None and not isinstance(shape, list):
                # Input(5): Keras reads it as shape (5,), which no image model takes.
                model.problems.append(f"{where}: {_unparse(node)}: the shape must be a tuple "
                                      f"(height, width, channels), got {shape!r}")
                return
            model.input_shape = shape
            return
        if not isinstance(node, ast.Call):
            model.problems.append(f"{where}: {_unparse(node)} is not a layer call")
            return
        try:
            kind, args, input_shape = translate_layer(node, self.consts)
        except Untranslatable as e:
            shape_kw = next((k for k in node.keywords if k.arg == "input_shape"), None)
            if shape_kw is not None and f"'{_unparse(shape_kw.value)}'" in str(e):
                # Keras' own examples set input_shape in an if/else on the data format.
                node = ast.Call(node.func, node.args,
                                [k for k in node.keywords if k is not shape_kw])
                model.notes.append(f"{where}: input_shape={_unparse(shape_kw.value)} "
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
                stmt.targets[0], ast.Name) and _call_name(stmt.value) == "Sequential":
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
                        f"{block.where(node.lineno)}: {_unparse(node, 60)} sits inside "
                        f"a {type(stmt).__name__.lower()} block; it is not followed without "
                        f"running the code")
        _record_constants(stmt, self.consts)


def _given_name(call: ast.Call, where: str) -> tuple[str | None, list[str]]:
    """``Sequential(..., name='mnist_cnn')``'s name as a spec name (letters, digits, ``_ . -``:
    it becomes a file name), with a note where it had to change or could not be read."""
    node = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "name"), None)
    if node is None:
        return None, []
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None, [f"{where}: name={_unparse(node)} is not a constant string; not used"]
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", node.value).lstrip("_.-")[:100].rstrip("_")
    if not name:
        return None, [f"{where}: name={node.value!r} has no letter or digit; not used"]
    if name != node.value:
        return name, [f"{where}: name={_unparse(node)} became {name} (a spec name is "
                      f"letters, digits and _ . -)"]
    return name, []


def import_keras(path: str | Path) -> ImportResult:
    """Find the Sequential models of a source file and validate each as a spec."""
    path = Path(path)
    follower = _Follower(path)
    skipped = []
    for block in read_blocks(path):
        code = _strip_magics(block.code)
        if not code.strip():
            continue
        try:
            tree = ast.parse(code)
        except (RecursionError, MemoryError):  # nesting the parser cannot hold
            follower.problems.append(f"{_block_where(block)}: {TOO_DEEP}")
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


def nesting(node: ast.AST, limit: int = MAX_NESTING) -> int:
    """How many levels deep a syntax tree goes (a lone name: 1), counted with an explicit
    stack, never by recursion; the count stops just past ``limit``."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _block_where(block: Block) -> str:
    return f"cell {block.cell}" if block.cell is not None else f"line {block.first_line}"


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
