"""study.py: the environment recorded with every result."""

from __future__ import annotations

import torch

from cnnbench.study import environment


def test_environment_records_versions():
    env = environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["threads"] >= 1
