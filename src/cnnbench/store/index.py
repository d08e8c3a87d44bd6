"""The run store's SQLite index: one row per run, what ``cnnbench runs`` reads.

The run folders are the truth; the index lists them with their status and test results.
Several processes write it at once (WAL mode, ``BEGIN IMMEDIATE``, retried while busy), and a
store this process may only read is read without writing anything.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cnnbench.store.errors import StoreError, UnknownRun
from cnnbench.store.identity import HEX
from cnnbench.store.layout import StoreLayout
from cnnbench.store.records import STORED, RunStatus

BUSY_SECONDS = 60  # how long a process waits for another one's write to the index
STATUSES = tuple(str(s) for s in STORED)  # what the index's status column holds
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id              TEXT PRIMARY KEY,
    model           TEXT NOT NULL,
    dataset         TEXT NOT NULL,
    seed            INTEGER NOT NULL,
    epochs_planned  INTEGER NOT NULL,
    epochs_done     INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,
    test_loss       REAL,
    test_accuracy   REAL,
    diverged_epoch  INTEGER,
    diverged_step   INTEGER,
    train_seconds   REAL NOT NULL DEFAULT 0,
    started         TEXT NOT NULL,
    updated         TEXT NOT NULL,
    finished        TEXT,
    host            TEXT,
    pid             INTEGER
);
"""


def now() -> str:
    """Local time with its UTC offset, to the second: sortable and readable."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _busy(e: sqlite3.Error) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


@dataclass
class RunRow:
    """One run as the index holds it."""

    id: str
    model: str
    dataset: str
    seed: int
    epochs_planned: int
    epochs_done: int
    status: RunStatus
    test_loss: float | None
    test_accuracy: float | None
    diverged_epoch: int | None
    diverged_step: int | None
    train_seconds: float
    started: str
    updated: str
    finished: str | None
    host: str | None
    pid: int | None

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)


class RunIndex:
    """The index of the store laid out as ``layout``: its connections, rows and queries."""

    def __init__(self, layout: StoreLayout) -> None:
        self.root = layout.root
        self.db_path = layout.db_path
        self.runs_dir = layout.runs_dir

    # --- setup --------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse an index SQLite would open elsewhere or not at all: a link to nothing (SQLite
        would create the database where it points, outside the store), or not a file."""
        path = self.db_path
        if path.is_symlink() and not path.exists():
            raise StoreError(f"the run store index {path} is a link to {os.readlink(path)}, "
                             f"which does not exist; refusing to create the index outside the "
                             f"store (remove the link, or give --store PATH)")
        if path.exists() and not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise StoreError(f"the run store index {path} is {kind}, not an SQLite file; move "
                             f"it away, or give --store PATH for another store")

    def create(self) -> None:
        """Create the runs table unless it is there."""
        try:
            with self.connect() as db:
                db.execute(SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"the run store index {self.db_path} cannot be used: {e}") from e

    # --- connections --------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """A connection holding the write lock (BEGIN IMMEDIATE), waiting for other processes.

        SQLite's busy timeout covers most waits, but not all: switching a fresh database to
        WAL while another process opens it can answer "database is locked" at once. Those
        few cases are retried here, for up to a minute. Any other SQLite error (a file that is
        not a database) is a StoreError naming the file, and the connection is closed.
        """
        deadline, pause = time.monotonic() + BUSY_SECONDS, 0.01
        while True:
            try:
                db = sqlite3.connect(self.db_path, timeout=BUSY_SECONDS, isolation_level=None)
            except sqlite3.Error as e:  # a file SQLite cannot even open
                raise self._error(e) from e
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode = WAL")  # persistent: once per store
                db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: no corruption on crash
                db.execute("BEGIN IMMEDIATE")
                db.row_factory = sqlite3.Row
                return db
            except sqlite3.Error as e:
                db.close()
                if not _busy(e) or time.monotonic() > deadline:
                    raise self._error(e) from e
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _open_read(self) -> sqlite3.Connection:
        """A read-only connection in a read transaction: never waits for a writer (WAL), and
        works on a store this process may read but not write. A read-only folder without the
        WAL's shared-memory file cannot host a WAL reader; nobody can write there either, so
        the database is then read as immutable."""
        uri = self.db_path.resolve().as_uri()
        for query in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=BUSY_SECONDS,
                                     isolation_level=None)
            except sqlite3.Error as e:  # a file SQLite cannot even open
                raise self._error(e) from e
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
                db.execute("BEGIN")
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file
                db.row_factory = sqlite3.Row
                return db
            except sqlite3.Error as e:
                db.close()
                unopenable = isinstance(e, sqlite3.OperationalError) and not _busy(e)
                if query == "immutable=1" or not unopenable or os.access(self.root, os.W_OK):
                    raise self._error(e) from e
        raise AssertionError("unreachable")

    def _error(self, e: sqlite3.Error) -> StoreError:
        if isinstance(e, sqlite3.OperationalError) and _busy(e):
            return StoreError(f"the run store index {self.db_path} stayed locked by another "
                              f"process for {BUSY_SECONDS} s ({e})")
        return StoreError(f"the run store index {self.db_path} cannot be read ({e}); "
                          f"if it is damaged, move it away and give --store PATH for a new "
                          f"store (the run folders in {self.runs_dir} keep their files)")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; each ``with`` block is one write transaction."""
        db = self._open()
        try:
            try:
                yield db
            except sqlite3.DatabaseError as e:
                db.execute("ROLLBACK")
                raise self._error(e) from e
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A short-lived read-only connection: one read transaction (pure reads never write)."""
        db = self._open_read()
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e
        finally:
            db.close()

    # --- queries ------------------------------------------------------------------------

    def integrity(self) -> str:
        """SQLite's integrity check: 'ok', or what it found."""
        with self.read() as db:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])

    def get(self, rid: str) -> RunRow | None:
        with self.read() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
        return RunRow(**dict(row)) if row else None

    def runs(self) -> list[RunRow]:
        with self.read() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY started, id").fetchall()
        return [RunRow(**dict(r)) for r in rows]

    def resolve(self, prefix: str) -> str:
        """The one run id starting with ``prefix`` (hex digits, at least one); UnknownRun if
        none or several. An empty or non-hex prefix is refused: it would match every run."""
        wanted = prefix.lower()
        if not wanted or any(c not in HEX for c in wanted):
            raise UnknownRun(f"a run id (or its start) must be hex digits (0-9, a-f). Got "
                             f"{prefix!r} instead; `cnnbench runs` lists the ids in {self.root}")
        with self.read() as db:
            ids: list[str] = [r[0] for r in db.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id",
                (len(wanted), wanted))]
        if not ids:
            raise UnknownRun(f"no run matching '{prefix}' in {self.root}")
        if len(ids) > 1:
            raise UnknownRun(f"'{prefix}' matches {len(ids)} runs in {self.root} "
                             f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); "
                             f"give more of the id")
        return ids[0]

    # --- rows ---------------------------------------------------------------------------

    def start(self, rid: str, config: Mapping[str, Any], epochs_done: int) -> None:
        """Row ``rid`` running in this process from ``epochs_done`` on, its results cleared."""
        t = now()
        with self.connect() as db:
            db.execute(
                "INSERT INTO runs (id, model, dataset, seed, epochs_planned, epochs_done, status,"
                " started, updated, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET status = ?, epochs_done = ?,"
                " updated = ?, finished = NULL, test_loss = NULL, test_accuracy = NULL,"
                " diverged_epoch = NULL, diverged_step = NULL, host = ?, pid = ?",
                (rid, config["model"]["name"], config["dataset"]["name"], config["seed"],
                 config["training"]["epochs"], epochs_done, str(RunStatus.RUNNING), t, t,
                 socket.gethostname(), os.getpid(), str(RunStatus.RUNNING), epochs_done, t,
                 socket.gethostname(), os.getpid()))

    def progress(self, rid: str, epochs_done: int, train_seconds: float) -> None:
        """Row ``rid`` after another epoch."""
        with self.connect() as db:
            db.execute("UPDATE runs SET epochs_done = ?, train_seconds = ?, updated = ?"
                       " WHERE id = ?", (epochs_done, train_seconds, now(), rid))

    def update(self, rid: str, row: Mapping[str, Any]) -> None:
        """Row ``rid`` as it ended (``row``: status, epochs, seconds and test results)."""
        t = now()
        with self.connect() as db:
            db.execute("UPDATE runs SET status = ?, epochs_done = ?, train_seconds = ?,"
                       " test_loss = ?, test_accuracy = ?, diverged_epoch = ?, diverged_step = ?,"
                       " updated = ?, finished = ? WHERE id = ?",
                       (row["status"], row["epochs_done"], row["train_seconds"], row["test_loss"],
                        row["test_accuracy"], row["diverged_epoch"], row["diverged_step"], t,
                        t if RunStatus(row["status"]).done else None, rid))

    def adopt_start(self, rid: str, row: Mapping[str, Any]) -> None:
        """Row ``rid`` from another store's ``row``, unfinished until its files are in."""
        t = now()
        with self.connect() as db:
            db.execute(
                "INSERT INTO runs (id, model, dataset, seed, epochs_planned, status, started,"
                " updated, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE"
                " SET status = ?, epochs_done = 0, updated = ?, finished = NULL, pid = NULL",
                (rid, row["model"], row["dataset"], row["seed"], row["epochs_planned"],
                 str(RunStatus.INTERRUPTED), row["started"], t, row["host"],
                 str(RunStatus.INTERRUPTED), t))

    def adopt_end(self, rid: str, index: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        """Row ``rid`` as trained elsewhere (``index``'s results, ``row``'s start, end, host)."""
        with self.connect() as db:
            db.execute("UPDATE runs SET status = ?, epochs_done = ?, train_seconds = ?,"
                       " test_loss = ?, test_accuracy = ?, diverged_epoch = ?, diverged_step = ?,"
                       " started = ?, updated = ?, finished = ?, host = ? WHERE id = ?",
                       (*index.values(), row["started"], now(), row["finished"], row["host"],
                        rid))

    def delete(self, rid: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (rid,))
