"""Detectors on synthetic histories, on the notebook's published runs, and on a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnbench.analysis.diagnosis import (
    describe_gradient,
    detect_diverged,
    detect_overfitting,
    detect_stuck,
    detect_unstable,
    diagnose,
    diagnose_run,
    gradient_norms,
    summarise,
)
from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.model.build import build_model
from cnnbench.model.spec import get_spec
from cnnbench.report.figures import notebook_reference
from cnnbench.store.records import RunRecord
from cnnbench.train.engine import TrainConfig, fit

Y_TEST = np.repeat(np.arange(10), 100).astype(np.uint8)  # 1,000 labels, 10 % each
Y_TEST[:35] = 1  # make "1" the majority class: 13.5 %


def _run(val_acc, val_loss=None, loss=None, acc=None, model="CNN_MNIST_1", seed=0, preds=None,
         test_loss=None, status="finished") -> RunRecord:
    n = len(val_acc)
    val_loss = val_loss or [0.1] * n
    loss = loss or [0.1] * n
    h = {"loss": loss, "acc": acc or [0.9] * n, "val_loss": val_loss, "val_acc": val_acc,
         "seconds": [1.0] * n}
    return RunRecord(model=model, spec=get_spec(model), seed=seed, history=h,
                     test_loss=val_loss[-1] if test_loss is None else test_loss,
                     test_accuracy=val_acc[-1], test_predictions=preds, status=status)


# --- the notebook's own runs: the thresholds must call them what the notebook saw ------------

def _notebook_run(name: str) -> RunRecord:
    m = notebook_reference()[name]
    h = m["history"]
    return _run(h["val_acc"], h["val_loss"], h["loss"], h["acc"], model=name,
                test_loss=m["test_loss"])


def test_notebook_model_1_overfits_after_epoch_5_and_is_stable():
    run = _notebook_run("CNN_MNIST_1")
    kinds = [f.kind for f in diagnose_run(run)]
    assert kinds == ["overfitting"]
    assert "lowest at epoch 5 (0.0185)" in detect_overfitting(run).evidence
    assert "rose to 0.0227 by epoch 12" in detect_overfitting(run).evidence


@pytest.mark.parametrize("name, largest_drop", [
    ("CNN_MNIST_2", "from 98.88 % (epoch 9) to 97.44 % (epoch 10)"),
    ("CNN_MNIST_4", "from 97.29 % (epoch 2) to 95.09 % (epoch 3)"),
])
def test_notebook_models_2_and_4_have_unstable_validation(name, largest_drop):
    run = _notebook_run(name)
    assert [f.kind for f in diagnose_run(run)] == ["unstable"]
    assert largest_drop in detect_unstable(run).evidence


def test_notebook_model_3_is_stuck_from_loss_and_accuracy_alone():
    # No predictions published: accuracy 11.35 % (= answering "1") and loss 2.3011 ~ ln 10.
    run = _notebook_run("CNN_MNIST_3")
    y = np.repeat(np.arange(10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    f = detect_stuck(run, y)
    assert f is not None and f.kind == "stuck"
    assert 'always answering "1" would score 11.35 %' in f.evidence
    assert [x.kind for x in diagnose_run(run, y)] == ["stuck"]


# --- synthetic histories ------------------------------------------------------------------------

def test_diverged_run_is_reported_with_its_step_and_nothing_else():
    run = _run([0.9, 0.95], val_loss=[0.3, math.nan], test_loss=math.nan, status="diverged")
    run.diverged_at = (2, 17)
    assert [f.kind for f in diagnose_run(run)] == ["diverged"]
    assert "epoch 2, step 17" in detect_diverged(run).evidence
    assert detect_diverged(_run([0.9, 0.95])) is None
    inf_loss = _run([0.9, 0.95], loss=[0.3, math.inf])
    assert detect_diverged(inf_loss) is not None


def test_stuck_needs_collapsed_answers_or_uniform_softmax():
    collapsed = np.full(1000, 1, np.uint8)
    stuck = _run([0.135, 0.135], val_loss=[2.31, 2.30], preds=collapsed)
    f = detect_stuck(stuck, Y_TEST)
    assert f is not None
    assert '"1" for 1,000 of 1,000 test images' in f.evidence
    # Low accuracy but answers spread over all classes and a confident (non-uniform) loss:
    # a bad model, not a stuck one.
    spread = (Y_TEST + 1) % 10
    spread[:120] = Y_TEST[:120]
    assert detect_stuck(_run([0.12, 0.12], val_loss=[5.0, 5.0], preds=spread), Y_TEST) is None
    # A good model is never stuck.
    assert detect_stuck(_run([0.9, 0.98], preds=Y_TEST.copy()), Y_TEST) is None


def test_overfitting_needs_train_loss_falling_and_val_loss_staying_up():
    val = [0.30, 0.20, 0.15, 0.18, 0.20, 0.22]
    assert detect_overfitting(_run([0.9] * 6, val, loss=[0.5, 0.3, 0.2, 0.1, 0.05, 0.03]))
    # val loss rose but train loss rose too: not overfitting (training got worse).
    assert detect_overfitting(_run([0.9] * 6, val, loss=[0.5, 0.3, 0.2, 0.25, 0.3, 0.35])) is None
    # one late blip after a minimum at the second-to-last epoch: too little evidence.
    assert detect_overfitting(_run([0.9] * 6, [0.3, 0.2, 0.18, 0.16, 0.15, 0.2],
                                   loss=[0.5, 0.3, 0.2, 0.1, 0.05, 0.03])) is None


def test_unstable_counts_sharp_drops_not_steady_learning():
    assert detect_unstable(_run([0.80, 0.90, 0.95, 0.97, 0.98])) is None
    assert detect_unstable(_run([0.98, 0.985, 0.984, 0.986])) is None  # 0.1-point jitter
    f = detect_unstable(_run([0.90, 0.97, 0.93, 0.98, 0.95, 0.985]))
    assert f is not None and f.evidence.startswith("2 sharp drop(s)")


def test_summarise_says_how_many_seeds_got_stuck():
    collapsed = np.full(1000, 1, np.uint8)
    runs = [_run([0.135] * 3, [2.30] * 3, preds=collapsed, model="CNN_MNIST_3", seed=0),
            _run([0.5, 0.9, 0.97], model="CNN_MNIST_3", seed=1, preds=Y_TEST.copy()),
            _run([0.135] * 3, [2.30] * 3, preds=collapsed, model="CNN_MNIST_3", seed=2)]
    lines = summarise(runs, diagnose(runs, Y_TEST))
    assert lines == ["CNN_MNIST_3: stuck at chance in 2 of 3 seeds (seeds 0, 2)."]
    all_stuck = [runs[0], runs[2]]
    assert summarise(all_stuck, diagnose(all_stuck, Y_TEST)) == [
        "CNN_MNIST_3: stuck at chance in all 2 seeds."]


def test_describe_gradient_names_the_layer_and_the_sigmoid_stack():
    text = describe_gradient({"conv2d": 1.5e-4, "conv2d_1": 3e-3, "dense_2": 3.7}, sigmoids=6)
    assert text.startswith("Early in training the gradient reaching conv2d was 1.5e-04, "
                           "24,667x smaller than at dense_2")
    assert "through the 6 stacked sigmoid layers" in text
    assert describe_gradient({"conv2d": 0.2, "dense": 0.5}) is None


# --- torch: the gradient probe and a real model-3-style run ------------------------------------

@pytest.fixture(scope="module")
def batch(mnist):
    return images_to_tensor(mnist.x_train[:128]), labels_to_tensor(mnist.y_train[:128])


def _init(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(get_spec(name))


@pytest.mark.slow
def test_gradient_vanishes_through_model_3s_sigmoids_not_model_1s_relus(batch):
    x, y = batch
    g1 = gradient_norms(_init("CNN_MNIST_1"), x, y)
    g3 = gradient_norms(_init("CNN_MNIST_3"), x, y)
    assert list(g1) == ["conv2d", "conv2d_1", "dense", "dense_1"]
    assert list(g3) == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "dense", "dense_1",
                        "dense_2"]
    # Model 3's first conv gets a gradient hundreds of times smaller than model 1's ...
    assert g3["conv2d"] < g1["conv2d"] / 100
    # ... and, within model 3, shrinking layer by layer on the way back from the output.
    conv = [g3[k] for k in ("conv2d", "conv2d_1", "conv2d_2", "conv2d_3")]
    assert conv == sorted(conv)
    assert g3["conv2d"] / max(g3.values()) < 1e-3 < 0.1 < g1["conv2d"] / max(g1.values())


def test_gradient_probe_leaves_model_and_random_state_untouched(batch):
    x, y = batch
    model = _init("CNN_MNIST_2")  # has BatchNorm: its running statistics must not move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    model.eval()
    gradient_norms(model, x, y)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())


@pytest.mark.slow
def test_real_model_3_run_collapses_and_the_detector_agrees(mnist, batch):
    """A short CNN_MNIST_3 run (2,048 images, 1 epoch, 1,000 test images) answers one class."""
    seed = 0
    model = _init("CNN_MNIST_3", seed)
    norms = gradient_norms(model, *batch)
    x_test, y_test = mnist.x_test[:1000], mnist.y_test[:1000]
    res = fit(model, images_to_tensor(mnist.x_train[:2048]),
              labels_to_tensor(mnist.y_train[:2048]), images_to_tensor(x_test),
              labels_to_tensor(y_test), TrainConfig(epochs=1, seed=seed))
    run = RunRecord(model="CNN_MNIST_3", spec=get_spec("CNN_MNIST_3"), seed=seed,
                    history=res.history, test_loss=res.test_loss,
                    test_accuracy=res.test_accuracy, test_predictions=res.test_predictions,
                    grad_norms=norms)
    counts = np.bincount(run.test_predictions, minlength=10)
    # Seeded and on one thread count, the run is deterministic: it collapses, every time.
    assert np.sort(counts)[-2:].sum() >= 900, f"did not collapse: answers {counts.tolist()}"
    finding = detect_stuck(run, y_test)
    assert finding is not None, (counts, run.test_accuracy, run.test_loss)
    top = int(counts.argmax())
    assert f'answers "{top}" for {counts[top]:,} of 1,000' in finding.evidence
    assert "stacked sigmoid layers" in finding.evidence  # the probe explains where


# --- advice that follows the model's own layers ------------------------------------------------

RELU_BN = {"name": "relu_bn", "input_shape": [28, 28, 1], "layers": [
    {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
    {"BatchNormalization": {}}, {"MaxPooling2D": {}}, {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}}]}
ADADELTA = {"optimizer": "Adadelta",
            "optimizer_args": {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-7}}


def _stuck_run(spec, config=ADADELTA) -> RunRecord:
    return RunRecord(model=spec.name, spec=spec, seed=0,
                     history={"loss": [2.3] * 3, "acc": [0.11] * 3, "val_loss": [2.30] * 3,
                              "val_acc": [0.135] * 3, "seconds": [1.0] * 3},
                     test_loss=2.30, test_accuracy=0.135,
                     test_predictions=np.full(1000, 1, np.uint8), config=dict(config))


def test_a_stuck_model_with_relu_and_batchnorm_is_not_told_to_add_them():
    from cnnbench.model.spec import build_spec
    f = detect_stuck(_stuck_run(build_spec(RELU_BN)), Y_TEST)
    assert f is not None
    assert f.fix.startswith("It already has ReLU activations and BatchNormalization.")
    assert "ReLU instead" not in f.fix and "BatchNormalization after" not in f.fix
    assert "A learning rate below this run's 1 (Adadelta) or another weight initialisation." \
        in f.fix


def test_a_stuck_sigmoid_model_without_batchnorm_is_told_to_add_both():
    f = detect_stuck(_stuck_run(get_spec("CNN_MNIST_3")), Y_TEST)
    assert f.fix.startswith("ReLU instead of its 6 sigmoid activations, BatchNormalization "
                            "after the convolutions, ")
    assert "fewer stacked saturating layers" in f.fix and "already" not in f.fix
    # Model 2 has BatchNormalization already: only the activations and the step are advised.
    f2 = detect_stuck(_stuck_run(get_spec("CNN_MNIST_2")), Y_TEST)
    assert f2.fix.startswith("It already has BatchNormalization. ReLU instead of its 6 "
                             "sigmoid activations")
    assert "BatchNormalization after" not in f2.fix


def test_unstable_advice_names_batchnorm_momentum_only_for_a_model_that_has_batchnorm():
    curve = [0.90, 0.97, 0.93, 0.98, 0.95, 0.985]
    one = detect_unstable(_run(curve, model="CNN_MNIST_1"))
    two = detect_unstable(_run(curve, model="CNN_MNIST_2"))
    assert "BatchNormalization" not in one.fix + one.explanation
    assert "a lower BatchNormalization momentum" in two.fix
    assert "BatchNormalization's running statistics" in two.explanation


def test_overfitting_advice_names_the_models_own_dropout_rate_or_suggests_dropout():
    val, loss = [0.30, 0.20, 0.15, 0.18, 0.20, 0.22], [0.5, 0.3, 0.2, 0.1, 0.05, 0.03]
    one = detect_overfitting(_run([0.9] * 6, val, loss=loss, model="CNN_MNIST_1"))
    two = detect_overfitting(_run([0.9] * 6, val, loss=loss, model="CNN_MNIST_2"))
    assert "a higher Dropout rate than its 0.5" in one.fix
    assert "Dropout before the dense layers" in two.fix


def test_a_holdout_runs_instability_is_said_of_validation_not_test_accuracy():
    run = _run([0.90, 0.97, 0.93, 0.98, 0.95, 0.985])
    run.config = {**ADADELTA, "validation_split": 0.1}
    f = detect_unstable(run)
    assert f.evidence.startswith("2 sharp drop(s) of validation (holdout) accuracy")
    assert f.explanation.startswith("Validation accuracy (holdout) jumps between epochs")
    assert "(Adadelta with learning rate 1)" in f.explanation


def test_report_md_gives_each_model_its_own_advice():
    from cnnbench.report.content import collect
    from cnnbench.report.markdown import render_markdown
    curve = [0.90, 0.97, 0.93, 0.98, 0.95, 0.985]
    runs = [_run(curve, model=m, preds=Y_TEST.copy()) for m in ("CNN_MNIST_1", "CNN_MNIST_2")]
    md = render_markdown(collect(runs, Y_TEST, {"name": "mnist"}))
    advice = {m: next(ln for ln in md.splitlines() if f"*unstable validation* ({m})" in ln)
              for m in ("CNN_MNIST_1", "CNN_MNIST_2")}
    assert "BatchNormalization" not in advice["CNN_MNIST_1"]
    assert "a lower BatchNormalization momentum" in advice["CNN_MNIST_2"]
