"""Constraints on arguments, one module for specs, study files, optimizers and training settings.

A :class:`Constraint` is a test plus the words that describe it; :func:`resolve` checks a
mapping of arguments against a schema ``{name: (constraint, default)}`` (``REQUIRED`` for no
default) and returns every argument, defaults filled in. Messages follow scikit-learn's
parameter validation: what is wrong, with what was given::

    study.yaml: the 'rho' parameter of Adadelta must be a number in [0, 1). Got 1.5 instead.

No torch here: specs and study files are validated before anything heavy is imported.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cnnbench.errors import ConstraintError

REQUIRED: Any = ...  # the schema default of an argument that must be given
# The largest int a float holds (about 1.8e308): a bigger one, given where a number is read,
# overflows the float() that every consumer applies, so it is refused as no number at all.
FLOAT_MAX_INT = int(sys.float_info.max)


@dataclass(frozen=True)
class Constraint:
    """``test(value) -> bool`` and ``text``, the words after "must be"."""

    test: Callable[[Any], bool]
    text: str

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """An int or float (never a bool) that a float can hold."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, float) or -FLOAT_MAX_INT <= v <= FLOAT_MAX_INT


def integer(low: int | None = None, high: int | None = None) -> Constraint:
    """An int (never a bool) in [low, high]; ``integer(1)`` is "a positive integer"."""
    if low in (0, 1) and high is None:
        text = "a positive integer" if low else "a non-negative integer"
    elif low in (0, 1):
        text = f"{'a positive' if low else 'a non-negative'} integer (at most {high:_})"
    else:
        lo, hi = "-inf" if low is None else low, "inf" if high is None else high
        text = f"an integer in [{lo}, {hi}]"
    return Constraint(lambda v: _is_int(v) and (low is None or v >= low)
                      and (high is None or v <= high), text)


def interval(low: float, high: float, closed: str = "left") -> Constraint:
    """A number (never a bool) in an interval; ``closed`` is left, right, both or neither."""
    left = "[" if closed in ("left", "both") else "("
    right = "]" if closed in ("right", "both") else ")"

    def test(v: Any) -> bool:
        if not _is_number(v):
            return False
        above: bool = v >= low if left == "[" else v > low
        below: bool = v <= high if right == "]" else v < high
        return above and below
    hi = "inf" if high == float("inf") else f"{high:g}"
    lo = "-inf" if low == float("-inf") else f"{low:g}"
    if (low, high, left) == (0, float("inf"), "("):
        return Constraint(test, "a positive number")
    if (low, high, left) == (0, float("inf"), "["):
        return Constraint(test, "a number >= 0")
    return Constraint(test, f"a number in {left}{lo}, {hi}{right}")


def one_of(*options: Any) -> Constraint:
    """One of the given values, compared with ``==`` (and never a bool for a number)."""
    return Constraint(lambda v: any(type(v) is type(o) and v == o for o in options),
                      "one of " + ", ".join(repr(o) for o in options))


def optional(c: Constraint) -> Constraint:
    """None, or what ``c`` allows."""
    return Constraint(lambda v: v is None or c(v), f"null or {c.text}")


def pair_of(c: Constraint, text: str) -> Constraint:
    """A value ``c`` allows, or a list of two such values (Keras' int-or-tuple arguments)."""
    return Constraint(lambda v: c(v) or (isinstance(v, list | tuple) and len(v) == 2
                                         and all(c(x) for x in v)), text)


BOOLEAN = Constraint(lambda v: isinstance(v, bool), "true or false")
POSITIVE_INT = integer(1)
NON_NEGATIVE_INT = integer(0)
POSITIVE = interval(0, float("inf"), "neither")
NON_NEGATIVE = interval(0, float("inf"), "left")
UNIT = interval(0, 1, "left")  # a rate or decay: 0 allowed, 1 not
FINITE = Constraint(interval(float("-inf"), float("inf"), "neither").test, "a finite number")
PAIR = pair_of(POSITIVE_INT, "a positive integer or a list of two")
OPTIONAL_PAIR = optional(PAIR)

Schema = Mapping[str, tuple[Constraint, Any]]


def shown(value: Any, limit: int = 120) -> str:
    """A value for a message, one short line: a 400-digit int as its size, not its digits
    (Python refuses to print one of over 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        beyond = " (beyond a float's 1.8e308)" if abs(value) > FLOAT_MAX_INT else ""
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits{beyond}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def message(where: str, name: str, owner: str, c: Constraint, value: Any) -> str:
    """The one wording of a value outside its constraint."""
    lead = f"{where}: the" if where else "The"
    return f"{lead} '{name}' parameter of {owner} must be {c.text}. Got {shown(value)} instead."


def check(value: Any, c: Constraint, name: str, owner: str, where: str = "",
          error: type[Exception] = ConstraintError) -> Any:
    """``value`` if ``c`` allows it, else ``error`` with :func:`message`."""
    if not c(value):
        raise error(message(where, name, owner, c, value))
    return value


def resolve(args: Mapping[str, Any], schema: Schema, owner: str, where: str = "",
            error: type[Exception] = ConstraintError) -> dict[str, Any]:
    """Every argument of ``schema`` in its order, given or default; unknown names and missing
    required ones are errors naming the known arguments.

    >>> resolve({"rate": 0.5}, {"rate": (UNIT, REQUIRED)}, "Dropout")
    {'rate': 0.5}
    """
    lead = f"{where}: " if where else ""
    for name in args:
        if name not in schema:
            close = difflib.get_close_matches(str(name), list(schema), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            listed = ", ".join(schema) if schema else "none"
            raise error(f"{lead}{owner} has no argument '{name}'.{hint} "
                        f"Its arguments: {listed}.")
    resolved: dict[str, Any] = {}
    for name, (c, default) in schema.items():
        if name in args:
            resolved[name] = check(args[name], c, name, owner, where, error)
        elif default is REQUIRED:
            raise error(f"{lead}{owner} needs the argument '{name}' ({c.text}).")
        else:
            resolved[name] = default
    return resolved
