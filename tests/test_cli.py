"""The ``cnnbench`` command end to end, as a user runs it: a subprocess, its output, its files."""

from __future__ import annotations

import json

import pytest
from conftest import cnnbench_cli

HISTORY_KEYS = {"loss", "acc", "val_loss", "val_acc", "seconds"}


def test_help_lists_the_commands():
    r = cnnbench_cli("--help")
    assert r.returncode == 0, r.stderr
    for command in ("run", "models", "summary"):
        assert command in r.stdout
    r = cnnbench_cli("run", "--help")
    assert r.returncode == 0
    for option in ("--models", "--epochs", "--train-limit", "--seed", "--out", "--data-dir"):
        assert option in r.stdout


def test_models_lists_the_four_with_their_parameters():
    r = cnnbench_cli("models")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("CNN_")}
    assert sorted(lines) == ["CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3", "CNN_MNIST_4"]
    assert "3,274,634" in lines["CNN_MNIST_1"]
    assert "Conv2D(32,5x5) + MaxPool + Conv2D(64,5x5)" in lines["CNN_MNIST_1"]
    assert "5,367,950" in lines["CNN_MNIST_2"]
    assert "5,367,566" in lines["CNN_MNIST_3"]
    assert "5,368,078" in lines["CNN_MNIST_4"]


def test_summary_shows_keras_totals():
    r = cnnbench_cli("summary", "CNN_MNIST_1")
    assert r.returncode == 0, r.stderr
    assert "Total params: 3,274,634" in r.stdout
    assert "Trainable params: 3,274,634" in r.stdout
    assert "Non-trainable params: 0" in r.stdout
    assert "(None, 7, 7, 64)" in r.stdout
    r = cnnbench_cli("summary", "CNN_MNIST_4")
    assert "Total params: 5,368,078" in r.stdout and "Non-trainable params: 256" in r.stdout


def test_summary_of_a_spec_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten\n"
                    "  - Dense: {units: 10, activation: softmax}\n")
    r = cnnbench_cli("summary", str(path))
    assert r.returncode == 0, r.stderr
    assert "Total params: 7,850" in r.stdout


@pytest.mark.slow
def test_run_writes_results_history_and_plot(tmp_path, mnist):
    # `mnist` first: it puts the verified arrays in this machine's cache for the subprocess.
    import matplotlib.image as mpimg

    out = tmp_path / "out"
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--epochs", "1", "--train-limit", "512",
                     "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "Train on 512 samples, validate on 10000 samples" in r.stdout
    assert "Epoch 1/1 - 4/4 - " in r.stdout  # 512 / 128 = 4 steps
    assert "Summary" in r.stdout and "CNN_MNIST_1" in r.stdout
    assert "checksums verified" in r.stderr

    doc = json.loads((out / "results.json").read_text())
    assert list(doc["models"]) == ["CNN_MNIST_1"]
    m = doc["models"]["CNN_MNIST_1"]
    assert set(m["history"]) == HISTORY_KEYS
    assert all(len(v) == 1 for v in m["history"].values())
    # 4 steps from chance (ln 10 = 2.303, 11.35 %): measured 2.054 and 24.46 % here.
    assert m["test_loss"] == pytest.approx(2.054, abs=0.05)
    assert m["test_accuracy_percent"] == pytest.approx(24.46, abs=3)
    assert m["test_accuracy_percent"] == pytest.approx(100 * m["history"]["val_acc"][-1])
    assert m["test_loss"] == m["history"]["val_loss"][-1]
    assert m["status"] == "finished"
    assert doc["training"]["train_limit"] == 512 and doc["training"]["epochs"] == 1
    assert doc["dataset"]["train_images"] == 512 and doc["dataset"]["test_images"] == 10000

    csv_lines = (out / "history.csv").read_text().splitlines()
    assert csv_lines[0] == "model,epoch,loss,acc,val_loss,val_acc,seconds"
    assert len(csv_lines) == 2 and csv_lines[1].startswith("CNN_MNIST_1,1,")

    png = out / "CNN_MNIST_1.png"
    assert f"Plot:    {png}" in r.stdout
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].var() > 0.01  # a drawn figure, not a blank canvas


def test_unknown_model_name_fails_listing_the_known_ones(tmp_path):
    r = cnnbench_cli("run", "--models", "CNN_MNIST_9", "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert "unknown model 'CNN_MNIST_9'" in r.stderr
    assert "Known models: CNN_MNIST_1, CNN_MNIST_2, CNN_MNIST_3, CNN_MNIST_4" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was done
    r = cnnbench_cli("summary", "CNN_MNST_2")
    assert r.returncode != 0 and "Did you mean CNN_MNIST_2" in r.stderr


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_epochs_must_be_a_positive_integer(value, tmp_path):
    r = cnnbench_cli("run", "--epochs", value, "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert "--epochs" in r.stderr and "expected a positive integer" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_missing_data_dir_fails_clearly(tmp_path):
    missing = tmp_path / "no-such-folder"
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--epochs", "1", "--data-dir", str(missing),
                     "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert f"{missing} is not a readable folder" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_data_dir_without_usable_files_fails_clearly(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03not really")
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--data-dir", str(folder),
                     "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert "holds neither the four idx files" in r.stderr
    # A file, not a folder, given as --data-dir.
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--data-dir",
                     str(folder / "train-images-idx3-ubyte"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "is not a readable folder" in r.stderr


def test_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--out", str(blocker / "sub"))
    assert r.returncode != 0
    assert f"cannot write results to {blocker / 'sub'}" in r.stderr
    assert "Train on" not in r.stdout


@pytest.mark.slow
def test_seeds_train_each_model_per_seed_and_report_regenerates_from_the_store(tmp_path):
    out, store = tmp_path / "o", tmp_path / "store"
    r = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--epochs", "1", "--train-limit", "256",
                     "--seeds", "2", "--out", str(out), "--store", str(store))
    assert r.returncode == 0, r.stderr
    for seed in (0, 1):
        doc = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        assert doc["training"]["seed"] == seed
    html = (out / "report.html").read_text()
    assert "Mean test accuracy over 2 seeds" in html and "CNN_MNIST_1" in html
    assert "Mean test accuracy over 2 seeds" in r.stdout  # the conclusions, in the terminal too
    # The same command again trains nothing: both runs come back from the store.
    again = cnnbench_cli("run", "--models", "CNN_MNIST_1", "--epochs", "1", "--train-limit", "256",
                         "--seeds", "2", "--out", str(out), "--store", str(store))
    assert again.returncode == 0 and again.stdout.count("Reused from") == 2
    assert "Epoch 1/1" not in again.stdout
    # report rebuilds report.html from the store alone, into another folder.
    rep = cnnbench_cli("report", "--store", str(store), "--out", str(tmp_path / "r"))
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "r" / "report.html").read_text().count("CNN_MNIST_1") >= 1
    assert "Report of 2 run(s)" in rep.stdout
