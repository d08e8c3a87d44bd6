"""The run store: an SQLite index plus one folder per run, the one place results land.

:class:`RunStore` ties together the store's parts, each a module of its own: what identifies a
run (:mod:`~cnnbench.store.identity`: ``run_key``, ``run_id``, ``KEY_VERSION``), where its
files lie (:mod:`~cnnbench.store.layout`, with the refusal of outputs inside a store), the
SQLite index (:mod:`~cnnbench.store.index`), the per-run locks (:mod:`~cnnbench.store.locks`)
and the store's errors (:mod:`~cnnbench.store.errors`). Their names stay importable from here.

The folder is the truth; the index is what ``cnnbench runs`` reads. This module does not
import torch, so listing runs is instant.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnbench.settings import NOT_IN_KEY  # settings that change speed, never numbers
from cnnbench.store.errors import DamagedRun, StoreError, UnknownRun
from cnnbench.store.identity import (
    HEX,
    ID_LENGTH,
    KEY_VERSION,
    canonical_json,
    git_commit,
    resolved_spec,
    run_id,
    run_key,
)
from cnnbench.store.index import BUSY_SECONDS, SCHEMA, STATUSES, RunIndex, RunRow, now
from cnnbench.store.layout import (
    ATTEMPT,
    DEFAULT_ROOT,
    ENV_VAR,
    FINAL_FILES,
    IMPORTED,
    StoreLayout,
    default_root,
    history_csv,
    is_inside,
    refuse_inside_store,
)
from cnnbench.store.locks import RunLock, is_held
from cnnbench.store.records import HISTORY_KEYS, STORED, RunRecord, RunStatus, empty_history

__all__ = [  # what other modules import from here, wherever it is defined
    "ATTEMPT", "BUSY_SECONDS", "DEFAULT_ROOT", "ENV_VAR", "FINAL_FILES", "HEX", "HISTORY_KEYS",
    "ID_LENGTH", "IMPORTED", "KEY_VERSION", "NOT_IN_KEY", "SCHEMA", "STATUSES", "STORED",
    "DamagedRun", "RunIndex", "RunLock", "RunRecord", "RunRow", "RunStatus", "RunStore",
    "StoreError", "StoreLayout", "UnknownRun", "canonical_json", "default_root",
    "empty_history", "git_commit", "history_csv", "is_inside", "now", "refuse_inside_store",
    "resolved_spec", "run_id", "run_key",
]


class RunStore:
    """The index and the run folders under ``root``. Safe for several processes at once."""

    def __init__(self, root: str | Path | None = None, create: bool = True) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.layout = StoreLayout(self.root)
        self.db_path = self.layout.db_path
        self.runs_dir = self.layout.runs_dir
        self.index = RunIndex(self.layout)
        self.index.check()
        if create:
            self._create()
        elif not self.db_path.exists():
            raise StoreError(f"no run store at {self.root} (no {self.db_path.name}); "
                             f"give --store PATH or set ${ENV_VAR}")

    # --- setup --------------------------------------------------------------------------

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
        self.index.create()

    def check_free_space(self, needed_bytes: int) -> None:
        """Fail before training when the disk cannot hold the runs' files."""
        free = shutil.disk_usage(self.root).free
        if free < needed_bytes:
            raise StoreError(f"the run store {self.root} has {free / 2**20:.0f} MiB free; these "
                             f"runs need about {needed_bytes / 2**20:.0f} MiB (checkpoints and "
                             f"weights). Free some space or give --store PATH elsewhere.")

    # --- runs ---------------------------------------------------------------------------

    def folder(self, rid: str) -> Path:
        return self.layout.folder(rid)

    def attempt_folder(self, rid: str) -> Path:
        """Where a --force retrain of finished run ``rid`` trains, the finished files intact."""
        return self.layout.attempt_folder(rid)

    def lock(self, rid: str) -> RunLock:
        return RunLock(self.layout.lock_path(rid))

    def is_locked(self, rid: str) -> bool:
        """True while some process trains (or deletes) ``rid``."""
        return is_held(self.layout.lock_path(rid))

    def get(self, rid: str) -> RunRow | None:
        return self.index.get(rid)

    def runs(self) -> list[RunRow]:
        return self.index.runs()

    def resolve(self, prefix: str) -> str:
        """The one run id starting with ``prefix`` (hex digits, at least one); UnknownRun if
        none or several. An empty or non-hex prefix is refused: it would match every run."""
        return self.index.resolve(prefix)

    def begin(self, rid: str, config: dict[str, Any], epochs_done: int = 0) -> None:
        """Record that this process starts (or resumes) training ``rid``. A seed or an epoch
        count the index cannot hold (64-bit integers) is refused before anything is written."""
        from cnnbench.store.schema import EPOCHS, INT64, check_value
        check_value(f"run {rid}", "its seed", INT64, config["seed"])
        check_value(f"run {rid}", "its planned epochs", EPOCHS, config["training"]["epochs"])
        folder = self.folder(rid)
        folder.mkdir(parents=True, exist_ok=True)
        self.write_json(folder / "config.json", config)
        self.index.start(rid, config, epochs_done)

    def epoch_done(self, rid: str, history: Mapping[str, Sequence[float]]) -> None:
        """After a checkpoint: the history file and the index follow."""
        self.write_history(rid, history)
        self.index.progress(rid, len(history["loss"]), float(sum(history["seconds"])))

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
        self.index.update(rid, row)

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
        self.index.adopt_start(rid, row)  # unfinished until its files are in
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
        self.index.adopt_end(rid, index, row)  # as trained: its own start, end and host

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
                    self.index.update(rid, note["index"])
            removed += sweep_temps(folder)
        return removed

    def remove(self, rid: str) -> None:
        """Delete a run's row and folder, holding its lock meanwhile: refused while a process
        trains it, and no process can start it until the folder is gone."""
        with self.lock(rid) as lock:
            if not lock.acquire(blocking=False):
                raise StoreError(f"run {rid} is being trained by another process; stop it first")
            self.index.delete(rid)
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
                         if row.diverged_epoch is not None and row.diverged_step is not None
                         else None),
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
        ok = self.index.integrity()
        if ok != "ok":
            problems.append(f"{self.db_path}: {ok}")
        rows = {r.id: r for r in self.runs()}
        folders = {p.name for p in self.runs_dir.iterdir() if p.is_dir()}
        for rid in sorted(folders - set(rows)):
            problems.append(f"{self.folder(rid)}: a folder without an index row")
        for row in rows.values():
            problems += self._run_problems(row)
        return problems

    def _run_problems(self, row: RunRow) -> list[str]:
        """What :meth:`verify` finds wrong with one indexed run's folder and files."""
        rid, folder, problems = row.id, self.folder(row.id), []
        for leftover in (*folder.glob("*.tmp"), *folder.glob(".cnnbench-commit-*")):
            problems.append(f"{leftover}: left by an interrupted write")
        if not (folder / "config.json").exists():
            return problems + [f"{folder}: no config.json"]
        try:
            n = len(self.read_history(rid)["loss"])
            config = self.checked(row).config if row.status.done else {}
            # early stopping ends a finished run before its planned epochs
            early = bool(config.get("training", {}).get("early_stopping"))
        except StoreError as e:
            return problems + [str(e)]
        if n != row.epochs_done:
            problems.append(f"{rid}: history.csv has {n} epochs, the index {row.epochs_done}")
        if row.status == RunStatus.FINISHED:
            left_out = self.weights_left_out(rid)
            for name in FINAL_FILES:
                if left_out and name != "predictions.npy":
                    continue
                if not (folder / name).exists():
                    problems.append(f"{rid}: finished but {name} is missing")
            if row.epochs_done != row.epochs_planned and not (
                    early and row.epochs_done < row.epochs_planned):
                problems.append(f"{rid}: finished after {row.epochs_done} of "
                                f"{row.epochs_planned} epochs")
        return problems
