"""Finished runs carried to another store or machine: one ``.tar.gz``, checked on the way in.

Seeds trained on two machines, or results sent to a colleague, end up in one store and one
report::

    cnnbench pack --out seeds.tar.gz                  # every finished run, weights included
    cnnbench pack 3f2a 9c1d --out two.tar.gz --no-weights   # results only: a few KB a run
    cnnbench unpack seeds.tar.gz --store other-runs/  # adds what that store lacks

A pack holds ``pack.json`` (the manifest: each run's index row, and the SHA-256 and length of
each of its files) and ``runs/<id>/...``, the files of the run folder that a finished run
keeps: config.json, history.csv, predictions.npy, grad_norms.json, and (unless
``--no-weights``) weights.safetensors and probabilities.npy. Checkpoints never travel.

Unpacking checks everything before it writes anything of a run: the manifest, every file's
length and checksum, and that the config's run key hashes to the run's id (so a run lands
under the id the same training would have here). A run the store already holds finished is
left exactly as it is; an unfinished one of the same id (interrupted, failed) is replaced,
since the packed run is that very training, completed. A run packed without its weights is
reported, compared and reused like any other (``imported.json`` in its folder says so), while
``predict`` and ``export`` say that its weights were not carried.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.errors import UsageError
from cnnbench.store.records import RunStatus
from cnnbench.store.run_store import ID_LENGTH, RunStore, StoreError, now, run_id
from cnnbench.store.schema import ROW, RunDataError, check_run

FORMAT = "cnnbench-pack"
VERSION = 1
MANIFEST = "pack.json"
# What a finished run keeps, in the order a pack lists it; the last two only with weights.
RESULT_FILES = ("config.json", "history.csv", "predictions.npy", "grad_norms.json")
WEIGHT_FILES = ("weights.safetensors", "probabilities.npy")
ROW_FIELDS = tuple(ROW)  # the index row a pack carries for each run (schema.ROW)
MAX_FILE_BYTES = 1 << 30  # no run file comes near this; a larger member is not a pack's


class PackError(UsageError, ValueError):
    """A pack that cannot be read or trusted (exit 2): names the file, the run, the member."""


@dataclass(frozen=True)
class Unpacked:
    """What :func:`unpack` did with one run of the pack."""

    run_id: str
    model: str
    seed: int
    action: str  # "added", "replaced" (an unfinished run of the same id), "kept" (already here)
    weights: bool  # whether its weights came with it
    reason: str = ""


def pack(store: RunStore, ids: Iterable[str], out: Path, *, weights: bool = True) -> list[str]:
    """Write the finished (or diverged) runs ``ids`` of ``store`` to ``out`` (.tar.gz), written
    whole or not at all. Returns the ids packed, in the order given."""
    from cnnbench.atomic import atomic_write_bytes
    entries: list[dict[str, Any]] = []
    members: dict[str, bytes] = {}
    for rid in dict.fromkeys(ids):  # each run once, in the order given
        row = store.get(rid)
        if row is None:
            raise StoreError(f"no run {rid} in {store.root}")
        status = store.effective_status(row)
        if not status.done:
            raise StoreError(f"run {rid} ({row.model}, seed {row.seed}) is {status}, not "
                             f"finished: only finished or diverged runs are packed")
        store.checked(row)  # a damaged file is named, never packed
        if not store.final_files_complete(row):
            raise StoreError(f"run {rid} ({row.model}, seed {row.seed}) lacks some of its "
                             f"files in {store.folder(rid)}; `cnnbench run` trains it again")
        carried = (store.folder(rid) / "weights.safetensors").is_file()
        names = RESULT_FILES + (WEIGHT_FILES if weights and carried else ())
        files = {}
        for name in names:
            path = store.folder(rid) / name
            if path.is_file():
                data = path.read_bytes()
                members[f"runs/{rid}/{name}"] = data
                files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        entries.append({"id": rid, "row": {k: _plain(getattr(row, k)) for k in ROW_FIELDS},
                        "files": files, "weights": weights and carried})
    manifest = {"format": FORMAT, "version": VERSION, "created": now(), "runs": entries}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [(MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode()),
                           *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror or e}") from e
    return [e["id"] for e in entries]


def unpack(store: RunStore, path: Path) -> list[Unpacked]:
    """Add the runs of the pack at ``path`` to ``store``. Every run is checked whole before
    any of it is written; a pack with one bad run writes none."""
    return add_runs(store, path, read_pack(path))


def add_runs(store: RunStore, path: Path,
             runs: list[tuple[dict[str, Any], dict[str, bytes]]]) -> list[Unpacked]:
    """Add the runs :func:`read_pack` read (and checked) from the pack at ``path``."""
    return [_adopt(store, path, entry, files) for entry, files in runs]


def read_pack(path: Path) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """The manifest's runs and their files, every length and checksum checked."""
    try:
        tar = tarfile.open(path, mode="r:gz")
    except (OSError, tarfile.TarError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise PackError(f"{path}: not a cnnbench pack (a .tar.gz from `cnnbench pack`): "
                        f"{e}") from e
    members: dict[str, bytes] = {}
    with tar:
        try:
            for info in tar:
                if not info.isfile():
                    raise PackError(f"{path}: member {info.name!r} is not a plain file; a "
                                    f"pack holds only files")
                if info.name in members:
                    raise PackError(f"{path}: member {info.name!r} appears twice")
                if info.size > MAX_FILE_BYTES:
                    raise PackError(f"{path}: member {info.name!r} is {info.size} bytes; no "
                                    f"run file is over {MAX_FILE_BYTES}")
                member = tar.extractfile(info)
                assert member is not None  # a plain file, checked above
                members[info.name] = member.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise PackError(f"{path}: damaged or truncated ({e})") from e
    if MANIFEST not in members:
        raise PackError(f"{path}: no {MANIFEST} in it: not a cnnbench pack")
    try:
        manifest = json.loads(members.pop(MANIFEST))
    except ValueError as e:
        raise PackError(f"{path}: {MANIFEST} is not JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackError(f"{path}: {MANIFEST} is not a cnnbench pack's manifest")
    if manifest.get("version") != VERSION:
        raise PackError(f"{path}: pack version {manifest.get('version')!r}; this cnnbench "
                        f"reads version {VERSION}")
    entries = manifest.get("runs")
    if not isinstance(entries, list):
        raise PackError(f"{path}: {MANIFEST}'s 'runs' must be a list of runs. Got "
                        f"{type(entries).__name__} instead.")
    runs: list[tuple[dict[str, Any], dict[str, bytes]]] = []
    expected: set[str] = set()
    for i, entry in enumerate(entries):
        rid = entry.get("id") if isinstance(entry, dict) else None
        where = f"{path}, run {rid if isinstance(rid, str) else '#' + str(i)}"
        if (not isinstance(rid, str) or len(rid) != ID_LENGTH
                or any(c not in "0123456789abcdef" for c in rid)):
            raise PackError(f"{where}: its id must be {ID_LENGTH} lowercase hex digits. Got "
                            f"{rid!r} instead.")
        if any(rid == e["id"] for e, _ in runs):
            raise PackError(f"{where}: the run appears twice in {MANIFEST}")
        files = _files(where, rid, entry, members)
        expected.update(f"runs/{rid}/{name}" for name in files)
        _check_run(where, rid, entry, files)
        runs.append((entry, files))
    extra = sorted(set(members) - expected)
    if extra:
        raise PackError(f"{path}: member {extra[0]!r} is not listed in {MANIFEST}")
    return runs


def _files(where: str, rid: str, entry: Mapping[str, Any],
           members: Mapping[str, bytes]) -> dict[str, bytes]:
    """The files a manifest entry lists, each there with its length and checksum."""
    listed = entry.get("files")
    if not isinstance(listed, dict):
        raise PackError(f"{where}: its 'files' must be an object of file name -> checksum and "
                        f"length. Got {type(listed).__name__} instead.")
    files = {}
    for name, meta in listed.items():
        if name not in RESULT_FILES + WEIGHT_FILES:
            raise PackError(f"{where}: file {name!r} is not one a run keeps "
                            f"({', '.join(RESULT_FILES + WEIGHT_FILES)})")
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and isinstance(meta.get("bytes"), int) and not isinstance(meta["bytes"], bool)):
            raise PackError(f"{where}: the entry of {name} must be an object with 'sha256' "
                            f"(text) and 'bytes' (an integer). Got {str(meta)[:80]!r} instead.")
        member = f"runs/{rid}/{name}"
        data = members.get(member)
        if data is None:
            raise PackError(f"{where}: {member} is listed but missing")
        if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise PackError(f"{where}: {member} does not match its checksum (damaged)")
        files[name] = data
    return files


def _check_run(where: str, rid: str, entry: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
    """A run as the store would hold it (schema.check_run: its row and every file, as the
    store checks the runs it reads), under the id its run key hashes to."""
    row = entry.get("row")
    if not isinstance(row, dict):
        raise PackError(f"{where}: its index row must be an object. Got "
                        f"{type(row).__name__} instead.")
    try:
        checked = check_run(row, files, where)
    except RunDataError as e:
        raise PackError(str(e)) from None
    key = checked.config["key"]
    if run_id(key) != rid:
        raise PackError(f"{where}: its config.json's run key hashes to {run_id(key)}, not "
                        f"{rid}: the config was changed after training")


def _adopt(store: RunStore, source: Path, entry: Mapping[str, Any],
           files: Mapping[str, bytes]) -> Unpacked:
    rid, row = entry["id"], dict(entry["row"])
    carried = "weights.safetensors" in files
    said = dict(run_id=rid, model=row["model"], seed=row["seed"], weights=carried)
    with store.lock(rid) as lock:
        if not lock.acquire(blocking=False):
            return Unpacked(action="kept", reason="being trained by another process", **said)
        old = store.get(rid)
        if old is not None and old.status.done and store.final_files_complete(old):
            return Unpacked(action="kept", reason=f"already {old.status} here", **said)
        store.adopt(rid, row, files, imported={"from": str(source), "unpacked": now(),
                                               "weights": carried})
        return Unpacked(action="replaced" if old is not None else "added", **said)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, RunStatus) else value
