"""The run store: an SQLite index plus one folder per run, the one place results land.

Layout under the store root (default ``./cnnbench-runs``, or ``--store``, or
``$CNNBENCH_STORE``)::

    index.sqlite              one row per run (WAL mode: readers never block the writer)
    runs/<id>/config.json     resolved spec, settings, dataset, seed, environment
    runs/<id>/history.csv     per-epoch metrics, rewritten atomically after every epoch
    runs/<id>/checkpoint.pt   the last completed epoch (and checkpoint.prev.pt, the one before)
    runs/<id>/weights.safetensors, predictions.npy, probabilities.npy   once finished
    runs/<id>/attempt/        a --force retrain of a finished run, until it replaces it
    locks/<id>                held (flock) by the process training or deleting the run; never
                              deleted, so a lock file is never swapped under a waiting process

A run's id is a short SHA-256 of what determines its result (``run_key``, with the key's
shape version ``KEY_VERSION``), so the same model, settings, data and seed always land in the
same folder, whoever trains them. The
folder is the truth; the index is what ``cnnbench runs`` reads. This module does not import
torch, so listing runs is instant.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.errors import EXIT_USAGE, CnnbenchError, UsageError
from cnnbench.settings import NOT_IN_KEY  # settings that change speed, never numbers
from cnnbench.store.records import HISTORY_KEYS, STORED, RunRecord, RunStatus, empty_history

ENV_VAR = "CNNBENCH_STORE"
DEFAULT_ROOT = "cnnbench-runs"
BUSY_SECONDS = 60  # how long a process waits for another one's write to the index
ATTEMPT = "attempt"  # a run folder's subfolder where a forced retrain trains
ID_LENGTH = 12  # hex digits of SHA-256: 48 bits, no collision in any realistic store
HEX = frozenset("0123456789abcdef")  # the digits of a run id
# The shape of the run key, hashed with it. Bump it whenever the same run would be written
# differently (a setting renamed, regrouped or given another meaning), so that no new key can
# equal an old one by accident. Runs stored under another version stay listed and readable,
# and are never reused. 1 (unwritten): Adadelta as lr/rho/epsilon beside the optimizer_args
# of the others, settings added later left out at their defaults. 2: every optimizer a name
# and its complete Keras-named arguments; every setting spelled out.
KEY_VERSION = 2
STATUSES = tuple(str(s) for s in STORED)  # what the index's status column holds
FINAL_FILES = ("weights.safetensors", "predictions.npy", "probabilities.npy")  # once finished
# In the folder of a run that `cnnbench unpack` brought from another store (store/pack.py):
# where it came from, and whether its weights (and probabilities) came along.
IMPORTED = "imported.json"
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


class StoreError(CnnbenchError, OSError):
    """The store cannot be used: unwritable, full, or not a store. Names the path."""


class DamagedRun(StoreError, ValueError):
    """A stored run whose file does not hold what the store writes: names the file and field.
    Also a ValueError, as the JSON or CSV error it replaces was."""


class UnknownRun(StoreError):
    """A run id (prefix) the user gave that names no run, or several: input to fix (exit 2)."""

    exit_code = EXIT_USAGE


def _busy(e: sqlite3.Error) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (existing or not, links resolved) lies inside the store at ``root``."""
    base, target = Path(root).resolve(), Path(path).resolve()
    return target == base or base in target.parents


def refuse_inside_store(root: str | Path | None, out: str | Path | None, option: str) -> None:
    """Refuse an output path (``option``, e.g. ``--out``) inside the run store at ``root``
    (the default store when None): only the store writes its files, and a command's output
    there could overwrite a run's history, weights or config. Every command that writes
    calls this before it writes anything."""
    if out is None:
        return
    base = Path(root) if root is not None else default_root()
    if is_inside(base, out):
        raise UsageError(f"{option} {out} is inside the run store {base}, whose files only "
                         f"cnnbench writes (it could overwrite a run's files); give a path "
                         f"outside it")


def now() -> str:
    """Local time with its UTC offset, to the second: sortable and readable."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def resolved_spec(spec: Any) -> dict[str, Any]:
    """A ModelSpec as plain data with every default filled in (the same model, whatever
    defaults its file spelled out); its description is left out. A variant is keyed under
    its base model's name (``run_name``), whatever the variant is called."""
    return json.loads(json.dumps({
        "name": getattr(spec, "run_name", None) or spec.name,
        "input_shape": list(spec.input_shape),
        "layers": [{layer.kind: layer.args} for layer in spec.layers],
    }))


def run_key(spec: Mapping[str, Any], training: Mapping[str, Any],
            dataset_fingerprint: str) -> dict[str, Any]:
    """What determines a run's result: the resolved spec, the settings, the data and the seed,
    under the key's shape version (:data:`KEY_VERSION`)."""
    settings = {k: v for k, v in training.items() if k not in NOT_IN_KEY and k != "seed"}
    return {"version": KEY_VERSION, "spec": dict(spec), "training": settings,
            "dataset": dataset_fingerprint, "seed": training["seed"]}


def run_id(key: Mapping[str, Any]) -> str:
    """Idempotent: the same key gives the same id on any machine, in any process."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:ID_LENGTH]


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding cnnbench's code, '+dirty' if modified; or None."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def history_csv(history: Mapping[str, Sequence[float]]) -> bytes:
    """history.csv's bytes: ``epoch,loss,acc,val_loss,val_acc,seconds``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("epoch",) + HISTORY_KEYS)
    for i in range(len(history["loss"])):
        # repr() round-trips a float exactly: the file holds the very numbers trained.
        w.writerow([i + 1] + [repr(float(history[k][i])) for k in HISTORY_KEYS])
    return buf.getvalue().encode()


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


class RunLock:
    """An exclusive lock on one run (``flock`` on ``runs/<id>/lock``).

    The kernel drops it when its process dies, even by SIGKILL, so a crashed run never stays
    locked; two processes never train the same run at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, blocking: bool) -> bool:
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunStore:
    """The index and the run folders under ``root``. Safe for several processes at once."""

    def __init__(self, root: str | Path | None = None, create: bool = True) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.db_path = self.root / "index.sqlite"
        self.runs_dir = self.root / "runs"
        self._check_index()
        if create:
            self._create()
        elif not self.db_path.exists():
            raise StoreError(f"no run store at {self.root} (no {self.db_path.name}); "
                             f"give --store PATH or set ${ENV_VAR}")

    # --- setup --------------------------------------------------------------------------

    def _check_index(self) -> None:
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

    def _create(self) -> None:
        """Create the store, and prove it is writable before any training time is spent."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"\0" * 4096)
            os.fsync(os.open(probe, os.O_RDONLY))
            probe.unlink()
        except OSError as e:
            raise StoreError(f"the run store {self.root} is not writable: "
                             f"{e.strerror or e} (give --store PATH or set ${ENV_VAR})") from e
        try:
            with self._connect() as db:
                db.execute(SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"the run store index {self.db_path} cannot be used: {e}") from e

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
    def _connect(self) -> Iterator[sqlite3.Connection]:
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
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A short-lived read-only connection: one read transaction (pure reads never write)."""
        db = self._open_read()
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e
        finally:
            db.close()

    def check_free_space(self, needed_bytes: int) -> None:
        """Fail before training when the disk cannot hold the runs' files."""
        free = shutil.disk_usage(self.root).free
        if free < needed_bytes:
            raise StoreError(f"the run store {self.root} has {free / 2**20:.0f} MiB free; these "
                             f"runs need about {needed_bytes / 2**20:.0f} MiB (checkpoints and "
                             f"weights). Free some space or give --store PATH elsewhere.")

    # --- runs ---------------------------------------------------------------------------

    def folder(self, rid: str) -> Path:
        return self.runs_dir / rid

    def attempt_folder(self, rid: str) -> Path:
        """Where a --force retrain of finished run ``rid`` trains, the finished files intact."""
        return self.folder(rid) / ATTEMPT

    def lock(self, rid: str) -> RunLock:
        return RunLock(self.root / "locks" / rid)

    def is_locked(self, rid: str) -> bool:
        """True while some process trains (or deletes) ``rid``."""
        if not (self.root / "locks" / rid).exists():
            return False
        lock = self.lock(rid)
        try:
            if lock.acquire(blocking=False):
                lock.release()
                return False
        except OSError:  # a store we may read but not write: nobody we can see holds it
            return False
        return True

    def get(self, rid: str) -> RunRow | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
        return RunRow(**dict(row)) if row else None

    def runs(self) -> list[RunRow]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY started, id").fetchall()
        return [RunRow(**dict(r)) for r in rows]

    def resolve(self, prefix: str) -> str:
        """The one run id starting with ``prefix`` (hex digits, at least one); UnknownRun if
        none or several. An empty or non-hex prefix is refused: it would match every run."""
        wanted = prefix.lower()
        if not wanted or any(c not in HEX for c in wanted):
            raise UnknownRun(f"a run id (or its start) must be hex digits (0-9, a-f). Got "
                             f"{prefix!r} instead; `cnnbench runs` lists the ids in {self.root}")
        with self._read() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id",
                (len(wanted), wanted))]
        if not ids:
            raise UnknownRun(f"no run matching '{prefix}' in {self.root}")
        if len(ids) > 1:
            raise UnknownRun(f"'{prefix}' matches {len(ids)} runs in {self.root} "
                             f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); "
                             f"give more of the id")
        return ids[0]

    def begin(self, rid: str, config: dict[str, Any], epochs_done: int = 0) -> None:
        """Record that this process starts (or resumes) training ``rid``. A seed or an epoch
        count the index cannot hold (64-bit integers) is refused before anything is written."""
        from cnnbench.store.schema import EPOCHS, INT64, check_value
        check_value(f"run {rid}", "its seed", INT64, config["seed"])
        check_value(f"run {rid}", "its planned epochs", EPOCHS, config["training"]["epochs"])
        folder = self.folder(rid)
        folder.mkdir(parents=True, exist_ok=True)
        self.write_json(folder / "config.json", config)
        t = now()
        with self._connect() as db:
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

    def epoch_done(self, rid: str, history: Mapping[str, Sequence[float]]) -> None:
        """After a checkpoint: the history file and the index follow."""
        self.write_history(rid, history)
        with self._connect() as db:
            db.execute("UPDATE runs SET epochs_done = ?, train_seconds = ?, updated = ?"
                       " WHERE id = ?", (len(history["loss"]), float(sum(history["seconds"])),
                                         now(), rid))

    def end(self, rid: str, status: RunStatus | str, history: Mapping[str, Sequence[float]],
            test_loss: float | None = None, test_accuracy: float | None = None,
            diverged_at: tuple[int, int] | None = None,
            files: Mapping[str, bytes] | None = None) -> None:
        """Record how a run ended. ``files`` (weights, predictions...) are written with
        history.csv as one set, whose commit record carries this index update too: a kill
        anywhere leaves the old set and row, or a set :meth:`recover` completes, row included."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}. Got {status!r}.")
        de, ds = diverged_at if diverged_at else (None, None)
        row = {"status": str(status), "epochs_done": len(history["loss"]),
               "train_seconds": float(sum(history["seconds"])), "test_loss": test_loss,
               "test_accuracy": test_accuracy, "diverged_epoch": de, "diverged_step": ds}
        if files is None:
            self.write_history(rid, history)
        else:
            from cnnbench.atomic import write_together
            try:
                write_together(self.folder(rid), {**files, "history.csv": history_csv(history)},
                               note={"run_id": rid, "index": row})
            except OSError as e:
                raise StoreError(f"cannot write {e.filename or self.folder(rid)}: "
                                 f"{e.strerror or e}") from e
            # trained here now (a --force retrain of an unpacked run): no longer an import
            (self.folder(rid) / IMPORTED).unlink(missing_ok=True)
        self._update_row(rid, row)

    def adopt(self, rid: str, row: Mapping[str, Any], files: Mapping[str, bytes],
              imported: Mapping[str, Any]) -> None:
        """Make ``rid`` the finished (or diverged) run whose ``files`` and index ``row`` came
        from another store (``cnnbench unpack``), under the caller's lock. Its checkpoints and
        final files it lacks go first; ``config.json`` and ``grad_norms.json`` are written,
        then the rest with ``imported.json`` as one set whose commit record carries the row.
        A kill before that commit leaves an unfinished run (trained again by ``run``)."""
        from cnnbench.atomic import write_together
        from cnnbench.store.schema import check_run
        check_run(row, files, f"run {rid}")  # the store's own guard: nothing written if wrong
        folder = self.folder(rid)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.attempt_folder(rid), ignore_errors=True)
        for name in ("checkpoint.pt", "checkpoint.prev.pt", *FINAL_FILES, "grad_norms.json"):
            if name not in files:
                (folder / name).unlink(missing_ok=True)
        t = now()
        with self._connect() as db:  # unfinished until its files are in
            db.execute(
                "INSERT INTO runs (id, model, dataset, seed, epochs_planned, status, started,"
                " updated, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE"
                " SET status = ?, epochs_done = 0, updated = ?, finished = NULL, pid = NULL",
                (rid, row["model"], row["dataset"], row["seed"], row["epochs_planned"],
                 str(RunStatus.INTERRUPTED), row["started"], t, row["host"],
                 str(RunStatus.INTERRUPTED), t))
        for name in ("config.json", "grad_norms.json"):
            if name in files:
                self.write_bytes(folder / name, files[name])
        index = {k: row[k] for k in ("status", "epochs_done", "train_seconds", "test_loss",
                                     "test_accuracy", "diverged_epoch", "diverged_step")}
        rest = {k: v for k, v in files.items() if k not in ("config.json", "grad_norms.json")}
        rest[IMPORTED] = (json.dumps(dict(imported), indent=1) + "\n").encode()
        try:
            write_together(folder, rest, note={"run_id": rid, "index": index})
        except OSError as e:
            raise StoreError(f"cannot write {e.filename or folder}: {e.strerror or e}") from e
        with self._connect() as db:  # as trained: its own start, end and host
            db.execute("UPDATE runs SET status = ?, epochs_done = ?, train_seconds = ?,"
                       " test_loss = ?, test_accuracy = ?, diverged_epoch = ?, diverged_step = ?,"
                       " started = ?, updated = ?, finished = ?, host = ? WHERE id = ?",
                       (*index.values(), row["started"], now(), row["finished"], row["host"],
                        rid))

    def _update_row(self, rid: str, row: Mapping[str, Any]) -> None:
        t = now()
        with self._connect() as db:
            db.execute("UPDATE runs SET status = ?, epochs_done = ?, train_seconds = ?,"
                       " test_loss = ?, test_accuracy = ?, diverged_epoch = ?, diverged_step = ?,"
                       " updated = ?, finished = ? WHERE id = ?",
                       (row["status"], row["epochs_done"], row["train_seconds"], row["test_loss"],
                        row["test_accuracy"], row["diverged_epoch"], row["diverged_step"], t,
                        t if RunStatus(row["status"]).done else None, rid))

    def recover(self, rid: str) -> list[Path]:
        """Tidy a run folder before it is trained again (under the run's lock): complete a
        set of files a kill interrupted after its commit record (and its index update), and
        remove the temporary files a kill left (a checkpoint's up to 60 MB). What it removed."""
        from cnnbench.atomic import roll_forward, sweep_temps
        removed = []
        for folder in (self.folder(rid), self.attempt_folder(rid)):
            if not folder.is_dir():
                continue
            for note in roll_forward(folder):
                if note.get("run_id") == rid and "index" in note and folder == self.folder(rid):
                    self._update_row(rid, note["index"])
            removed += sweep_temps(folder)
        return removed

    def remove(self, rid: str) -> None:
        """Delete a run's row and folder, holding its lock meanwhile: refused while a process
        trains it, and no process can start it until the folder is gone."""
        with self.lock(rid) as lock:
            if not lock.acquire(blocking=False):
                raise StoreError(f"run {rid} is being trained by another process; stop it first")
            with self._connect() as db:
                db.execute("DELETE FROM runs WHERE id = ?", (rid,))
            shutil.rmtree(self.folder(rid), ignore_errors=True)

    def effective_status(self, row: RunRow) -> RunStatus:
        """'running' only while its process lives; a killed run reads as 'interrupted'."""
        if row.status == RunStatus.RUNNING and not self.is_locked(row.id):
            return RunStatus.INTERRUPTED
        return row.status

    def done_ids(self) -> list[str]:
        """The runs that finished or diverged, oldest first."""
        return [r.id for r in self.runs() if r.status.done]

    def final_files_complete(self, row: RunRow) -> bool:
        """Whether a finished (or diverged) run's files are all there, and whole, to be reused:
        its config.json and history.csv; for a finished one also its predictions and weights
        (a diverged run has no final files). A damaged one is trained again."""
        if not row.status.done:
            return False
        try:
            self.checked(row)
        except StoreError:
            return False
        return (row.status == RunStatus.DIVERGED
                or (self.folder(row.id) / "weights.safetensors").is_file()
                or self.weights_left_out(row.id))

    def imported(self, rid: str) -> dict[str, Any] | None:
        """Where an unpacked run (``cnnbench unpack``) came from and whether its weights came
        along; None for a run trained in this store."""
        try:
            info = json.loads((self.folder(rid) / IMPORTED).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def weights_left_out(self, rid: str) -> bool:
        """Whether ``rid`` was unpacked from a pack made without its weights (and
        probabilities): a finished run all the same, which predict and export cannot use."""
        return (self.imported(rid) or {}).get("weights") is False

    def record(self, rid: str) -> RunRecord:
        """One finished or diverged run as analysis, report and results.json read it, from its
        row and its folder (config.json, history.csv, predictions.npy, grad_norms.json), each
        checked as ``unpack`` checks a pack's (:func:`schema.check_run`)."""
        import math

        row = self.get(rid)
        if row is None:
            raise UnknownRun(f"no run {rid} in {self.root}")
        run = self.checked(row)
        return RunRecord(
            model=row.model, spec=run.spec, seed=row.seed, history=run.history,
            test_loss=math.nan if row.test_loss is None else row.test_loss,
            test_accuracy=math.nan if row.test_accuracy is None else row.test_accuracy,
            test_predictions=run.predictions, status=row.status,
            train_seconds=row.train_seconds, grad_norms=run.grad_norms,
            environment=run.config.get("environment", {}),
            config=run.config.get("training", {}),
            diverged_at=((row.diverged_epoch, row.diverged_step)
                         if row.diverged_epoch is not None else None),
            run_id=rid)

    def checked(self, row: RunRow) -> Any:
        """A done run's files read and checked whole (schema.CheckedRun); a damaged one is a
        StoreError naming the file and what to do."""
        from cnnbench.store.schema import RunDataError, check_run
        folder, files = self.folder(row.id), {}
        for name in ("config.json", "history.csv", "predictions.npy", "grad_norms.json"):
            try:
                files[name] = (folder / name).read_bytes()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StoreError(f"cannot read {folder / name}: {e.strerror or e}") from e
        fields = {k: getattr(row, k) for k in RunRow.__dataclass_fields__}
        try:
            return check_run(fields | {"status": str(row.status)}, files, str(folder))
        except RunDataError as e:
            raise DamagedRun(f"{e}; `cnnbench rm {row.id}` removes the run (or `cnnbench run "
                             f"... --force` trains it again)") from None

    # --- files --------------------------------------------------------------------------

    def read_config(self, rid: str) -> dict[str, Any]:
        """A run's config.json, checked (schema.parse_config); DamagedRun if it is not one
        the store writes."""
        from cnnbench.store.schema import RunDataError, parse_config
        folder = self.folder(rid)
        try:
            return parse_config((folder / "config.json").read_bytes(), str(folder))
        except RunDataError as e:
            raise DamagedRun(str(e)) from None

    def read_history(self, rid: str) -> dict[str, list[float]]:
        """A run's history.csv, checked (schema.parse_history); no epoch before it has one."""
        from cnnbench.store.schema import RunDataError, parse_history
        folder = self.folder(rid)
        try:
            data = (folder / "history.csv").read_bytes()
        except FileNotFoundError:
            return empty_history()
        try:
            return parse_history(data, str(folder))
        except RunDataError as e:
            raise DamagedRun(str(e)) from None

    def write_history(self, rid: str, history: Mapping[str, Sequence[float]],
                      folder: Path | None = None) -> None:
        """Keras' CSVLogger, but atomic: ``epoch,loss,acc,val_loss,val_acc,seconds``."""
        self.write_bytes((folder or self.folder(rid)) / "history.csv", history_csv(history))

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())

    def write_bytes(self, path: Path, data: bytes) -> None:
        from cnnbench.atomic import atomic_write_bytes
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror or e}") from e

    # --- consistency --------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found in the store (empty when consistent): index, folders, files."""
        problems = []
        with self._read() as db:
            ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"{self.db_path}: {ok}")
        rows = {r.id: r for r in self.runs()}
        folders = {p.name for p in self.runs_dir.iterdir() if p.is_dir()}
        for rid in sorted(folders - set(rows)):
            problems.append(f"{self.folder(rid)}: a folder without an index row")
        for rid, row in rows.items():
            folder = self.folder(rid)
            for leftover in (*folder.glob("*.tmp"), *folder.glob(".cnnbench-commit-*")):
                problems.append(f"{leftover}: left by an interrupted write")
            if not (folder / "config.json").exists():
                problems.append(f"{folder}: no config.json")
                continue
            try:
                n = len(self.read_history(rid)["loss"])
                if row.status.done:
                    self.checked(row)
            except StoreError as e:
                problems.append(str(e))
                continue
            if n != row.epochs_done:
                problems.append(f"{rid}: history.csv has {n} epochs, the index {row.epochs_done}")
            if row.status == RunStatus.FINISHED:
                left_out = self.weights_left_out(rid)
                for name in FINAL_FILES:
                    if left_out and name != "predictions.npy":
                        continue
                    if not (folder / name).exists():
                        problems.append(f"{rid}: finished but {name} is missing")
                if row.epochs_done != row.epochs_planned:
                    problems.append(f"{rid}: finished after {row.epochs_done} of "
                                    f"{row.epochs_planned} epochs")
        return problems
