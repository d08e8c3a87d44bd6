"""With one seed, a conclusion is about two trained networks, with the seeds a claim needs."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench.analysis.conclusions import conclusions
from cnnbench.analysis.stats import compare_models, epoch_spread, model_stats
from cnnbench.model.spec import get_spec
from cnnbench.store.records import RunRecord


def _run(model, acc_curve, preds):
    h = {"loss": [0.1] * len(acc_curve), "acc": acc_curve, "val_loss": [0.05] * len(acc_curve),
         "val_acc": acc_curve, "seconds": [1.0] * len(acc_curve)}
    return RunRecord(model, get_spec("CNN_MNIST_1"), 0, h, 0.05, acc_curve[-1], preds)


def _pair(curve_a, curve_b):
    y = np.arange(10000) % 10
    pa, pb = y.copy(), y.copy()
    pb[:60] = (pb[:60] + 1) % 10  # B wrong on 60 images A gets right
    pa[9000:9030] = (pa[9000:9030] + 1) % 10  # A wrong on 30 that B gets right
    recs = [_run("A", curve_a, pa), _run("B", curve_b, pb)]
    comps = compare_models(recs, y)
    spread = {r.model: epoch_spread(r.history) for r in recs}
    return comps, conclusions(model_stats(recs), comps, epochs_spread=spread)


def test_epoch_spread_is_the_sd_over_the_last_half_of_the_epochs():
    sd, k = epoch_spread({"val_acc": [0.5, 0.9, 0.97, 0.99, 0.98, 0.96]})
    assert k == 3 and sd == pytest.approx(np.std([99.0, 98.0, 96.0], ddof=1))  # 1.53 points
    assert np.isnan(epoch_spread({"val_acc": [0.97]})[0])


def test_a_significant_mcnemar_says_these_two_networks_and_how_many_seeds():
    curve = [0.97, 0.985, 0.975, 0.988, 0.982, 0.99]  # last 3 epochs: sd 0.42 points
    (c,), text = _pair(curve, curve)
    assert c.test == "mcnemar" and c.significant()  # 60 vs 30 discordant: p=0.002
    s = next(t for t in text if t.startswith("One seed each"))
    assert "the trained network A got 0.30 ± 0.09 points more images right than the trained " \
           "network B, more than test-set noise explains" in s
    assert "not about A and B as architectures" in s
    assert "beats" not in " ".join(text)
    # sd 0.416 points, difference 0.30: 2 (1.96 + 0.84)^2 (0.416 / 0.30)^2 = 30.2 -> 31.
    assert "moved by 0.42 points (sd over the last 3 epochs)" in s
    assert "would take about 31 seeds per model" in s
    assert c.significance_label() == "yes, for these two trained networks"


def test_too_short_a_run_asks_for_a_pilot_over_seeds():
    _, text = _pair([0.97], [0.96])
    s = next(t for t in text if t.startswith("One seed each"))
    assert "a pilot over 3 or more seeds per model" in s
