"""Datasets without published checksums (kmnist) are read from the user's files, said loudly to
be unpinned, and their SHA-256 recorded with every run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cnnbench_main, tiny_data
from test_cli_run_files import write_idx
from test_run_options import spec_file

from cnnbench.data.datasets import array_sha256


def test_kmnist_says_loudly_that_it_is_unpinned(tmp_path):
    from cnnbench.data.datasets import load_dataset
    lines: list[str] = []
    ds = load_dataset("kmnist", data_dir=tiny_data(tmp_path / "k"), log=lines.append,
                      sources=("user",))
    assert ds.info.name == "kmnist"
    assert lines[-1].startswith(f"data: user files in {tmp_path / 'k'}: ok, BUT UNPINNED: "
                                f"kmnist has no published checksums in cnnbench")


@pytest.mark.slow
def test_kmnist_from_user_files_keeps_its_names_and_records_the_hashes(tmp_path):
    """KMNIST has no pinned array hashes: files given with --data-dir are used, said so,
    and their SHA-256 recorded (10 classes: a block in one of 10 places)."""
    folder = tmp_path / "kmnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 200), ("t10k", 50)):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 12 * (k // 5), 1 + 5 * (k % 5)
            x[i, r:r + 10, c:c + 5] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
        arrays[split] = x
    spec, out = spec_file(tmp_path, "k_net", units=10), tmp_path / "out"
    rc, stdout, err = cnnbench_main("run", "--dataset", "kmnist", "--data-dir", folder,
                                    "--model-file", spec, "--epochs", "1", "--batch-size", "16",
                                    "--store", tmp_path / "s", "--out", out)
    assert rc == 0, stdout + err
    assert f"data: user files in {folder}: ok, BUT UNPINNED: kmnist has no published " \
           "checksums" in " ".join(err.split())
    assert "their SHA-256 is recorded with every run" in " ".join(err.split())
    doc = json.loads((out / "results.json").read_text())["dataset"]
    assert doc["name"] == "kmnist" and doc["source"] == f"user files in {folder}"
    assert doc["classes"][0] == "お (o)" and doc["classes"][9] == "を (wo)"
    assert doc["sha256"]["x_train"] == array_sha256(arrays["train"])
    assert doc["sha256"]["x_test"] == array_sha256(arrays["t10k"])
    assert doc["class_counts"] == {"train": [20] * 10, "test": [5] * 10}
