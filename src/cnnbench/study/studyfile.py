"""Study files: which models, which data, which training settings, in one YAML file.

::

    name: fashion-study                  # optional; default: the file's name
    models: [CNN_MNIST_1, my_model.yaml] # built-in names or spec files (relative to this file)
    dataset: fashion-mnist               # mnist | fashion-mnist | kmnist (default mnist)
    data_dir: data/                      # optional: idx files to use (relative to this file)
    training:
      optimizer: {SGD: {learning_rate: 0.01, momentum: 0.9}}   # or just: Adadelta
      loss: categorical_crossentropy
      batch_size: 128
      epochs: 12
      seeds: [0, 1, 2]
      train_limit: null                  # train on the first N images

Everything is validated before any data is loaded; errors name the file and the field.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.constraints import (
    BOOLEAN,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    UNIT,
    Constraint,
    check,
    one_of,
    optional,
)
from cnnbench.data.holdout import MONITORS
from cnnbench.model.spec import (
    ModelSpec,
    SpecError,
    check_description,
    check_name,
    get_spec,
    read_yaml,
)
from cnnbench.train.optim import OptimizerError, describe_optimizer, resolve_optimizer

# torch.manual_seed takes [-2**63, 2**64 - 1]; the store's index keeps seeds as signed 64 bits.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MAX_SEEDS = 1000  # '--seeds K' trains every model K times; more is a typo, not a study
LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")  # the same function
TOP_FIELDS = ("name", "description", "models", "dataset", "data_dir", "training", "ablations",
              "claims")
TRAINING_FIELDS = ("optimizer", "loss", "batch_size", "epochs", "seeds", "seed", "train_limit",
                   "validation_split", "validation_size", "early_stopping", "monitor",
                   "restore_best_weights")
# An ablation's conclusions must not rest on numbers used for selection: without a word from
# the study file, its runs validate on the last tenth of the training images (Keras'
# validation_split=0.1), and the test set is evaluated once, at the end.
ABLATION_VALIDATION_SPLIT = 0.1


@dataclass(frozen=True)
class StudyFile:
    """A validated study file."""

    name: str
    source: str
    specs: tuple[ModelSpec, ...]
    dataset: str | None = None  # None: mnist, or the dataset in data_dir
    data_dir: Path | None = None
    optimizer: str = "Adadelta"
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # resolved, Keras names
    loss: str = "categorical_crossentropy"
    batch_size: int = 128
    epochs: int = 12
    seeds: tuple[int, ...] = (0,)
    train_limit: int | None = None
    holdout: dict[str, Any] = field(default_factory=dict)  # validation_split, early_stopping...
    ablations: tuple[Any, ...] = ()  # variants.Ablation
    claims: tuple[Any, ...] = ()  # claims.Claim

    def optimizer_label(self) -> str:
        return describe_optimizer(self.optimizer, self.optimizer_args)

    def train_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``engine.TrainConfig`` (add ``seed``)."""
        kw: dict[str, Any] = {"epochs": self.epochs, "batch_size": self.batch_size,
                              "train_limit": self.train_limit}
        kw.update(optimizer=self.optimizer, optimizer_args=tuple(self.optimizer_args.items()))
        return kw | self.holdout


def _holdout(training: dict[str, Any], source: str, ablation: bool) -> dict[str, Any]:
    """The validation settings of TrainConfig the study sets (an ablation: a holdout)."""
    out: dict[str, Any] = {}
    where = f"{source}: training"
    split = _check(training, "validation_split", optional(UNIT), source)
    size = _check(training, "validation_size", optional(NON_NEGATIVE_INT), source)
    if split and size:
        raise SpecError(f"{where}: give validation_split or validation_size, not both.")
    if split:
        out["validation_split"] = float(split)
    elif size:
        out["validation_size"] = size
    elif ablation and split is None and size is None:
        out["validation_split"] = ABLATION_VALIDATION_SPLIT
    patience = _check(training, "early_stopping", optional(NON_NEGATIVE_INT), source)
    if patience is not None:
        if not out:
            raise SpecError(f"{where}.early_stopping needs a held-out validation set: set "
                            f"validation_split or validation_size (stopping on the test set "
                            f"would select on the numbers reported).")
        out["early_stopping"] = patience
    for key, c in (("monitor", optional(one_of(*MONITORS))),
                   ("restore_best_weights", optional(BOOLEAN))):
        value = _check(training, key, c, source)
        if value is not None:
            out[key] = value
    return out


def _check(training: dict[str, Any], key: str, c: Constraint, source: str,
           default: Any = None) -> Any:
    """``training[key]`` (or ``default``) if ``c`` allows it, else a SpecError naming it:
    "study.yaml: the 'epochs' parameter of training must be a positive integer. Got 0
    instead." """
    return check(training.get(key, default), c, key, "training", source, SpecError)


def _builtin_studies() -> dict[str, Any]:
    from importlib import resources
    root = resources.files("cnnbench") / "studies"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def find_study(name: str | Path) -> Path:
    """A study file by path, or a study shipped with cnnbench by name (``notebook-claims``)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    builtin = _builtin_studies()
    if str(name) in builtin:
        return Path(str(builtin[str(name)]))
    return path


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_model_spec(path: str | Path) -> bool:
    """A readable YAML mapping with 'layers': a model spec rather than a study file."""
    try:
        data = read_yaml(path, "study file")
    except SpecError:
        return False  # let the study loader report what is wrong
    return isinstance(data, dict) and "layers" in data


def _optimizer(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        name, args = value, {}
    elif isinstance(value, dict) and len(value) == 1:
        name, args = next(iter(value.items()))
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise SpecError(f"{where}: the arguments of {name} must be a mapping, e.g. "
                            f"{{{name}: {{learning_rate: 0.01}}}}. Got {args!r}.")
    else:
        raise SpecError(f"{where}: write the optimizer as a name (Adadelta) or as "
                        f"{{Name: {{argument: value}}}}. Got {value!r}.")
    try:
        return name, resolve_optimizer(name, args, where)
    except OptimizerError as e:
        raise SpecError(str(e)) from e


def build_study(data: Any, source: str, base: Path) -> StudyFile:
    """Validate a parsed study file; model and data paths are relative to ``base``."""
    from cnnbench.data.datasets import DATASETS  # numpy only

    if not isinstance(data, dict):
        raise SpecError(f"{source}: a study file must be a mapping with 'models', 'dataset' "
                        f"and 'training'. Got {type(data).__name__}.")
    for key in data:
        if key not in TOP_FIELDS:
            raise SpecError(f"{source}: unknown field '{key}'. A study file has: "
                            f"{', '.join(TOP_FIELDS)}.")
    name = check_name(data.get("name") or Path(source).stem, source)
    check_description(data.get("description"), source)

    models = data.get("models")
    if isinstance(models, str):
        models = [models]
    if models is None and data.get("ablations"):
        models = []  # the ablations' variants are the models
    elif not isinstance(models, list) or not models:
        raise SpecError(f"{source}: 'models' must be a non-empty list of built-in model names "
                        f"or spec files. Got {models!r}.")
    specs = []
    for i, m in enumerate(models, start=1):
        if not isinstance(m, str):
            raise SpecError(f"{source}: models[{i}] must be a model name or a file path. "
                            f"Got {m!r}.")
        path = base / m
        try:
            specs.append(get_spec(str(path)) if m.endswith((".yaml", ".yml")) or path.is_file()
                         else get_spec(m))
        except SpecError as e:
            msg = str(e)
            # Errors from a spec file already name it; name the study's entry for the others.
            raise SpecError(msg if msg.startswith(str(path)) else
                            f"{source}: models[{i}]: {msg}") from e
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{source}: models: the name(s) {dupes} appear twice; results are "
                        f"keyed by model name, give each spec its own 'name'.")

    dataset = data.get("dataset")
    if dataset is not None and dataset not in DATASETS:
        raise SpecError(f"{source}: dataset: unknown dataset {dataset!r}. Known: "
                        f"{', '.join(DATASETS)}; for your own idx files set 'data_dir'.")
    data_dir = data.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str):
            raise SpecError(f"{source}: data_dir must be a folder path. Got {data_dir!r}.")
        data_dir = base / data_dir

    training = data.get("training") or {}
    where = f"{source}: training"
    if not isinstance(training, dict):
        raise SpecError(f"{where} must be a mapping. Got {training!r}.")
    for key in training:
        if key not in TRAINING_FIELDS:
            raise SpecError(f"{where}: unknown field '{key}'. Its fields: "
                            f"{', '.join(TRAINING_FIELDS)}.")
    opt_name, opt_args = _optimizer(training.get("optimizer", "Adadelta"),
                                    f"{where}.optimizer")
    loss = training.get("loss", "categorical_crossentropy")
    if loss not in LOSSES:
        raise SpecError(f"{where}.loss: unknown loss {loss!r}. Known: {', '.join(LOSSES)} "
                        f"(on a softmax output, clipped as Keras does).")
    values = {key: _check(training, key, POSITIVE_INT, source, default)
              for key, default in (("batch_size", 128), ("epochs", 12))}
    limit = _check(training, "train_limit", optional(POSITIVE_INT), source)
    if "seed" in training and "seeds" in training:
        raise SpecError(f"{where}: give 'seed' or 'seeds', not both.")
    seeds = training.get("seeds", training.get("seed", 0))
    seeds = [seeds] if _int(seeds) else seeds
    if not isinstance(seeds, list) or not seeds or not all(_int(s) for s in seeds):
        raise SpecError(f"{where}.seeds must be an integer or a non-empty list of integers. "
                        f"Got {seeds!r}.")
    if len(seeds) > MAX_SEEDS:
        raise SpecError(f"{where}.seeds: {len(seeds)} seeds; at most {MAX_SEEDS}.")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}.seeds: {seeds} repeats a seed.")
    bad = next((s for s in seeds if not SEED_MIN <= s <= SEED_MAX), None)
    if bad is not None:
        raise SpecError(f"{where}.seeds: {bad} is out of range; a seed is an integer from "
                        f"{SEED_MIN} to {SEED_MAX} (torch's and the store's 64 bits).")
    ablations = _ablations(data.get("ablations"), source, base)
    claims = ()
    if data.get("claims") is not None:
        from cnnbench.analysis.claims import parse_claims
        claims = parse_claims(data["claims"], ablations, f"{source}: claims")
    return StudyFile(name=name, source=source, specs=tuple(specs), dataset=dataset,
                     data_dir=data_dir, optimizer=opt_name, optimizer_args=opt_args, loss=loss,
                     batch_size=values["batch_size"], epochs=values["epochs"],
                     seeds=tuple(seeds), train_limit=limit,
                     holdout=_holdout(training, source, bool(ablations)),
                     ablations=ablations, claims=claims)


def _ablations(value: Any, source: str, base: Path) -> tuple[Any, ...]:
    """The study's ablations (variants.py), each validated with its variants built."""
    if value is None:
        return ()
    from cnnbench.study.variants import build_ablation
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(f"{source}: 'ablations' must be a list of ablations (base, design, "
                        f"factors). Got {value!r}.")
    out = [build_ablation(a, f"{source}: ablations[{i}]", base)
           for i, a in enumerate(value, start=1)]
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{source}: ablations: the name(s) {dupes} appear twice.")
    return tuple(out)


def load_study(path: str | Path) -> StudyFile:
    """Read and validate a study file (or a shipped one, by name)."""
    path = find_study(path)
    return build_study(read_yaml(path, "study file"), str(path), path.parent)
