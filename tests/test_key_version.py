"""KEY_VERSION in the run key: a store made before version 2 stays readable and is never
reused for a new key."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest
from test_cli_run_files import SPEC, make_dataset

from cnnbench.cli import main
from cnnbench.model.spec import get_spec
from cnnbench.store import run_store
from cnnbench.store.run_store import NOT_IN_KEY, RunStore, resolved_spec, run_id
from cnnbench.study import runner
from cnnbench.train.engine import TrainConfig

# What the code before KEY_VERSION 2 (main up to 6a5be10) left out of the key at its default.
V1_ONLY_IF_SET = {"validation_split": 0.0, "validation_size": 0, "early_stopping": None,
                  "monitor": "val_loss", "min_delta": 0.0, "restore_best_weights": True,
                  "baseline": None}


def v1_training(config: TrainConfig) -> dict:
    """TrainConfig.to_dict() as version 1 wrote it: Adadelta as lr/rho/epsilon."""
    d = asdict(config)
    args = dict(d.pop("optimizer_args"))
    if d["optimizer"] == "Adadelta":
        d |= {"lr": args["learning_rate"], "rho": args["rho"], "epsilon": args["epsilon"],
              "optimizer_args": ()}
    else:
        d |= {"lr": 1.0, "rho": 0.95, "epsilon": 1e-7, "optimizer_args": tuple(args.items())}
    return {k: v for k, v in d.items() if not (k in V1_ONLY_IF_SET and v == V1_ONLY_IF_SET[k])}


def v1_run_key(spec, training, fingerprint):
    """run_key as version 1 had it: no version in the hash."""
    settings = {k: v for k, v in training.items() if k not in NOT_IN_KEY and k != "seed"}
    return {"spec": dict(spec), "training": settings, "dataset": fingerprint,
            "seed": training["seed"]}


def test_the_version_1_emulation_gives_version_1s_pinned_ids():
    """So the store below is what the old code made (ids pinned in test_holdout.py)."""
    spec = resolved_spec(get_spec("CNN_MNIST_2"))
    assert run_id(v1_run_key(spec, v1_training(TrainConfig()), "fp")) == "51a4334f4ecd"
    assert run_id(run_store.run_key(spec, TrainConfig().to_dict(), "fp")) != "51a4334f4ecd"


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_store_made_before_key_version_2_is_read_never_reused_never_changed(
        tmp_path, capsys, monkeypatch):
    data = make_dataset(tmp_path / "bars")
    (tmp_path / "m.yaml").write_text(SPEC.format(name="m", units=3))
    store_root = tmp_path / "store"
    args = ["run", "--model-file", str(tmp_path / "m.yaml"), "--data-dir", str(data),
            "--epochs", "1", "--store", str(store_root), "--out", str(tmp_path / "out"),
            "--threads", "1"]
    with monkeypatch.context() as old_code:  # train as version 1 did: its key, its config.json
        old_code.setattr(runner, "run_key", v1_run_key)
        old_code.setattr(TrainConfig, "to_dict", v1_training)
        assert main(args) == 0
    store = RunStore(store_root, create=False)
    (old,) = store.runs()
    assert "version" not in store.read_config(old.id)["key"]
    old_files = _files(store.folder(old.id))
    capsys.readouterr()

    assert main(args) == 0  # the same command under version 2
    out = capsys.readouterr().out
    assert ": reused run" not in out  # trained again: an old run is never reused
    rows = {r.id: r for r in store.runs()}
    (new_id,) = set(rows) - {old.id}
    assert store.read_config(new_id)["key"]["version"] == run_store.KEY_VERSION
    assert rows[old.id] == old and _files(store.folder(old.id)) == old_files  # untouched
    assert store.verify() == []
    # Same settings, same machine and threads: the same numbers under either key.
    assert store.read_history(old.id)["val_acc"] == store.read_history(new_id)["val_acc"]

    assert main(["runs", "--store", str(store_root)]) == 0
    listing = capsys.readouterr().out
    assert old.id in listing and new_id in listing
    assert main(["show", old.id, "--store", str(store_root)]) == 0
    assert "lr=1.0" in capsys.readouterr().out  # its config.json as version 1 wrote it
    report = tmp_path / "report"
    assert main(["report", old.id, new_id, "--store", str(store_root), "--data-dir", str(data),
                 "--out", str(report)]) == 0
    (line,) = [ln for ln in (report / "report.md").read_text().splitlines()
               if ln.startswith("- **Training.**")]
    # Both runs' optimizer, described alike whichever shape their config.json has.
    assert "optimizer Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-07)." in line
    assert " / Adadelta" not in line


@pytest.mark.parametrize("config", [TrainConfig(), TrainConfig(optimizer="SGD"),
                                    TrainConfig(validation_split=0.1, early_stopping=2)])
def test_no_version_2_key_equals_a_version_1_key(config):
    spec = resolved_spec(get_spec("CNN_MNIST_1"))
    assert run_id(run_store.run_key(spec, config.to_dict(), "fp")) != run_id(
        v1_run_key(spec, v1_training(config), "fp"))
