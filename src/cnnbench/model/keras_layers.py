"""Keras layer calls as spec entries: a call's class, positional and keyword arguments
translated into a spec layer's kind and arguments, and the constant expressions (module-level
names, small arithmetic) its arguments may use. What has no spec equivalent raises
:class:`Untranslatable` with what it is, never a guess.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from cnnbench.model.layers import INITIALIZERS, KINDS, keras_snake_case

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


class Untranslatable(Exception):
    """A construct with no spec equivalent; the message says what."""


# --- evaluating constant expressions --------------------------------------------------------

# A layer argument is a small number; bigger ones (x = x*x repeated, 1.5 * 10**400 spelled
# out) would take minutes or gigabytes to compute, or overflow a float: refused, not computed.
MAX_INT_BITS = 64


def unparse(node: ast.AST, limit: int = 80) -> str:
    """Source text of a node for a message, shortened; never fails."""
    try:
        text = ast.unparse(node)
    except (ValueError, RecursionError, OverflowError):  # a 5000-digit int, deep nesting
        return f"<a {type(node).__name__} expression>"
    return text if len(text) <= limit else text[:limit] + "..."


def _bounded(v: Any, node: ast.AST) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > MAX_INT_BITS:
        raise Untranslatable(f"'{unparse(node)}' is too large a number for a layer argument")
    if isinstance(v, float) and not math.isfinite(v):
        raise Untranslatable(f"'{unparse(node)}' is not a finite number")
    return v


def const_value(node: ast.AST, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return _bounded(node.value, node)
    if isinstance(node, ast.Tuple | ast.List):
        return [const_value(e, consts) for e in node.elts]
    if isinstance(node, ast.Name):
        if node.id in consts:
            return consts[node.id]
        raise Untranslatable(f"'{node.id}' is not a module-level constant")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = const_value(node.operand, consts)
        if isinstance(v, int | float):
            return -v if isinstance(node.op, ast.USub) else v
        raise Untranslatable(f"'{unparse(node)}' is not a constant expression")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult |
                                                  ast.FloorDiv | ast.Div):
        a, b = const_value(node.left, consts), const_value(node.right, consts)
        if isinstance(a, int | float) and isinstance(b, int | float):
            if isinstance(node.op, ast.FloorDiv | ast.Div) and b == 0:
                raise Untranslatable(f"division by zero in {unparse(node)}")
            try:  # only the one operation asked for: a and b are bounded, so is the result
                op = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                      ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv}[type(node.op)]
                v = op(a, b)
            except OverflowError as e:  # an int too large to become a float
                raise Untranslatable(f"'{unparse(node)}' overflows ({e})") from e
            return _bounded(v, node)
    raise Untranslatable(f"'{unparse(node)}' is not a constant expression")


def call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id
        if isinstance(f, ast.Attribute):
            return f.attr
    return None


def record_constants(stmt: ast.stmt, consts: dict[str, Any]) -> None:
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
                        consts[t.id] = const_value(v, consts)
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
    v = const_value(node, consts)
    return "linear" if v is None else v


def _initializer_value(node: ast.AST, consts: dict[str, Any]) -> Any:
    """'he_normal', 'HeNormal' or HeNormal() / keras.initializers.he_normal(seed=1) as the
    initializer's name; anything else as its value, for the spec to refuse."""
    if isinstance(node, ast.Call) and not node.args and all(
            k.arg == "seed" for k in node.keywords):
        name = call_name(node)
    else:
        name = const_value(node, consts)
    if isinstance(name, str):
        snake = keras_snake_case(name)
        return snake if snake in INITIALIZERS else name
    return name


def translate_layer(call: ast.Call, consts: dict[str, Any]
                    ) -> tuple[str, dict[str, Any], list[int] | None]:
    """A layer call as (kind, arguments, input_shape or None); raises Untranslatable."""
    name = call_name(call)
    if name not in KERAS_CLASSES:
        what = unparse(call.func)
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
            raise Untranslatable(f"{kind}(**{unparse(kw.value)}) cannot be read without "
                                 f"running the code")
        given.append((entry.keras_renamed.get(kw.arg, kw.arg), kw.value))
    args: dict[str, Any] = {}
    input_shape = None
    for arg, node in given:
        if arg in ("input_shape", "input_dim"):
            shape = const_value(node, consts)
            if arg == "input_shape" and not isinstance(shape, list):
                raise Untranslatable(f"input_shape={unparse(node)}: expected a tuple "
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
            value = const_value(node, consts)
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
