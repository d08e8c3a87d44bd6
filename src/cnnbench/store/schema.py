"""What a stored run's files and index row may hold: the one validator the store (when it
reads a run) and ``cnnbench unpack`` (before it writes one) share.

Each check takes the bytes of one file as the store writes them (``config.json``,
``history.csv``, ``predictions.npy``, ``probabilities.npy``, ``grad_norms.json``) or the index
row, and either returns the parsed content or raises :class:`RunDataError` naming the file,
the field (or line) and the value::

    runs/3f2a9c1d4b5e: history.csv line 3: 'val_acc' must be a number in [0, 1]. Got inf instead.

:func:`check_run` checks a whole run, files against each other and against its row, so that
nothing the store accepts can break ``show``, ``report`` or ``predict`` later. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnbench.constraints import Constraint, integer
from cnnbench.errors import UsageError
from cnnbench.store.records import HISTORY_KEYS, RunStatus, empty_history

# SQLite keeps an INTEGER in 64 signed bits; a larger Python int fails inside the insert.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_ROWS = 100_000  # epochs in a history.csv; the settings refuse more epochs than this


class RunDataError(UsageError, ValueError):
    """A run's file or index row that the store would never have written (exit 2)."""


def _typed(kind: type, text: str) -> Constraint:
    return Constraint(lambda v: isinstance(v, kind) and not isinstance(v, bool), text)


def _number(low: float, high: float, text: str, allow_nan: bool = False) -> Constraint:
    """A number (never a bool) in [low, high] (infinite only where ``high`` is), or NaN."""
    def test(v: Any) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return False
        return (allow_nan and math.isnan(v)) or low <= v <= high
    return Constraint(test, text)


def _optional(c: Constraint) -> Constraint:
    return Constraint(lambda v: v is None or c(v), f"null or {c.text}")


TEXT = _typed(str, "a string")
OBJECT = _typed(dict, "an object")
LIST = _typed(list, "a list")
INT64 = integer(INT64_MIN, INT64_MAX)
COUNT = integer(0, INT64_MAX)
EPOCHS = integer(1, INT64_MAX)
STEP = integer(1, INT64_MAX)
FRACTION = _number(0, 1, "a number in [0, 1]")
FINITE_LOSS = _number(0, 1.7976931348623157e308, "a finite number >= 0")
SECONDS = FINITE_LOSS
# A held-out loss (or a gradient norm) may overflow without ending the run: not negative.
NOT_NEGATIVE = _number(0, math.inf, "a number >= 0 (or nan, or inf)", allow_nan=True)
LAYER = Constraint(lambda v: isinstance(v, dict) and len(v) == 1
                   and isinstance(next(iter(v)), str) and isinstance(next(iter(v.values())), dict),
                   "an object of one layer kind and its arguments")

# The index row as the store keeps it (and a pack carries it).
ROW: dict[str, Constraint] = {
    "model": TEXT, "dataset": TEXT, "seed": INT64, "epochs_planned": EPOCHS,
    "epochs_done": COUNT, "test_loss": _optional(NOT_NEGATIVE),
    "test_accuracy": _optional(FRACTION),
    "diverged_epoch": _optional(STEP), "diverged_step": _optional(STEP),
    "train_seconds": SECONDS, "started": TEXT, "finished": _optional(TEXT),
    "host": _optional(TEXT),
    # isinstance first: a list or an object is unhashable, and `in` a set would raise.
    "status": Constraint(lambda v: isinstance(v, str) and v in {str(s) for s in RunStatus},
                         "a run status (" + ", ".join(str(s) for s in RunStatus) + ")")}

# config.json: what show, report and unpack read from it, by path.
CONFIG: dict[tuple[str, ...], Constraint] = {
    ("model",): OBJECT, ("model", "name"): TEXT, ("model", "source"): TEXT,
    ("model", "parameters"): COUNT, ("model", "spec"): OBJECT,
    ("model", "spec", "layers"): LIST, ("model", "spec_raw"): OBJECT,
    ("training",): OBJECT, ("training", "epochs"): EPOCHS, ("seed",): INT64,
    ("dataset",): OBJECT, ("dataset", "name"): TEXT, ("dataset", "fingerprint"): TEXT,
    ("dataset", "source"): TEXT, ("dataset", "train_images"): COUNT,
    ("dataset", "test_images"): COUNT, ("environment",): OBJECT, ("key",): OBJECT}

# history.csv's columns after 'epoch'.
HISTORY: dict[str, Constraint] = {"loss": FINITE_LOSS, "acc": FRACTION,
                                  "val_loss": NOT_NEGATIVE, "val_acc": FRACTION,
                                  "seconds": SECONDS}


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(where: str, what: str, c: Constraint, value: Any) -> RunDataError:
    return RunDataError(f"{where}: {what} must be {c.text}. Got {_got(value)} instead.")


def check_value(where: str, what: str, c: Constraint, value: Any) -> Any:
    """``value`` if ``c`` allows it, else a :class:`RunDataError` naming ``what``."""
    if not c(value):
        raise _fail(where, what, c, value)
    return value


def check_row(row: Mapping[str, Any], where: str) -> None:
    """An index row: every field of its type and range (SQLite's 64 bits included), and a
    run's epochs and divergence consistent with its status."""
    missing = [k for k in ROW if k not in row]
    if missing:
        raise RunDataError(f"{where}: its index row lacks {', '.join(missing)}")
    for name, c in ROW.items():
        check_value(where, f"its row's '{name}'", c, row[name])
    if row["epochs_done"] > row["epochs_planned"]:
        raise RunDataError(f"{where}: its row has {row['epochs_done']} epochs done of "
                           f"{row['epochs_planned']} planned")
    if row["status"] == RunStatus.FINISHED and row["test_accuracy"] is None:
        raise RunDataError(f"{where}: a finished run's row needs its test accuracy")


def parse_json(data: bytes, where: str, name: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise RunDataError(f"{where}: {name} is not JSON ({str(e)[:120]})") from None


def parse_config(data: bytes, where: str) -> dict[str, Any]:
    """config.json: a JSON object with every field :data:`CONFIG` names, of its type, and its
    resolved spec's layers one kind each."""
    doc: dict[str, Any] = check_value(where, "config.json", OBJECT,
                                      parse_json(data, where, "config.json"))
    for path, c in CONFIG.items():
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        field = "config.json's '" + ".".join(path) + "'"
        if path[-1] not in parent:
            raise RunDataError(f"{where}: {field} is missing ({c.text})")
        check_value(where, field, c, parent[path[-1]])
    for i, layer in enumerate(doc["model"]["spec"]["layers"]):
        check_value(where, f"config.json's 'model.spec.layers[{i}]'", LAYER, layer)
    if "sessions" in doc:
        check_value(where, "config.json's 'sessions'", LIST, doc["sessions"])
    return doc


def config_spec(config: Mapping[str, Any], where: str) -> Any:
    """The ModelSpec a checked config.json's ``spec_raw`` builds (what a report rebuilds)."""
    from cnnbench.model.spec import build_spec
    try:
        return build_spec(config["model"]["spec_raw"], source=config["model"]["source"])
    except (ValueError, RecursionError) as e:
        raise RunDataError(f"{where}: config.json's 'model.spec_raw' is not a model spec "
                           f"({str(e)[:160]})") from None




def parse_history(data: bytes, where: str) -> dict[str, list[float]]:
    """history.csv: the header ``epoch,loss,acc,val_loss,val_acc,seconds``, then one line per
    epoch numbered from 1, each value in its column's range (:data:`HISTORY`)."""
    try:
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunDataError(f"{where}: history.csv is not UTF-8 CSV text ({e})") from None
    header = ["epoch", *HISTORY_KEYS]
    if not lines or lines[0] != header:
        raise RunDataError(f"{where}: history.csv must start with the line "
                           f"'{','.join(header)}'. Got {_got(','.join(lines[0]) if lines else '')}"
                           f" instead.")
    if len(lines) - 1 > MAX_ROWS:
        raise RunDataError(f"{where}: history.csv has {len(lines) - 1} epochs; at most "
                           f"{MAX_ROWS}")
    history = empty_history()
    for n, line in enumerate(lines[1:], start=1):
        at = f"history.csv line {n + 1}"
        if len(line) != len(header) or line[0] != str(n):
            raise RunDataError(f"{where}: {at} must be epoch {n} and {len(HISTORY_KEYS)} "
                               f"numbers. Got {_got(','.join(line))} instead.")
        for key, text in zip(HISTORY_KEYS, line[1:], strict=True):
            value: float | str
            try:
                value = float(text)
            except ValueError:
                value = text
            history[key].append(check_value(where, f"{at}: '{key}'", HISTORY[key], value))
    return history


def _npy(data: bytes, where: str, name: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RunDataError(f"{where}: {name} is not a NumPy array file ({str(e)[:120]})") \
            from None
    if not isinstance(array, np.ndarray):
        raise RunDataError(f"{where}: {name} holds several arrays; the store writes one")
    return array


def parse_predictions(data: bytes, where: str, n_test: int, n_classes: int) -> np.ndarray:
    """predictions.npy: one class index (an integer in [0, n_classes)) per test image."""
    preds = _npy(data, where, "predictions.npy")
    if preds.shape != (n_test,) or preds.dtype.kind not in "iu" or (
            n_test and not 0 <= int(preds.min()) <= int(preds.max()) < n_classes):
        got = (f"shape {preds.shape}, {preds.dtype}" + (
            f", values {preds.min()}..{preds.max()}" if preds.size and
            preds.dtype.kind in "iuf" else ""))
        raise RunDataError(f"{where}: predictions.npy must hold {n_test} integers (one per test "
                           f"image) in 0..{n_classes - 1}. Got {got} instead.")
    return preds


def parse_probabilities(data: bytes, where: str, n_test: int, n_classes: int) -> np.ndarray:
    """probabilities.npy: (test images x classes) floats, finite."""
    proba = _npy(data, where, "probabilities.npy")
    if proba.shape != (n_test, n_classes) or proba.dtype.kind != "f" or \
            not np.isfinite(proba).all():
        raise RunDataError(f"{where}: probabilities.npy must hold {n_test} x {n_classes} finite "
                           f"floats. Got shape {proba.shape}, {proba.dtype} instead.")
    return proba


def parse_grad_norms(data: bytes, where: str) -> dict[str, float]:
    """grad_norms.json: an object of layer name -> gradient norm (a number >= 0)."""
    doc: dict[str, float] = check_value(where, "grad_norms.json", OBJECT,
                                        parse_json(data, where, "grad_norms.json"))
    for name, value in doc.items():
        check_value(where, f"grad_norms.json's '{name}'", NOT_NEGATIVE, value)
    return doc


def check_key(config: Mapping[str, Any], where: str) -> None:
    """config.json's run key agrees with what the config (and so the row) says of the run:
    seed, resolved spec, dataset fingerprint and epochs, where the key holds them."""
    key = config["key"]
    said = {"seed": ("seed", config["seed"]), "spec": ("model.spec", config["model"]["spec"]),
            "dataset": ("dataset.fingerprint", config["dataset"]["fingerprint"])}
    for field, (other, value) in said.items():
        if field in key and key[field] != value:
            raise RunDataError(f"{where}: config.json's 'key.{field}' is {_got(key[field])}, "
                               f"its '{other}' {_got(value)}: they must agree")
    training = key.get("training")
    epochs = config["training"]["epochs"]
    if isinstance(training, dict) and "epochs" in training and training["epochs"] != epochs:
        raise RunDataError(f"{where}: config.json's 'key.training.epochs' is "
                           f"{_got(training['epochs'])}, its 'training.epochs' {epochs}: they "
                           f"must agree")


def check_safetensors(data: bytes, where: str) -> None:
    """weights.safetensors: an 8-byte little-endian header length, a JSON object header of
    that length within the file, each tensor's data offsets within the data that follows.
    No tensor is loaded."""
    def bad(why: str) -> RunDataError:
        return RunDataError(f"{where}: weights.safetensors must be a safetensors file. Got "
                            f"{len(data)} bytes: {why}.")
    if len(data) < 8:
        raise bad("no 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > len(data) - 8:
        raise bad(f"header length {n} is outside the file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    size = len(data) - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        offsets = t.get("data_offsets") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and isinstance(t.get("dtype"), str)
                and isinstance(t.get("shape"), list)
                and all(_is_count(d) for d in t["shape"])
                and isinstance(offsets, list) and len(offsets) == 2
                and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1] <= size):
            raise bad(f"tensor {_got(name)} is not a dtype, shape and data offsets within "
                      f"the {size} data bytes")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass(frozen=True)
class CheckedRun:
    """A finished or diverged run's files, parsed and checked (:func:`check_run`)."""

    config: dict[str, Any]
    spec: Any  # the ModelSpec its config.json's spec_raw builds
    history: dict[str, list[float]]
    predictions: np.ndarray | None
    grad_norms: dict[str, float] | None


def check_run(row: Mapping[str, Any], files: Mapping[str, bytes], where: str) -> CheckedRun:
    """A finished or diverged run whole: its index row, each of its files (name -> bytes),
    and that they agree (model, seed, dataset, epochs, one prediction per test image of a
    class its model has)."""
    check_row(row, where)
    status = RunStatus(row["status"])
    if not status.done:
        raise RunDataError(f"{where}: its status is {status}; only a finished or diverged run "
                           f"is a result")
    for name in ("config.json", "history.csv") + (
            ("predictions.npy",) if status == RunStatus.FINISHED else ()):
        if name not in files:
            raise RunDataError(f"{where}: a {status} run needs its {name}; there is none")
    config = parse_config(files["config.json"], where)
    said = {"model": config["model"]["name"], "seed": config["seed"],
            "dataset": config["dataset"]["name"], "epochs_planned": config["training"]["epochs"]}
    for field, value in said.items():
        if row[field] != value:
            raise RunDataError(f"{where}: its row says {field} {row[field]!r}, its config.json "
                               f"{value!r}")
    check_key(config, where)
    history = parse_history(files["history.csv"], where)
    epochs = len(history["loss"])
    if epochs != row["epochs_done"] or (status == RunStatus.FINISHED and not epochs):
        raise RunDataError(f"{where}: history.csv has {epochs} epochs, its row "
                           f"{row['epochs_done']}" + ("" if epochs else " (a finished run "
                                                      "has at least one)"))
    spec = config_spec(config, where)
    n_test, n_classes = config["dataset"]["test_images"], spec.num_classes
    preds = (parse_predictions(files["predictions.npy"], where, n_test, n_classes)
             if "predictions.npy" in files else None)
    if "probabilities.npy" in files:
        parse_probabilities(files["probabilities.npy"], where, n_test, n_classes)
    grads = (parse_grad_norms(files["grad_norms.json"], where)
             if "grad_norms.json" in files else None)
    if "weights.safetensors" in files:
        check_safetensors(files["weights.safetensors"], where)
    return CheckedRun(config, spec, history, preds, grads)
