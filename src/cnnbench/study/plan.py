"""What ``cnnbench run`` (or ``ablate``) will do, settled before any data is loaded.

:func:`build_plan` merges a study file with what the command line gave (:class:`Overrides`)
once, into a :class:`StudyPlan`, resolving every default and refusing every contradiction;
everything after (loading the data, the executor, the driver, the result files) reads the
plan, not the options. No torch here: a plan is built, and refused, before torch is imported.

>>> plan = build_plan(None, Overrides(models=("CNN_MNIST_1",), training={"epochs": 3}))
>>> plan.config(0).epochs, plan.origin["epochs"]
(3, '--epochs')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.errors import ConstraintError, UsageError
from cnnbench.model.spec import ModelSpec, get_spec, list_models
from cnnbench.settings import (
    ABLATION_VALIDATION_SPLIT,
    DEFAULT_OPTIMIZER,
    DEFAULTS,
    SETTING,
    AutoSeeds,
    check_holdout,
    unique_names,
)
from cnnbench.study.studyfile import StudyFile, is_model_spec, load_study

if TYPE_CHECKING:
    from cnnbench.analysis.claims import Claim
    from cnnbench.study.variants import Ablation
    from cnnbench.train.engine import TrainConfig

NOTEBOOK_MODELS = "CNN_MNIST_*"  # the default models, and the study that stays in fp32


@dataclass(frozen=True)
class ExecutorSettings:
    """Where the runs train: ``local`` (``jobs`` > 1: a pool of processes) or ``ray``."""

    kind: str = "local"
    jobs: int = 1
    threads: int | None = None  # torch threads a run uses (None: the executor's default)
    ray_address: str | None = None


@dataclass(frozen=True)
class PlanGroup:
    """Models trained under the same settings. ``label``: an ablation's settings ('' for a
    plain study), naming the folder its tables and plots go to."""

    label: str
    specs: tuple[ModelSpec, ...]
    training: Mapping[str, Any]  # TrainConfig's arguments but the seed and the precision


@dataclass(frozen=True)
class StudyPlan:
    """A study, typed: its models in groups of settings, the seeds, the data by name, the
    store, where and how the runs train and where the results go."""

    groups: tuple[PlanGroup, ...]
    seeds: tuple[int, ...]
    training: Mapping[str, Any]  # the study's settings, before an ablation varies them
    out: Path
    dataset: str | None = None  # a dataset cnnbench knows (None: mnist, or data_dir's)
    data_dir: Path | None = None
    class_names: Path | None = None
    store: Path | None = None  # None: $CNNBENCH_STORE, else ./cnnbench-runs
    force: bool = False
    loggers: tuple[str, ...] = ()
    executor: ExecutorSettings = ExecutorSettings()
    device: str = "auto"
    precision: str | None = None  # as asked (fp32, bf16, auto; None: default_precision())
    # until resolved for the device
    ablations: tuple[Ablation, ...] = ()
    claims: tuple[Claim, ...] = ()
    study: StudyFile | None = None  # the study file the plan came from, if any
    # Where each resolved setting came from: a flag ('--epochs'), the study file ('study
    # file'), or a default ('default', 'default for ablations'); printed at the start.
    origin: Mapping[str, str] = field(default_factory=dict)
    auto: AutoSeeds | None = None  # seeds in rounds while a comparison is open; seeds: a round

    @property
    def specs(self) -> list[ModelSpec]:
        """Every model the plan trains, group after group."""
        return [s for g in self.groups for s in g.specs]

    def is_notebook_study(self) -> bool:
        """The notebook's models, as built in, on MNIST: the study that stays in fp32 unless
        ``--precision`` says otherwise (``default_precision``)."""
        built_in = {n: get_spec(n) for n in list_models(NOTEBOOK_MODELS)}
        return (self.dataset in (None, "mnist") and self.data_dir is None and not self.ablations
                and all(built_in.get(s.name) == s for s in self.specs))

    def default_precision(self) -> str:
        """Without ``--precision``: fp32 for the notebook's study (its arithmetic), ``auto``
        for every other: bf16 where the hardware has it. Over 12 epochs and 3+ seeds the
        notebook's four models end within their seed spread in both (README, Performance)."""
        return "fp32" if self.is_notebook_study() else "auto"

    def config(self, seed: int, training: Mapping[str, Any] | None = None) -> TrainConfig:
        """The settings of one seed: the study's, or ``training`` (a group's), the precision
        resolved for the plan's device."""
        from cnnbench.train.engine import TrainConfig, resolve_device
        from cnnbench.train.precision import resolve_precision
        precision = resolve_precision(self.precision or self.default_precision(),
                                      resolve_device(self.device))
        return TrainConfig(seed=seed, precision=precision,
                           **(self.training if training is None else training))

    def configs(self, group: PlanGroup) -> list[TrainConfig]:
        """The group's settings, one per seed."""
        return [self.config(seed, group.training) for seed in self.seeds]

    def out_for(self, group: PlanGroup, seed: int) -> Path:
        """Where one seed's results.json, history.csv and plots of ``group`` go."""
        out = self.out / "runs" / group.label if group.label else self.out
        return out if len(self.seeds) == 1 and self.auto is None else out / f"seed-{seed}"


@dataclass(frozen=True)
class Overrides:
    """What the command line gave (``None``/empty: not given). ``training``: settings given
    as flags, by their settings.py names; ``seeds``: already expanded (``--seeds 3``: 0, 1, 2)."""

    models: tuple[str, ...] = ()
    model_files: tuple[Path, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    auto_seeds: AutoSeeds | None = None  # --seeds auto
    learning_rate: float | None = None
    out: Path = Path("cnnbench-results")
    dataset: str | None = None
    data_dir: Path | None = None
    class_names: Path | None = None
    store: Path | None = None
    force: bool = False
    loggers: tuple[str, ...] = ()
    executor: ExecutorSettings = ExecutorSettings()
    device: str = "auto"
    precision: str | None = None


def read_study(path: Path | None) -> tuple[StudyFile | None, tuple[Path, ...]]:
    """``run``'s positional argument: a study file (or a shipped study's name), or a model
    spec (``cnnbench run my_model.yaml``), returned as a model file."""
    if path is None:
        return None, ()
    if is_model_spec(path):
        return None, (path,)
    return load_study(path), ()


def _models(study: StudyFile | None, o: Overrides) -> list[ModelSpec]:
    if o.models:
        specs = [get_spec(n) for n in o.models]  # unknown names fail here, before any data
    elif study and not o.model_files:
        specs = list(study.specs)
    else:
        specs = [] if o.model_files else [get_spec(n) for n in list_models(NOTEBOOK_MODELS)]
    specs += [get_spec(str(f)) for f in o.model_files]
    unique_names([s.name for s in specs], "the models to train")
    return specs


def _training(study: StudyFile | None, o: Overrides, ablation: bool
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """The study's settings with the flags over them, and where each came from."""
    config: dict[str, Any] = study.train_config_kwargs() if study else {}
    origin = {k: "study file" for k in config}
    for key, value in o.training.items():
        config[key] = value
        origin[key] = SETTING[key].option
    if o.learning_rate is not None:  # the learning rate of whichever optimizer runs
        from cnnbench.train.optim import with_learning_rate
        name = config.setdefault("optimizer", DEFAULT_OPTIMIZER)
        config["optimizer_args"] = with_learning_rate(name, config.get("optimizer_args"),
                                                      o.learning_rate, "--lr")
    if config.get("validation_split") == 0:
        config.pop("validation_split")  # --validation-split 0: the test set validates
    if ablation and not ({"validation_split", "validation_size"} & set(config)) and \
            "validation_split" not in o.training:
        config["validation_split"] = ABLATION_VALIDATION_SPLIT
        origin["validation_split"] = "default for ablations"
    try:
        check_holdout(config, "", split="--validation-split F",
                      size="a study file's validation_size",
                      patience=f"--early-stopping {config.get('early_stopping')}")
    except ConstraintError as e:
        raise UsageError(str(e)) from None
    return config, origin


def _check_executor(ex: ExecutorSettings) -> None:
    if ex.ray_address and ex.kind != "ray":
        raise UsageError(f"--ray-address {ex.ray_address} is for --executor ray")
    if ex.jobs > 1 and ex.kind != "local":
        raise UsageError(f"--jobs {ex.jobs} is for --executor local; on Ray every run is a "
                         f"task of --threads CPUs")


def build_plan(study: StudyFile | None, o: Overrides) -> StudyPlan:
    """The one place a study file and the command line are merged and defaults resolved;
    contradictions are refused here, before any data is loaded."""
    _check_executor(o.executor)
    specs = _models(study, o)
    ablations = study.ablations if study and not (o.models or o.model_files) else ()
    config, origin = _training(study, o, bool(ablations))
    seeds = o.seeds or (study.seeds if study else (DEFAULTS["seed"],))
    origin["seeds"] = "--seed(s)" if o.seeds or o.auto_seeds else \
        "study file" if study else "default"
    auto = _auto_seeds(study, o)
    if auto is not None:
        seeds = tuple(range(auto.min))  # the first round; the rest as comparisons stay open
    if ablations:  # the variants, each once, grouped by their training settings
        from cnnbench.study.ablation import groups
        plan_groups = [PlanGroup(g.label, tuple(v.spec for v in g.variants), g.config)
                       for g in groups(ablations, config)]
    else:
        plan_groups = [PlanGroup("", tuple(specs), config)]
    return StudyPlan(
        groups=tuple(plan_groups), seeds=tuple(seeds), training=config, out=o.out,
        dataset=o.dataset or (study.dataset if study else None),
        data_dir=o.data_dir or (study.data_dir if study else None),
        class_names=o.class_names, store=o.store, force=o.force, loggers=o.loggers,
        executor=o.executor, device=o.device, precision=o.precision,
        ablations=tuple(ablations), claims=tuple(study.claims) if ablations and study else (),
        study=study, origin=origin | ({"precision": "--precision"} if o.precision else {}),
        auto=auto)


def _auto_seeds(study: StudyFile | None, o: Overrides) -> AutoSeeds | None:
    """``--seeds auto`` (its min and max, else the study file's, else the defaults); a study
    file's ``seeds: {auto: true}`` unless the command line names the seeds."""
    if o.seeds:
        return None
    from_file = study.auto_seeds if study else None
    if o.auto_seeds is None:
        return from_file
    if from_file is not None and o.auto_seeds == AutoSeeds():
        return from_file  # a bare --seeds auto keeps the file's min, max and smallest effect
    return o.auto_seeds


def ablation_study(base: str, vary: Sequence[str], design: str) -> StudyFile:
    """``cnnbench ablate BASE --vary F=L1,L2 ...`` as the study file it stands for."""
    from cnnbench.study.studyfile import build_study
    from cnnbench.study.variants import parse_vary
    spec = get_spec(base)
    factors = dict(parse_vary(v, spec) for v in vary)
    name = f"ablate-{spec.name}"
    return build_study({"name": name, "ablations": [{"name": name, "base": base,
                                                     "design": design, "factors": factors}]},
                       "--vary", Path.cwd())  # the command's name is the error's prefix
