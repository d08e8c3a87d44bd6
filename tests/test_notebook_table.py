"""The notebook's single numbers beside the seeds' mean, interval and range."""

from __future__ import annotations

import math

from cnnbench.analysis.stats import ModelStats
from cnnbench.report.figures import notebook_reference
from cnnbench.report.notebook_table import notebook_rows


def _stats(model, accs):
    n = len(accs)
    mean = sum(accs) / n
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1))
    return ModelStats(model, list(range(n)), n, mean, sd, (mean - 0.001, mean + 0.001),
                      min(accs), max(accs), 0.03, 0.001, 10.0)


def test_each_notebook_number_is_placed_against_the_seeds_range():
    rows = notebook_rows([_stats("CNN_MNIST_1", [0.9925, 0.9931, 0.9940]),
                          _stats("CNN_MNIST_2", [0.9850, 0.9870, 0.9880]),
                          _stats("CNN_MNIST_3", [0.1135, 0.1135, 0.9700]),
                          _stats("mine", [0.5, 0.6])], notebook_reference())
    assert [r["Model"] for r in rows] == ["CNN_MNIST_1", "CNN_MNIST_2", "CNN_MNIST_3"]
    one, two, three = rows
    assert one["Notebook % (1 run)"] == "99.32" and one["Min – max %"] == "99.25 – 99.40"
    assert one["Notebook inside the seeds' range"] == "yes"
    assert two["Notebook inside the seeds' range"] == "no, above"  # 99.00 > 98.80
    assert three["Notebook inside the seeds' range"] == "yes"  # stuck at 11.35 on two seeds
    assert one["Mean ± sd %"] == "99.32 ± 0.08"
