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

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.constraints import Constraint, check
from cnnbench.errors import ConstraintError
from cnnbench.model.spec import (
    ModelSpec,
    SpecError,
    check_description,
    check_name,
    get_spec,
    read_yaml,
)
from cnnbench.settings import (
    ABLATION_VALIDATION_SPLIT,
    DEFAULT_OPTIMIZER,
    DEFAULTS,
    LOSSES,
    MAX_SEEDS,
    SEED_MAX,
    SEED_MIN,
    SETTINGS,
    STUDY_FIELDS,
    AutoSeeds,
    auto_seeds_of,
    check_holdout,
    seeds_of,
    unique_names,
)
from cnnbench.train.optim import OptimizerError, describe_optimizer, optimizer_of

__all__ = ["MAX_SEEDS", "SEED_MAX", "SEED_MIN", "StudyFile", "build_study", "load_study"]
TOP_FIELDS = ("name", "description", "models", "dataset", "data_dir", "training", "ablations",
              "claims")


@dataclass(frozen=True)
class StudyFile:
    """A validated study file."""

    name: str
    source: str
    specs: tuple[ModelSpec, ...]
    dataset: str | None = None  # None: mnist, or the dataset in data_dir
    data_dir: Path | None = None
    optimizer: str = DEFAULT_OPTIMIZER
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # resolved, Keras names
    loss: str = LOSSES[0]
    batch_size: int = DEFAULTS["batch_size"]
    epochs: int = DEFAULTS["epochs"]
    seeds: tuple[int, ...] = (DEFAULTS["seed"],)
    auto_seeds: AutoSeeds | None = None  # seeds in rounds while a comparison is open
    train_limit: int | None = DEFAULTS["train_limit"]
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


def _holdout(training: dict[str, Any], values: dict[str, Any], source: str,
             ablation: bool) -> dict[str, Any]:
    """The validation settings the study sets, checked by settings.check_holdout's rules."""
    keys = ("validation_split", "validation_size", "early_stopping", "monitor",
            "restore_best_weights", "baseline", "min_delta")
    out = {k: values[k] for k in keys if k in training and values[k] is not None}
    out = {k: v for k, v in out.items() if v or k not in ("validation_split", "validation_size")}
    # An ablation without a word on validation gets a holdout from the plan (build_plan).
    implied = ({"validation_split": ABLATION_VALIDATION_SPLIT} if ablation and not
               {"validation_split", "validation_size"} & set(training) else {})
    try:
        check_holdout(out | implied, f"{source}: training")
    except ConstraintError as e:
        raise SpecError(str(e)) from None
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


def is_model_spec(path: str | Path) -> bool:
    """A readable YAML mapping with 'layers': a model spec rather than a study file."""
    try:
        data = read_yaml(path, "study file")
    except SpecError:
        return False  # let the study loader report what is wrong
    return isinstance(data, dict) and "layers" in data


def _optimizer(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    try:
        return optimizer_of(value, where)
    except OptimizerError as e:
        raise SpecError(str(e)) from None


def build_study(data: Any, source: str, base: Path) -> StudyFile:
    """Validate a parsed study file; model and data paths are relative to ``base``.

    The parts are checked in the file's order (models, dataset, training, ablations, claims),
    so of several mistakes the first is the one reported.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a study file must be a mapping with 'models', 'dataset' "
                        f"and 'training'. Got {type(data).__name__}.")
    for key in data:
        if key not in TOP_FIELDS:
            raise SpecError(f"{source}: unknown field '{key}'. A study file has: "
                            f"{', '.join(TOP_FIELDS)}.")
    name = check_name(data.get("name") or Path(source).stem, source)
    check_description(data.get("description"), source)
    specs = _models(data, source, base)
    dataset, data_dir = _dataset(data, source, base)
    training, values = _training(data.get("training") or {}, source)
    ablations = _ablations(data.get("ablations"), source, base)
    claims = _claims(data.get("claims"), ablations, source)
    settings = {k: values[k] for k in ("optimizer", "optimizer_args", "loss", "batch_size",
                                       "epochs", "seeds", "auto_seeds", "train_limit")}
    study = StudyFile(name=name, source=source, specs=specs, dataset=dataset,
                      data_dir=data_dir, **settings,
                      holdout=_holdout(training, values, source, bool(ablations)),
                      ablations=ablations, claims=claims)
    if ablations:  # two models under one name are refused when the file is read
        from cnnbench.study.ablation import canonical_names
        try:
            canonical_names(ablations, study.train_config_kwargs())
        except SpecError as e:
            raise SpecError(f"{source}: {e}") from None
    return study


def _models(data: dict[str, Any], source: str, base: Path) -> tuple[ModelSpec, ...]:
    """The specs 'models' names (built-in names or spec files), each name once; none when
    the study has ablations and no 'models' (their variants are the models)."""
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
    try:
        unique_names([s.name for s in specs], f"{source}: models")
    except ConstraintError as e:
        raise SpecError(str(e)) from None
    return tuple(specs)


def _dataset(data: dict[str, Any], source: str, base: Path) -> tuple[str | None, Path | None]:
    """The dataset's name (None: mnist, or what data_dir holds) and the data_dir folder."""
    from cnnbench.data.datasets import DATASETS  # numpy only

    dataset = data.get("dataset")
    if dataset is not None and dataset not in DATASETS:
        raise SpecError(f"{source}: dataset: unknown dataset {dataset!r}. Known: "
                        f"{', '.join(DATASETS)}; for your own idx files set 'data_dir'.")
    data_dir = data.get("data_dir")
    if data_dir is None:
        return dataset, None
    if not isinstance(data_dir, str):
        raise SpecError(f"{source}: data_dir must be a folder path. Got {data_dir!r}.")
    return dataset, base / data_dir


def _training(training: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The 'training' mapping, and its values: each study setting of SETTINGS checked (or its
    default), the optimizer resolved (optimizer, optimizer_args), the loss and the seeds."""
    where = f"{source}: training"
    if not isinstance(training, dict):
        raise SpecError(f"{where} must be a mapping. Got {training!r}.")
    for key in training:
        if key not in STUDY_FIELDS:
            close = difflib.get_close_matches(str(key), STUDY_FIELDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise SpecError(f"{where}: unknown field '{key}'.{hint} Its fields: "
                            f"{', '.join(STUDY_FIELDS)}.")
    opt_name, opt_args = _optimizer(training.get("optimizer", DEFAULT_OPTIMIZER),
                                    f"{where}.optimizer")
    loss = training.get("loss", "categorical_crossentropy")
    if loss not in LOSSES:
        raise SpecError(f"{where}.loss: unknown loss {loss!r}. Known: {', '.join(LOSSES)} "
                        f"(on a softmax output, clipped as Keras does).")
    values = {s.name: _check(training, s.name, s.constraint, source, s.default)
              for s in SETTINGS if s.study and s.name not in ("optimizer", "seed")}
    if "seed" in training and "seeds" in training:
        raise SpecError(f"{where}: give 'seed' or 'seeds', not both.")
    auto = None
    try:
        if isinstance(training.get("seeds"), dict):  # seeds: {auto: true, min: 3, max: 10}
            auto = auto_seeds_of(training["seeds"], f"{where}.seeds")
            seeds = tuple(range(auto.min))
        else:
            seeds = seeds_of(training.get("seeds", training.get("seed", DEFAULTS["seed"])),
                             f"{where}.seeds")
    except ConstraintError as e:
        raise SpecError(str(e)) from None
    return training, values | {"optimizer": opt_name, "optimizer_args": opt_args,
                               "loss": loss, "seeds": seeds, "auto_seeds": auto}


def _claims(value: Any, ablations: tuple[Any, ...], source: str) -> tuple[Any, ...]:
    """The study's claims (analysis/claims.py), checked against its ablations."""
    if value is None:
        return ()
    from cnnbench.analysis.claims import parse_claims
    return parse_claims(value, ablations, f"{source}: claims")


def _ablations(value: Any, source: str, base: Path) -> tuple[Any, ...]:
    """The study's ablations (variants.py), each validated with its variants built."""
    if value is None:
        return ()
    from cnnbench.study.variants import MAX_STUDY_VARIANTS, build_ablation
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(f"{source}: 'ablations' must be a list of ablations (base, design, "
                        f"factors). Got {value!r}.")
    out: list[Any] = []
    left = MAX_STUDY_VARIANTS  # each ablation is counted before it is built
    for i, a in enumerate(value, start=1):
        out.append(build_ablation(a, f"{source}: ablations[{i}]", base, budget=left))
        left -= len(out[-1].variants)
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{source}: ablations: the name(s) {dupes} appear twice.")
    return tuple(out)


def load_study(path: str | Path) -> StudyFile:
    """Read and validate a study file (or a shipped one, by name)."""
    path = find_study(path)
    return build_study(read_yaml(path, "study file"), str(path), path.parent)
