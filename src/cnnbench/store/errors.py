"""The run store's errors: each names the path, the file or the id it is about."""

from __future__ import annotations

from cnnbench.errors import EXIT_USAGE, CnnbenchError


class StoreError(CnnbenchError, OSError):
    """The store cannot be used: unwritable, full, or not a store. Names the path."""


class DamagedRun(StoreError, ValueError):
    """A stored run whose file does not hold what the store writes: names the file and field.
    Also a ValueError, as the JSON or CSV error it replaces was."""


class UnknownRun(StoreError):
    """A run id (prefix) the user gave that names no run, or several: input to fix (exit 2)."""

    exit_code = EXIT_USAGE
