"""What went wrong in a run, in words: detectors on histories and predictions.

Each detector returns :class:`Finding` objects carrying the evidence (numbers from the run),
a plain-language explanation and the usual fix. The detectors read plain data
(:class:`cnnbench.records.RunRecord`); only :func:`gradient_norms` touches torch, and it
imports it lazily so that a report can be written without torch loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnbench.store.records import RunRecord

# Thresholds, with the notebook's runs as the yardstick (tests/test_diagnosis.py checks them).
STUCK_ACC_MARGIN = 0.05  # accuracy within 5 points of always answering the commonest class
STUCK_TOP2_SHARE = 0.90  # ... and 90 % of answers on one or two classes
STUCK_LOSS_MARGIN = 0.15  # or the loss within 0.15 of ln(classes): a uniform softmax
SHORT_RUN_EPOCHS = 3  # fewer epochs than this: "stuck" may only mean "not started yet"
OVERFIT_RISE = 1.10  # last val_loss at least 10 % above its minimum ...
OVERFIT_MEAN_RISE = 1.05  # ... and on average 5 % above it after the minimum
OVERFIT_MIN_EPOCHS_AFTER = 2
UNSTABLE_DROP = 0.005  # val accuracy falls by 0.5 points or more from one epoch to the next
UNSTABLE_ERROR_RATIO = 1.5  # ... while the test error grows by half or more
# First layer's gradient below 1 % of the largest layer's. Only used to explain a stuck run:
# at initialisation (128 MNIST images) CNN_MNIST_3 measures 4e-5, but CNN_MNIST_2 and _4 also
# 1e-3 and 7e-4 and still train (Adadelta scales each parameter's step; BatchNorm helps), so a
# small ratio alone is no failure. CNN_MNIST_1 measures 0.4.
VANISH_RATIO = 1e-2


@dataclass
class Finding:
    kind: str  # "stuck", "diverged", "overfitting", "unstable"
    model: str
    seed: int
    evidence: str  # numbers from this run
    explanation: str  # what it means, in plain words
    fix: str  # what usually helps

    @property
    def title(self) -> str:
        return TITLES[self.kind]


TITLES = {
    "stuck": "stuck at chance",
    "diverged": "diverged",
    "overfitting": "overfitting",
    "unstable": "unstable validation",
}

# --- explanation and advice, from the run's own layers and settings ---------------------------
# Advice never asks for what the model already has: a model with ReLU and BatchNormalization
# is not told to add them.

SATURATING = ("sigmoid", "tanh", "softsign")  # activations whose gradient vanishes when saturated
RELU_LIKE = ("relu", "elu", "selu", "gelu", "leaky_relu")
RELU_LAYERS = ("ReLU", "LeakyReLU", "ELU")
NORMALIZATION = ("BatchNormalization", "LayerNormalization")


@dataclass(frozen=True)
class Traits:
    """What a run's model and settings have, as the advice needs it."""

    saturating: tuple[str, ...]  # the hidden layers' saturating activations, in order
    relu_like: bool  # any ReLU-family activation
    batchnorm: bool
    normalization: bool  # BatchNormalization or LayerNormalization
    dropout: tuple[float, ...]
    optimizer: str | None  # None: not recorded
    learning_rate: float | None
    holdout: bool  # val_* come from a held-out part of the training images
    early_stopping: bool


def traits(run: RunRecord) -> Traits:
    """The model's layers (the output layer's softmax aside) and the run's settings."""
    layers = list(run.spec.layers)
    activations = [str(layer.args["activation"]) for layer in layers[:-1]
                   if "activation" in layer.args]
    c = run.config or {}
    args = c.get("optimizer_args")
    lr = args.get("learning_rate") if isinstance(args, dict) else c.get("lr")
    return Traits(
        saturating=tuple(a for a in activations if a in SATURATING),
        relu_like=any(a in RELU_LIKE for a in activations)
        or any(layer.kind in RELU_LAYERS for layer in layers),
        batchnorm=any(layer.kind == "BatchNormalization" for layer in layers),
        normalization=any(layer.kind in NORMALIZATION for layer in layers),
        dropout=tuple(run.spec.dropout_rates),
        optimizer=c.get("optimizer") or ("Adadelta" if "lr" in c else None),
        learning_rate=float(lr) if isinstance(lr, int | float) else None,
        holdout=bool(c.get("validation_split") or c.get("validation_size")),
        early_stopping=c.get("early_stopping") is not None)


def _sentence(options: Sequence[str], then: str = "") -> str:
    """``a, b or c.``, capitalised, then ``then`` as a sentence of its own."""
    options = [o for o in options if o]
    text = ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]
    return text[0].upper() + text[1:] + "." + (f" {then}" if then else "")


def _smaller_lr(t: Traits) -> str:
    if t.learning_rate is None:
        return "a smaller learning rate"
    return f"a learning rate below this run's {t.learning_rate:g} ({t.optimizer})"


def _stuck_fix(t: Traits) -> str:
    parts = []
    if t.saturating:
        kinds = " and ".join(sorted(set(t.saturating)))
        parts.append(f"ReLU instead of its {len(t.saturating)} {kinds} activation"
                     f"{'s' if len(t.saturating) > 1 else ''}")
    if not t.normalization:
        parts.append("BatchNormalization after the convolutions")
    parts.append(_smaller_lr(t))
    if len(t.saturating) >= 2:
        parts.append("fewer stacked saturating layers")
    has = [w for w, yes in (("ReLU activations", t.relu_like and not t.saturating),
                            ("BatchNormalization", t.batchnorm)) if yes]
    check = ""
    if not t.saturating and t.normalization:
        parts.append("another weight initialisation")
        check = "Check that the labels match the images and that inputs are scaled to [0, 1]."
    lead = f"It already has {' and '.join(has)}. " if has else ""
    return lead + _sentence(parts, check)


def _diverged_fix(t: Traits) -> str:
    return _sentence([_smaller_lr(t), "gradient clipping",
                      "" if t.normalization else "BatchNormalization"],
                     "Check that inputs are scaled to [0, 1].")


def _overfitting_fix(t: Traits) -> str:
    best = ("keep the weights of the best epoch (early stopping on val_loss, on a held-out "
            "validation set)" if not t.early_stopping else "a smaller early-stopping patience")
    rates = ", ".join(f"{r:g}" for r in t.dropout)
    dropout = (f"a higher Dropout rate than its {rates}" if t.dropout
               else "Dropout before the dense layers")
    return _sentence([best, dropout, "weight decay", "data augmentation", "fewer epochs"])


def _unstable_explanation(t: Traits) -> str:
    what = "Validation accuracy (holdout)" if t.holdout else "Test accuracy"
    causes = "a large step size" + (f" ({t.optimizer} with learning rate {t.learning_rate:g})"
                                    if t.learning_rate is not None else "")
    if t.batchnorm:
        causes += (" and BatchNormalization's running statistics (momentum 0.99) lagging "
                   "behind fast-changing weights")
    return (f"{what} jumps between epochs, so the last epoch's number depends on luck: the "
            f"weights at the end of an epoch land in quite different places. Usual causes are "
            f"{causes}.")


def _unstable_fix(t: Traits) -> str:
    return _sentence(["a smaller learning rate or a decaying schedule",
                      "a lower BatchNormalization momentum" if t.batchnorm else "",
                      "averaging the weights (EMA)"],
                     "Judge the model over several seeds and epochs.")


EXPLANATIONS = {
    "stuck": "The network gives (nearly) the same answer whatever the image, so it scores what "
             "always naming the commonest class would. A loss near ln(10) = 2.303 means its "
             "softmax is almost uniform: it learned the class frequencies and nothing else.",
    "diverged": "The loss became NaN or infinite: the weights overflowed, so the run stopped "
                "and has no usable result.",
    "overfitting": "The network keeps getting better on its training images while getting "
                   "worse on images it has not seen: past its best epoch it memorises rather "
                   "than generalises.",
}
FIXES = {"stuck": _stuck_fix, "diverged": _diverged_fix, "overfitting": _overfitting_fix,
         "unstable": _unstable_fix}


def explain(kind: str, run: RunRecord) -> tuple[str, str]:
    """What a finding of ``kind`` means for this run, and what usually helps it, in words
    that follow its own layers and settings."""
    t = traits(run)
    explanation = (_unstable_explanation(t) if kind == "unstable" else EXPLANATIONS[kind])
    return explanation, FIXES[kind](t)


def _finding(kind: str, run: RunRecord, evidence: str) -> Finding:
    explanation, fix = explain(kind, run)
    return Finding(kind, run.model, run.seed, evidence, explanation, fix)


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


# --- detectors ------------------------------------------------------------------------------

def detect_diverged(run: RunRecord) -> Finding | None:
    bad = run.status == "diverged" or not math.isfinite(run.test_loss) or not all(
        _finite(run.history.get(k, [])) for k in ("loss", "val_loss"))
    if not bad:
        return None
    where = (f"at epoch {run.diverged_at[0]}, step {run.diverged_at[1]}" if run.diverged_at
             else f"after {run.epochs} completed epoch(s)")
    return _finding("diverged", run, f"The training loss became NaN/inf {where}.")


def detect_stuck(run: RunRecord, y_test: np.ndarray | None = None,
                 num_classes: int = 10) -> Finding | None:
    """Accuracy near the majority-class rate, and answers collapsed or a uniform softmax."""
    if not math.isfinite(run.test_accuracy):
        return None
    if y_test is not None and len(y_test):
        counts = np.bincount(np.asarray(y_test, dtype=np.int64), minlength=num_classes)
        majority, majority_class = counts.max() / counts.sum(), int(counts.argmax())
    else:
        majority, majority_class = 1.0 / num_classes, None
    if run.test_accuracy > majority + STUCK_ACC_MARGIN:
        return None
    chance_loss = math.log(num_classes)
    near_uniform = abs(run.test_loss - chance_loss) < STUCK_LOSS_MARGIN
    collapsed, answers = False, ""
    if run.test_predictions is not None and len(run.test_predictions):
        pc = np.bincount(run.test_predictions.astype(np.int64), minlength=num_classes)
        order = np.argsort(-pc, kind="stable")
        top = [int(c) for c in order[:2] if pc[c]]
        share = pc[order[:2]].sum() / pc.sum()
        collapsed = share >= STUCK_TOP2_SHARE
        n = int(pc.sum())
        answers = "; it answers " + " and ".join(
            f"\"{c}\" for {pc[c]:,} of {n:,} test images" for c in top)
    if not (collapsed or near_uniform):
        return None
    base = (f"always answering \"{majority_class}\" would score {100 * majority:.2f} %"
            if majority_class is not None else f"chance is {100 * majority:.0f} %")
    evidence = (f"After {run.epochs} epoch(s): test accuracy {100 * run.test_accuracy:.2f} % "
                f"({base}){answers}. Test loss {run.test_loss:.4f} (ln {num_classes} = "
                f"{chance_loss:.4f}).")
    if run.epochs < SHORT_RUN_EPOCHS:
        evidence += (" This run was short: a network that learns slowly at first (the "
                     "notebook's sigmoid models 2 and 4 need a few hundred steps) can still be "
                     "at chance here without being stuck for good.")
    gradient = describe_gradient(run.grad_norms, _sigmoids(run)) if run.grad_norms else None
    if gradient:
        evidence += " " + gradient
    return _finding("stuck", run, evidence)


def detect_overfitting(run: RunRecord) -> Finding | None:
    """Validation loss rising after its minimum while the training loss keeps falling."""
    vl, tl = run.history["val_loss"], run.history["loss"]
    if len(vl) < 3 or not _finite(vl) or not _finite(tl):
        return None
    best = int(np.argmin(vl))
    after = vl[best + 1:]
    if len(after) < OVERFIT_MIN_EPOCHS_AFTER:
        return None
    if not (vl[-1] >= OVERFIT_RISE * vl[best] and np.mean(after) >= OVERFIT_MEAN_RISE * vl[best]
            and tl[-1] < tl[best]):
        return None
    return _finding("overfitting", run, (
        f"Validation loss was lowest at epoch {best + 1} ({vl[best]:.4f}) and rose to "
        f"{vl[-1]:.4f} by epoch {len(vl)} (+{100 * (vl[-1] / vl[best] - 1):.0f} %), while the "
        f"training loss fell from {tl[best]:.4f} to {tl[-1]:.4f}."))


def detect_unstable(run: RunRecord) -> Finding | None:
    """Epoch-to-epoch drops of validation accuracy that multiply the test error."""
    va = run.history["val_acc"]
    if len(va) < 3 or not _finite(va):
        return None
    drops = []
    for e in range(1, len(va)):
        fall = va[e - 1] - va[e]
        ratio = (1 - va[e]) / max(1 - va[e - 1], 1e-12)
        if fall >= UNSTABLE_DROP and ratio >= UNSTABLE_ERROR_RATIO:
            drops.append((e, fall, ratio))
    if not drops:
        return None
    e, fall, ratio = max(drops, key=lambda d: d[1])
    lo, hi = min(va[1:]), max(va[1:])
    on = "validation (holdout)" if traits(run).holdout else "test"
    return _finding("unstable", run, (
        f"{len(drops)} sharp drop(s) of {on} accuracy between epochs; the largest from "
        f"{100 * va[e - 1]:.2f} % (epoch {e}) to {100 * va[e]:.2f} % (epoch {e + 1}), the {on} "
        f"error growing {ratio:.1f}x. After epoch 1 it ranged {100 * lo:.2f}-{100 * hi:.2f} %."))


def describe_gradient(norms: dict[str, float], sigmoids: int = 0) -> str | None:
    """Where the gradient shrank, in words, or None if it did not vanish."""
    items = [(k, v) for k, v in norms.items() if math.isfinite(v)]
    if len(items) < 2:
        return None
    first_name, first = items[0]
    top_name, top = max(items, key=lambda kv: kv[1])
    if top <= 0 or first >= VANISH_RATIO * top:
        return None
    listing = ", ".join(f"{k} {v:.1e}" for k, v in items)
    through = (f"through the {sigmoids} stacked sigmoid layers (each multiplies it by at most "
               f"0.25)" if sigmoids >= 2 else "on its way back through the layers")
    return (f"Early in training the gradient reaching {first_name} was {first:.1e}, "
            f"{top / max(first, 1e-30):,.0f}x smaller than at {top_name} ({top:.1e}): it "
            f"vanished {through}, so the first layers hardly learn. Per layer: {listing}.")


def _sigmoids(run: RunRecord) -> int:
    return sum(1 for layer in run.spec.layers if layer.args.get("activation") == "sigmoid")


def diagnose_run(run: RunRecord, y_test: np.ndarray | None = None,
                 num_classes: int = 10) -> list[Finding]:
    """Every finding for one run. A diverged or stuck run gets no overfitting/instability
    finding: its curves say nothing about generalisation."""
    diverged = detect_diverged(run)
    if diverged:
        return [diverged]
    out: list[Finding] = []
    stuck = detect_stuck(run, y_test, num_classes)
    if stuck:
        out.append(stuck)
    else:
        out += [f for f in (detect_overfitting(run), detect_unstable(run)) if f]
    return out


def diagnose(records: Sequence[RunRecord], y_test: np.ndarray | None = None,
             num_classes: int = 10) -> list[Finding]:
    return [f for r in records for f in diagnose_run(r, y_test, num_classes)]


def summarise(records: Sequence[RunRecord], findings: Sequence[Finding]) -> list[str]:
    """One sentence per model and kind: how many of its seeds show it."""
    seeds: dict[str, list[int]] = {}
    for r in records:
        seeds.setdefault(r.model, []).append(r.seed)
    out = []
    for model, all_seeds in seeds.items():
        for kind, title in TITLES.items():
            hit = sorted({f.seed for f in findings if f.model == model and f.kind == kind})
            if not hit:
                continue
            n = len(all_seeds)
            which = "" if n == 1 else f" (seed{'s' if len(hit) > 1 else ''} " \
                f"{', '.join(map(str, hit))})"
            count = "its only run" if n == 1 else (
                f"all {n} seeds" if len(hit) == n else f"{len(hit)} of {n} seeds")
            out.append(f"{model}: {title} in {count}{which if len(hit) < n else ''}.")
    return out


# --- gradient probe -------------------------------------------------------------------------

def gradient_norms(model: Any, x: Any, y: Any) -> dict[str, float]:
    """L2 norm of the loss gradient per parameterised layer, first layer first.

    Labels are Keras' layer names (``conv2d``, ``conv2d_1``, ``dense``, ...): the
    ``keras_layer`` that :func:`cnnbench.model.build.build_model` gives each module from the
    layer registry, as :func:`cnnbench.report.table.model_summary` names the layers; a
    module without one (not built from a spec) is named by its class, numbered.
    The probe runs on a copy in training mode with the random state forked, so the model, its
    gradients, BatchNorm statistics and the run's dropout draws are left exactly as they were.
    Cost: one forward and backward pass over ``x``.
    """
    import copy

    import torch

    from cnnbench.model.build import clipped_categorical_crossentropy

    probe = copy.deepcopy(model)
    probe.train()
    probe.zero_grad(set_to_none=True)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        loss = clipped_categorical_crossentropy(probe(x), y)
        loss.backward()
    seen: dict[str, int] = {}
    squares: dict[str, Any] = {}
    for module in probe.modules():
        params = [p for p in module.parameters(recurse=False) if p.grad is not None]
        if not params:
            continue
        label = getattr(module, "keras_layer", None)
        if label is None:
            base = type(module).__name__.lower()
            label = base if base not in seen else f"{base}_{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
        total = sum((p.grad.double() ** 2).sum() for p in params)
        squares[label] = squares[label] + total if label in squares else total
    return {label: float(torch.sqrt(total)) for label, total in squares.items()}
