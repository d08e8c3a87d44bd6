"""The README and docs/ stay user documentation that is true: every command example is found
and run by .ci/doc_examples.py at one documented scale, the study-file page names every key the
code accepts, links lead to files that exist, and the README carries no development log."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from cnnbench.model.spec import SpecError
from cnnbench.settings import STUDY_FIELDS
from cnnbench.study.studyfile import TOP_FIELDS, build_study
from cnnbench.study.variants import DESIGNS, KINDS, TRAINING_TARGETS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]


def _runner():
    spec = importlib.util.spec_from_file_location("doc_examples", ROOT / ".ci" / "doc_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_examples"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


doc_examples = _runner()


def _md(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_run_and_ablate_examples_train_one_epoch_of_256_images_and_only_their_first_seed():
    scaled = doc_examples.scaled
    assert scaled(["cnnbench", "run", "--seeds", "0", "1", "2", "3", "4", "--jobs", "2"]) == [
        "cnnbench", "run", "--seed", "0", "--jobs", "2", "--epochs", "1",
        "--train-limit", "256"]
    assert scaled(["cnnbench", "run", "notebook-claims", "--seeds", "3", "--epochs", "3",
                   "--train-limit", "20000"]) == [
        "cnnbench", "run", "notebook-claims", "--seeds", "1", "--epochs", "1",
        "--train-limit", "256"]
    # A study file after the seeds is no seed; '=' forms are replaced as well.
    assert scaled(["cnnbench", "run", "--seeds", "5", "study.yaml", "--epochs=12"]) == [
        "cnnbench", "run", "--seeds", "1", "study.yaml", "--epochs", "1", "--train-limit", "256"]
    assert scaled(["cnnbench", "run", "--seeds", "3", "4"])[:4] == [
        "cnnbench", "run", "--seed", "3"]  # '--seeds 3' alone would be three seeds
    assert scaled(["cnnbench", "run", "--seeds", "auto", "3", "10", "study.yaml"])[:5] == [
        "cnnbench", "run", "--seeds", "1", "study.yaml"]
    assert scaled(["cnnbench", "ablate", "CNN_MNIST_2", "--vary", "activation=sigmoid,relu"]) \
        [-4:] == ["--epochs", "1", "--train-limit", "256"]
    assert scaled(["cnnbench", "summary", "CNN_MNIST_2"]) == ["cnnbench", "summary",
                                                              "CNN_MNIST_2"]


def test_sh_blocks_give_examples_with_markers_files_and_reasons_for_what_is_skipped(tmp_path):
    page = _md(tmp_path, "\n".join([
        "Text with `cnnbench run` inline is no example.",
        "```sh",
        "make run     # the whole study",
        "cnnbench summary CNN_MNIST_2 --vary Conv2D#4.use_bias=true,false",
        "cnnbench export 3f2a --format onnx   # needs cnnbench[export]",
        "cnnbench run --device cuda           # needs a GPU",
        "cnnbench summary CNN_MNIST_9         # exits 2",
        "cnnbench run --models a.yaml \\",
        "    --seeds 3",
        "```",
        "```yaml",
        "# file: a.yaml",
        "name: a",
        "```",
        "```yaml",
        "models: [not, run]",
        "```",
        "```",
        "cnnbench-runs/",
        "cnnbench runs",
        "```",
    ]))
    ex = doc_examples.extract(page)
    assert [e.where for e in ex] == ["page.md:3", "page.md:4", "page.md:5", "page.md:6",
                                     "page.md:7", "page.md:8", "page.md:12", "page.md:20"]
    assert ex[0].skip.startswith("a make target")
    assert ex[1].argv[-1] == "Conv2D#4.use_bias=true,false"  # '#' inside a word is no comment
    assert ex[2].skip == "needs the export extra: pip install 'cnnbench[export]'"
    assert ex[3].skip == "needs a GPU (CI has none)"
    assert ex[4].exits == 2 and ex[4].skip is None
    assert ex[5].argv == ["cnnbench", "run", "--models", "a.yaml", "--seeds", "3"]
    assert ex[6].file == ("a.yaml", "name: a\n")
    assert ex[7].argv == ["cnnbench", "runs"]


def test_an_example_with_shell_syntax_is_refused_with_its_place(tmp_path):
    page = _md(tmp_path, "```sh\ncnnbench runs --json | head\n```\n")
    with pytest.raises(SystemExit, match="page.md:2: an example is one cnnbench command"):
        doc_examples.extract(page)


def test_run_ids_in_examples_name_the_newest_runs_with_weights_and_home_stays_inside(
        tmp_path, monkeypatch):
    import os
    monkeypatch.delenv("CNNBENCH_STORE")  # the examples' default store: ./cnnbench-runs
    for i, rid in enumerate(("aaaaaaaaaaa1", "bbbbbbbbbbb2", "ccccccccccc3")):
        w = tmp_path / "cnnbench-runs" / "runs" / rid / "weights.safetensors"
        w.parent.mkdir(parents=True)
        w.write_bytes(b"x")
        os.utime(w, (1000 + i, 1000 + i))
    (tmp_path / "cnnbench-runs" / "runs" / "ddddddddddd4").mkdir()  # results only: no weights
    argv = doc_examples.with_run_ids(["cnnbench", "pack", "3f2a", "9c1d", "3f2a", "--out",
                                      "two.tar.gz"], tmp_path)
    assert argv[2:5] == ["ccccccccccc3", "bbbbbbbbbbb2", "ccccccccccc3"]
    assert doc_examples.with_run_ids(["cnnbench", "run", "--seeds", "3"], tmp_path)[-1] == "3"
    assert doc_examples.with_home(["cnnbench", "runs", "--store", "~/runs"], tmp_path)[-1] == \
        str(tmp_path / "home" / "runs")


def test_the_readme_and_docs_examples_are_found_and_each_is_run_or_skipped_with_a_reason():
    found = []
    for page in PAGES[:-1]:
        found += doc_examples.extract(page)
    commands = [" ".join(e.argv) for e in found if e.argv]
    for needed in ("cnnbench models", "cnnbench summary CNN_MNIST_2",
                   "cnnbench run --seeds 0 1 2 3 4 --jobs 2", "cnnbench run study.yaml",
                   "cnnbench summary my_cnn.yaml", "cnnbench report --out first-report/"):
        assert needed in commands
    assert {e.file[0] for e in found if e.file} >= {"my_cnn.yaml", "study.yaml"}
    assert all(e.skip or e.argv or e.file for e in found)


@pytest.mark.slow
def test_the_runner_passes_working_examples_and_fails_a_broken_one(tmp_path, capsys):
    cnnbench = str(Path(sys.executable).parent / "cnnbench")
    good = _md(tmp_path, "```sh\ncnnbench models\ncnnbench summary CNN_MNIST_9   # exits 2\n"
                         "cnnbench export 3f2a --format onnx   # needs cnnbench[export]\n```\n")
    assert doc_examples.main(["--cnnbench", cnnbench, "--work", str(tmp_path / "w"),
                              str(good)]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED cnnbench export 3f2a --format onnx" in out
    assert "reason: needs the export extra: pip install 'cnnbench[export]'" in out
    assert "doc examples: 2 of 2 passed, 1 skipped" in out
    bad = _md(tmp_path, "```sh\ncnnbench summary CNN_MNIST_9\n```\n")
    assert doc_examples.main(["--cnnbench", cnnbench, "--work", str(tmp_path / "w"),
                              str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "exit 2, expected 0" in out and "CNN_MNIST_9" in out


def _keys(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def _refusal(data: dict) -> str:
    with pytest.raises(SpecError) as e:
        build_study(data, "s.yaml", ROOT)
    return str(e.value)


def test_the_study_files_page_names_every_key_the_code_accepts():
    page = _keys((ROOT / "docs" / "study-files.md").read_text())
    assert set(TOP_FIELDS) <= page, set(TOP_FIELDS) - page
    assert set(STUDY_FIELDS) <= page, set(STUDY_FIELDS) - page
    assert set(DESIGNS) | set(KINDS) | set(TRAINING_TARGETS) <= page
    # The ablation's and the claim's keys, as the code's own refusals list them.
    ablation = _refusal({"ablations": [{"base": "CNN_MNIST_2", "bogus": 1}]})
    claim = _refusal({"ablations": [{"name": "a", "base": "CNN_MNIST_2", "factors": {
        "activation": {"set": "activation", "levels": ["sigmoid", "relu"]}}}],
        "claims": [{"bogus": 1}]})
    ablation_keys = set(re.findall(r"[a-z_]+", ablation.split("an ablation has")[1]))
    claim_keys = set(re.findall(r"[a-z_]+", claim.split("a claim has")[1]))
    assert {"base", "design", "factors", "description"} <= ablation_keys
    assert {"says", "expect", "than"} <= claim_keys
    assert (ablation_keys | claim_keys) - {"and", "optionally"} <= page


def test_the_readme_is_user_documentation_without_a_development_log():
    text = README.read_text()
    assert len(text.splitlines()) <= 350
    assert text.split("```sh\n")[1].startswith("make run ")  # the two commands come first
    assert "make test " in text.split("```")[1]
    log = re.compile(r"20[0-9][0-9]-[01][0-9]-[0-3][0-9]|[Ii]ssue [0-9]+|this round|"
                     r"second session|\bsession\b")
    assert log.findall(text) == []
    assert "shared/seed" not in text
    headings = [h for h in re.findall(r"^## (.+)$", text, re.M)]
    assert headings == ["What it found", "Install", "Quickstart: a first study in a minute",
                        "Your own model", "A study file", "Reading the report",
                        "The run store in short", "Performance", "Exit codes", "Development"]


def test_every_link_between_the_pages_leads_to_a_file_that_exists():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}"
