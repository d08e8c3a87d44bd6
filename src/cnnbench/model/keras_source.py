"""The code of a Keras model's source file, as blocks: a ``.py`` file whole, a notebook's code
cells, or the fenced code blocks of notebook text (e.g. a notebook exported to Markdown), each
with where it lies and the title-like line above it. Nothing is executed; how deep a statement
nests is counted without recursion, so deeply nested code is skipped the same way every time.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cnnbench.constraints import shown
from cnnbench.model.spec import SpecError

# A source file past this is not a model definition (a notebook of a few models with their
# outputs is a few MiB); it is refused before it is read whole.
MAX_SOURCE_BYTES = 32 << 20
# How deep a statement's syntax tree may nest (a Keras model nests about 8 levels): deeper
# code is skipped whole, the same whether Python's parser gave up first or this count did,
# so the outcome never depends on the recursion limit or the stack's depth at the call.
MAX_NESTING = 100
TOO_DEEP = (f"nested more than {MAX_NESTING} levels deep; the code block is skipped "
            f"(import-keras follows at most {MAX_NESTING})")


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


def strip_magics(code: str) -> str:
    """IPython lines (``%matplotlib``, ``!pip``) become blank lines, keeping line numbers."""
    return "\n".join("" if re.match(r"^\s*[%!]", line) else line for line in code.split("\n"))


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


def block_where(block: Block) -> str:
    """A block's place for a message: its cell, or its first line."""
    return f"cell {block.cell}" if block.cell is not None else f"line {block.first_line}"
