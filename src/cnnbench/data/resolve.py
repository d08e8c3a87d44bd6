"""A dataset by what the user named: a known dataset, or the files of a folder."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from cnnbench.data.datasets import DATASETS, Dataset, load_dataset, load_folder
from cnnbench.errors import UsageError

CUSTOM = "custom"  # --dataset custom: the --data-dir files, unverified


def check_dataset_name(name: str | None, data_dir: Path | None) -> None:
    """Refuse an unknown name, or ``custom`` without files, before anything is loaded."""
    if name is not None and name not in (*DATASETS, CUSTOM):
        close = difflib.get_close_matches(name, [*DATASETS, CUSTOM], n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown dataset '{name}'.{hint} Known: {', '.join(DATASETS)}; for "
                         f"your own idx files use --data-dir DIR (with --dataset custom if "
                         f"needed).")
    if name == CUSTOM and data_dir is None:
        raise UsageError("--dataset custom needs --data-dir DIR with the idx files.")


def open_dataset(name: str | None, data_dir: Path | None, class_names: Path | None,
                 log: Callable[[str], None]) -> Dataset:
    """The named dataset (default mnist), from ``data_dir`` when given; without a name, a
    ``data_dir`` holds any dataset of 28x28 grayscale images."""
    check_dataset_name(name, data_dir)
    if name in (None, CUSTOM) and data_dir is not None:
        return load_folder(data_dir, class_names, log=log, custom=name == CUSTOM)
    return load_dataset(name or "mnist", data_dir=data_dir, log=log)


def open_runs_dataset(name: str, data_dir: Path | None, runs: str,
                      log: Callable[[str], None]) -> Dataset:
    """The dataset stored runs were trained on: the files of ``data_dir`` when given, else
    fetched by its name; ``runs`` (e.g. 'runs 1a2b3c, 4d5e6f') says whose data it is when
    the name is a folder's own data, which cnnbench cannot fetch."""
    if data_dir is None and name not in DATASETS:
        raise UsageError(f"{runs} were trained on '{name}', a --data-dir dataset that "
                         f"cnnbench cannot fetch (it fetches {', '.join(DATASETS)}): give "
                         f"--data-dir DIR with the folder of its idx files.")
    return open_dataset(None if data_dir else name, data_dir, None, log=log)
