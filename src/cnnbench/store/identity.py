"""What identifies a run, and the code that trained it.

A run's id is a short SHA-256 of what determines its result (:func:`run_key`, with the key's
shape version :data:`KEY_VERSION`), so the same model, settings, data and seed always land in
the same folder, whoever trains them. :func:`git_commit` names the code beside the key, in a
run's config.json; it is not part of the key.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnnbench.settings import KEY_IF_SET, NOT_IN_KEY  # NOT_IN_KEY: speed, never numbers

ID_LENGTH = 12  # hex digits of SHA-256: 48 bits, no collision in any realistic store
HEX = frozenset("0123456789abcdef")  # the digits of a run id
# The shape of the run key, hashed with it. Bump it whenever the same run would be written
# differently (a setting renamed, regrouped or given another meaning), so that no new key can
# equal an old one by accident. Runs stored under another version stay listed and readable,
# and are never reused. 1 (unwritten): Adadelta as lr/rho/epsilon beside the optimizer_args
# of the others, settings added later left out at their defaults. 2: every optimizer a name
# and its complete Keras-named arguments; every setting spelled out.
KEY_VERSION = 2


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def resolved_spec(spec: Any) -> dict[str, Any]:
    """A ModelSpec as plain data with every default filled in (the same model, whatever
    defaults its file spelled out); its description is left out. A variant is keyed under
    its base model's name (``run_name``), whatever the variant is called."""
    resolved: dict[str, Any] = json.loads(json.dumps({
        "name": getattr(spec, "run_name", None) or spec.name,
        "input_shape": list(spec.input_shape),
        "layers": [{layer.kind: layer.args} for layer in spec.layers],
    }))
    return resolved


def run_key(spec: Mapping[str, Any], training: Mapping[str, Any],
            dataset_fingerprint: str) -> dict[str, Any]:
    """What determines a run's result: the resolved spec, the settings, the data and the seed,
    under the key's shape version (:data:`KEY_VERSION`)."""
    settings = {k: v for k, v in training.items() if k not in NOT_IN_KEY and k != "seed"
                and not (k in KEY_IF_SET and v is None)}
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
