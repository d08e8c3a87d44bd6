"""study.py: the environment recorded with every result."""

from __future__ import annotations

import torch

from cnnbench.study.environment import environment


def test_environment_records_versions_and_the_thread_count_in_use():
    env = environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment(torch.device("cpu"))["threads"] == 1
        torch.set_num_threads(2)
        assert environment(torch.device("cpu"))["threads"] == 2
    finally:
        torch.set_num_threads(before)
