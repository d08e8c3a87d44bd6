"""The one base of cnnbench's errors; each subclass says which exit code the command returns.

``cli.main`` catches :class:`CnnbenchError` alone and exits with its ``exit_code``: 2 for input
the user can fix (a spec, a study file, an argument), 1 for what went wrong while running (data,
store, training, an executor). Each error also stays a subclass of the built-in it replaced
(``ValueError``, ``OSError``, ``RuntimeError``), so ``except ValueError`` in users' code holds.

>>> class SpecError(UsageError, ValueError): ...
>>> SpecError("bad.yaml: layer 3 ...").exit_code
2
"""

from __future__ import annotations

EXIT_FAILURE = 1  # the run, the data or the store failed
EXIT_USAGE = 2  # argparse's code: what was given cannot be used
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, as a shell reports it


class CnnbenchError(Exception):
    """Anything cnnbench reports in one line, without a traceback."""

    exit_code: int = EXIT_FAILURE


class UsageError(CnnbenchError):
    """Input the user can fix: the message names what was given, what was expected, where."""

    exit_code = EXIT_USAGE


class ConstraintError(UsageError, ValueError):
    """A value outside its constraint (:mod:`cnnbench.constraints`)."""
