"""The fp32 Dense library: measured once per machine, cached, forced by $CNNBENCH_GEMM, and
the one that actually runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnbench.model import gemm


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice as a user gets it: nothing forced, nothing remembered by this process."""
    monkeypatch.delenv(gemm.ENV, raising=False)
    monkeypatch.setattr(gemm, "_chosen", None)


def _fixed(figures: dict[str, float], calls: list[int]):
    def measure() -> dict[str, float]:
        calls.append(1)
        return figures
    return measure


@pytest.mark.usefixtures("measured")
def test_the_faster_library_is_chosen_and_remembered_for_the_machine(tmp_path: Path) -> None:
    calls: list[int] = []
    assert gemm.choice(tmp_path, _fixed({"onednn": 90.0, "mkl": 120.0}, calls)) == "mkl"
    doc = json.loads((tmp_path / gemm.CACHE_NAME).read_text())
    assert doc[gemm.machine_key()] == {"choice": "mkl",
                                       "gflops_1_thread": {"onednn": 90.0, "mkl": 120.0}}
    # Later processes read it: the same library every run, whatever a new timing would say.
    assert gemm.choice(tmp_path, _fixed({"onednn": 500.0, "mkl": 1.0}, calls)) == "mkl"
    assert len(calls) == 1
    other = tmp_path / "other"
    assert gemm.choice(other, _fixed({"onednn": 200.0, "mkl": 100.0}, calls)) == "onednn"


@pytest.mark.usefixtures("measured")
@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"%s": {"choice": "blas"}}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path: Path, text: str) -> None:
    path = tmp_path / gemm.CACHE_NAME
    path.write_text(text.replace("%s", gemm.machine_key()))
    calls: list[int] = []
    assert gemm.choice(tmp_path, _fixed({"onednn": 2.0, "mkl": 1.0}, calls)) == "onednn"
    assert calls == [1]
    assert json.loads(path.read_text())[gemm.machine_key()]["choice"] == "onednn"


@pytest.mark.usefixtures("measured")
def test_an_unwritable_cache_still_gives_a_choice(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    calls: list[int] = []
    assert gemm.choice(blocker / "cache", _fixed({"onednn": 1.0, "mkl": 3.0}, calls)) == "mkl"


def test_the_environment_variable_forces_either(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    def never() -> dict[str, float]:
        raise AssertionError("measured although forced")
    for forced in gemm.CHOICES:
        monkeypatch.setenv(gemm.ENV, forced.upper())
        assert gemm.choice(tmp_path, never) == forced
    assert not (tmp_path / gemm.CACHE_NAME).exists()


@pytest.mark.usefixtures("measured")
def test_the_measurement_times_both_libraries_on_one_thread() -> None:
    threads = torch.get_num_threads()
    figures = gemm.measure()
    assert set(figures) == set(gemm.CHOICES) and all(v > 0 for v in figures.values())
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("forced,op", [("onednn", "mkldnn::_linear_pointwise"),
                                       ("mkl", "aten::addmm")])
def test_the_chosen_library_is_the_one_that_runs(monkeypatch: pytest.MonkeyPatch, forced: str,
                                                 op: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from cnnbench.model.build import Linear
    from cnnbench.study.environment import environment

    monkeypatch.setenv(gemm.ENV, forced)
    torch.manual_seed(0)
    layer = Linear(64, 8)
    x = torch.randn(4, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        layer(x).sum().backward()
    names = {e.key for e in prof.key_averages()}
    other = "aten::addmm" if forced == "onednn" else "mkldnn::_linear_pointwise"
    assert op in names and other not in names, names
    assert environment(torch.device("cpu"))["dense_gemm"] == forced
