"""Every training setting, declared once: its constraint, default, help and whether it enters
the run key.

``TrainConfig`` (train/engine.py), the study file's ``training:`` section (study/studyfile.py),
the ``run``/``ablate`` flags (cli/) and the study-file reference (docs/study-files.md, checked
by a test) all read :data:`SETTINGS`. The rules that tie settings together (a held-out
validation set for early stopping, one of split or size, seeds) are here too, once. No torch.

>>> SETTING["batch_size"].default
128
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnbench.constraints import (
    BOOLEAN,
    FINITE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    UNIT,
    Constraint,
    integer,
    one_of,
    optional,
)
from cnnbench.errors import ConstraintError

# torch.manual_seed takes [-2**63, 2**64 - 1]; the store's index keeps seeds as signed 64 bits.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MAX_SEEDS = 1000  # '--seeds K' trains every model K times; more is a typo, not a study
# Epochs and images per step beyond these are typos that would run for years (and overflow
# the store's 64-bit columns): refused before anything starts.
MAX_EPOCHS = 100_000
MAX_BATCH = 10_000_000
MONITORS = ("val_loss", "val_acc")  # what early stopping may watch
PRECISIONS = ("fp32", "bf16")  # as trained; 'auto' is resolved before a config is made
LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")  # the same function
DEFAULT_OPTIMIZER = "Adadelta"  # the notebook's: Keras 2.2 Adadelta(), lr 1.0, rho 0.95
# An ablation's conclusions must not rest on numbers used for selection: without a word from
# the study file or the flags, its runs validate on the last tenth of the training images
# (Keras' validation_split=0.1), and the test set is evaluated once, at the end.
ABLATION_VALIDATION_SPLIT = 0.1

SEED = integer(SEED_MIN, SEED_MAX)
EPOCHS = integer(1, MAX_EPOCHS)
BATCH = integer(1, MAX_BATCH)
TRAIN_LIMIT = optional(integer(1, SEED_MAX))


@dataclass(frozen=True)
class Setting:
    """One training setting. ``flag``: it is a ``run``/``ablate`` option (``--name-with-dashes``);
    ``study``: a key of a study file's ``training:``; ``in_key``: it enters the run key (a
    setting that changes only speed does not); ``parse``: the flag's text to a value."""

    name: str
    constraint: Constraint
    default: Any
    help: str
    in_key: bool = True
    flag: bool = False
    study: bool = True
    parse: Callable[[str], Any] = int
    metavar: str | None = None
    default_text: str | None = None  # the default in words, where the value says too little
    # Added after the run key's shape settled: it enters the key only when set, so that the
    # ids of runs trained before it existed stay what they were.
    key_if_set: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("epochs", EPOCHS, 12, "passes over the training images", flag=True, metavar="N"),
    Setting("batch_size", BATCH, 128,
            "images per step (60,000 images: 469 steps, the last of 96)", flag=True,
            metavar="N"),
    Setting("seed", SEED, 0, "seed of the weights, dropout and shuffling", study=True),
    Setting("train_limit", TRAIN_LIMIT, None,
            "train on the first N training images; the test set stays whole",
            flag=True, metavar="N", default_text="all (null in a study file)"),
    Setting("precision", one_of(*PRECISIONS), "fp32",
            "fp32 (the notebook's arithmetic) or bf16 autocast", study=False),
    Setting("eval_batch_size", POSITIVE_INT, 500, "images per evaluation step (speed only)",
            in_key=False, study=False),
    Setting("optimizer", Constraint(lambda v: isinstance(v, str), "an optimizer name"),
            DEFAULT_OPTIMIZER, "a Keras optimizer: a name, or {Name: {argument: value}}"),
    Setting("optimizer_args", Constraint(lambda v: isinstance(v, tuple), "a tuple of pairs"),
            (), "the optimizer's Keras-named arguments, every one once resolved",
            study=False),
    Setting("validation_split", UNIT, 0.0,
            "validate on the last fraction F of the training images (Keras' "
            "validation_split); the test set is then evaluated once, at the end. 0: the test "
            "set validates after every epoch, as in the notebook", flag=True, parse=float,
            metavar="F", default_text="0; 0.1 for ablations"),
    Setting("validation_size", NON_NEGATIVE_INT, 0,
            "validate on the last N training images instead of a fraction"),
    Setting("early_stopping", optional(NON_NEGATIVE_INT), None,
            "stop when the monitored validation number has not improved for PATIENCE epochs "
            "and restore the best epoch's weights (Keras' EarlyStopping); needs a held-out "
            "validation set", flag=True, metavar="PATIENCE", default_text="off"),
    Setting("monitor", one_of(*MONITORS), "val_loss", "what early stopping watches"),
    Setting("min_delta", NON_NEGATIVE, 0.0, "the smallest change early stopping counts"),
    Setting("restore_best_weights", BOOLEAN, True,
            "with early stopping: end with the best epoch's weights"),
    # Keras' EarlyStopping(baseline=): patience counts until the monitored number beats this.
    # A run stuck at chance (val_loss ~2.30 for ten classes) then stops after PATIENCE epochs.
    Setting("baseline", optional(FINITE), None,
            "with early stopping: a value the monitored number must beat; until it does, "
            "improvements do not reset the patience (Keras' baseline)", key_if_set=True),
)
SETTING: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
NOT_IN_KEY: tuple[str, ...] = tuple(s.name for s in SETTINGS if not s.in_key)
KEY_IF_SET: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.key_if_set)
# A study file's training section: the settings it may set, plus the loss and several seeds.
STUDY_FIELDS: tuple[str, ...] = (*(s.name for s in SETTINGS if s.study), "loss", "seeds")


def check_holdout(values: Mapping[str, Any], where: str, *, split: str = "validation_split",
                  size: str = "validation_size", patience: str = "early_stopping") -> None:
    """The rules between the validation settings; ``split``/``size``/``patience`` are how
    ``where`` spells them (a study field, a flag); ``where`` may be empty."""
    lead = f"{where}: " if where else ""
    if values.get("validation_split") and values.get("validation_size"):
        raise ConstraintError(f"{lead}give {split} or {size}, not both. Got "
                              f"{values['validation_split']!r} and "
                              f"{values['validation_size']!r}.")
    if values.get("baseline") is not None and values.get("early_stopping") is None:
        raise ConstraintError(f"{lead}baseline is early stopping's; it needs {patience} too. "
                              f"Got baseline {values['baseline']!r} without it.")
    if values.get("early_stopping") is not None and not (values.get("validation_split")
                                                         or values.get("validation_size")):
        raise ConstraintError(f"{lead}{patience} needs a held-out validation set ({split} "
                              f"or {size}): stopping on the test set would select on the "
                              f"numbers that are reported.")


def seeds_of(value: Any, where: str) -> tuple[int, ...]:
    """Seeds as given: an int, or a list of distinct ints, each in range.

    >>> seeds_of([0, 1, 2], "study.yaml: training.seeds")
    (0, 1, 2)
    """
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(seeds, list | tuple) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConstraintError(f"{where} must be an integer or a non-empty list of integers. "
                              f"Got {value!r}.")
    if len(seeds) > MAX_SEEDS:
        raise ConstraintError(f"{where}: {len(seeds)} seeds; at most {MAX_SEEDS}.")
    bad = next((s for s in seeds if not SEED(s)), None)
    if bad is not None:
        raise ConstraintError(f"{where}: {bad} is out of range; a seed is an integer from "
                              f"{SEED_MIN} to {SEED_MAX} (torch's and the store's 64 bits).")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:  # one run counted twice would fake agreement between seeds (std 0)
        raise ConstraintError(f"{where}: seed(s) {', '.join(map(str, repeated))} given more "
                              f"than once; expected distinct seeds.")
    return tuple(seeds)


def first_seeds(k: int, where: str) -> tuple[int, ...]:
    """``--seeds K``: seeds 0..K-1."""
    if not 1 <= k <= MAX_SEEDS:
        raise ConstraintError(f"{where}: expected a number of seeds from 1 to {MAX_SEEDS}. "
                              f"Got {k}.")
    return tuple(range(k))


def unique_names(names: Sequence[str], where: str) -> None:
    """Results are keyed by name: refuse two models of one name."""
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ConstraintError(f"{where}: the model name(s) {dupes} appear twice; results are "
                              f"keyed by model name, give each spec its own 'name'.")


@dataclass(frozen=True)
class AutoSeeds:
    """``seeds: {auto: true, min: M, max: N}`` / ``--seeds auto``: seeds trained in rounds of
    ``round``, from ``min`` to at most ``max`` per model, only while a comparison is open
    (analysis/sequential.py). ``smallest_effect``: points; the difference worth finding."""

    min: int = 3
    max: int = 10
    round: int = 2
    smallest_effect: float | None = None


AUTO_FIELDS = ("auto", "min", "max", "round", "smallest_effect")


def auto_seeds_of(value: Mapping[str, Any], where: str) -> AutoSeeds:
    """A study file's ``seeds: {auto: true, min: 3, max: 10}``, checked.

    >>> auto_seeds_of({"auto": True, "max": 6}, "study.yaml: training.seeds")
    AutoSeeds(min=3, max=6, round=2, smallest_effect=None)
    """
    unknown = sorted(str(k) for k in value if k not in AUTO_FIELDS)
    if unknown:
        raise ConstraintError(f"{where}: unknown field(s) {', '.join(unknown)}; expected "
                              f"{', '.join(AUTO_FIELDS)}.")
    if value.get("auto") is not True:
        raise ConstraintError(f"{where}: a mapping of seeds needs 'auto: true'. Got "
                              f"auto: {value.get('auto')!r}.")
    d = AutoSeeds()
    got = {k: value.get(k, getattr(d, k)) for k in ("min", "max", "round")}
    for key, n in got.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SEEDS:
            raise ConstraintError(f"{where}.{key} must be an integer from 1 to {MAX_SEEDS}. "
                                  f"Got {n!r}.")
    if not 2 <= got["min"] <= got["max"]:
        raise ConstraintError(f"{where}: min {got['min']} and max {got['max']}; expected "
                              f"2 <= min <= max (Welch's test needs two seeds a model).")
    effect = value.get("smallest_effect")
    if effect is not None and (isinstance(effect, bool) or not isinstance(effect, int | float)
                               or not 0 < effect <= 100):
        raise ConstraintError(f"{where}.smallest_effect must be a number of accuracy points "
                              f"in (0, 100]. Got {effect!r}.")
    return AutoSeeds(got["min"], got["max"], got["round"],
                     None if effect is None else float(effect))
