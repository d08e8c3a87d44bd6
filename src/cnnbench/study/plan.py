"""What ``cnnbench run`` (or ``ablate``) will do, settled before any data is loaded.

The command line and the study file are merged once, into a :class:`StudyPlan`; everything
after (loading the data, the executor, the driver, the result files) reads the plan, not the
options. No torch here: a plan is built, and refused, before torch is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.model.spec import ModelSpec

if TYPE_CHECKING:
    from cnnbench.analysis.claims import Claim
    from cnnbench.study.variants import Ablation
    from cnnbench.train.engine import TrainConfig


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

    @property
    def specs(self) -> list[ModelSpec]:
        """Every model the plan trains, group after group."""
        return [s for g in self.groups for s in g.specs]

    def is_notebook_study(self) -> bool:
        """The notebook's models, as built in, on MNIST: the study that stays in fp32 unless
        ``--precision`` says otherwise (``default_precision``)."""
        from cnnbench.model.spec import get_spec, list_models

        built_in = {n: get_spec(n) for n in list_models("CNN_MNIST_*")}
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
        from cnnbench.train.fastpath import resolve_precision
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
        return out if len(self.seeds) == 1 else out / f"seed-{seed}"
