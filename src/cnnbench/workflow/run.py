"""A planned study, end to end: the data, the settings resolved and said, every seed's runs
through the store, each seed's result files, then the report.

The work reports what happens to a :class:`RunView` (the CLI's ``ConsoleView`` prints it); it
never prints: ``run_study(build_plan(study, overrides), view)``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cnnbench.data.datasets import Dataset
from cnnbench.data.resolve import open_dataset
from cnnbench.store.run_store import RunStore
from cnnbench.study.plan import PlanGroup, StudyPlan
from cnnbench.study.writeback import Outcome
from cnnbench.train.callbacks import Callback
from cnnbench.train.engine import TrainConfig

if TYPE_CHECKING:  # annotations only (the code imports these where it uses them)
    import torch

    from cnnbench.analysis.claims import Claim
    from cnnbench.study.executors import Executor
    from cnnbench.study.variants import Ablation


@dataclass(frozen=True)
class SeedFiles:
    """One seed's results of one group, as written: where they went and what they hold."""

    seed: int
    outcomes: list[Outcome]
    rows: list[dict[str, Any]]  # for the summary table
    results: Path
    history: Path
    plots: list[Path]


@dataclass(frozen=True)
class StudyDone:
    run_ids: list[str]
    report: dict[str, Path]
    conclusions: list[str]


class RunView(Protocol):
    """Where a study's events go (the CLI prints them)."""

    def note(self, line: str) -> None: ...  # a line about the study (settings, reuse)
    def data(self, line: str) -> None: ...  # where the data came from (stderr in a terminal)
    def run_starts(self, title: str) -> list[Callback]: ...  # progress callbacks of one run
    def seed_done(self, group: PlanGroup, files: SeedFiles, store: RunStore) -> None: ...


def check_writable(out: Path) -> None:
    """Fail before training, not after, when the results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".cnnbench-write-test-{os.getpid()}"  # two processes may share out
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write results to {out}: {e.strerror}") from e


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def settings_line(plan: StudyPlan, precision: str, n_train: int, n_fit: int,
                  n_test: int) -> str:
    """The settings that differ between kinds of study, each with where it came from, so no
    default is guessed: precision, validation source, epochs, training images."""
    first = plan.config(plan.seeds[0])
    o = plan.origin

    def said(key: str, default: str = "default") -> str:
        return o.get(key, default)
    asked = plan.precision or plan.default_precision()
    why = said("precision", "default for the notebook's study" if plan.is_notebook_study()
               else "default: bf16 where the hardware has it")
    validation = (f"the last {n_train - n_fit} training images ({said('validation_split')})"
                  if first.holdout else f"the {n_test} test images, every epoch (default)")
    images = (f"the first {n_train} ({said('train_limit')})" if first.train_limit
              else f"all {n_train} (default)")
    return (f"Settings: precision {precision}"
            + (f" (asked: {asked}" if asked != precision else " (")
            + f"{', ' if asked != precision else ''}{why}); validation on {validation}; "
            f"{first.epochs} epochs ({said('epochs')}); training images: {images}")


def _executor(plan: StudyPlan, log: Callable[[str], None]) -> tuple[Any, str]:
    import torch

    from cnnbench.study.executors import LocalExecutor, ProcessExecutor, RayExecutor
    ex = plan.executor
    if ex.kind == "ray":
        ray = RayExecutor(ex.ray_address, threads=ex.threads or 1, log=log)
        return ray, f"on Ray, {ray.threads} thread(s) a run"
    if ex.jobs > 1:
        n = ex.threads or max(1, torch.get_num_threads() // ex.jobs)
        return ProcessExecutor(ex.jobs, n, log=log), f"{ex.jobs} runs at once, {n} thread(s) each"
    if ex.threads:
        torch.set_num_threads(ex.threads)
    return LocalExecutor(), f"{torch.get_num_threads()} threads"


def prepare(plan: StudyPlan) -> RunStore:
    """Everything that can fail before the data is loaded: the output folder, the store, the
    loggers' and Ray's packages."""
    check_writable(plan.out)
    store = RunStore(plan.store)  # an unwritable store fails here, before any training
    from cnnbench.study.loggers import check_loggers
    check_loggers(plan.loggers)  # and so does a logger whose package is missing
    if plan.executor.kind == "ray":
        from cnnbench.study.executors import import_ray
        import_ray()
    return store


def data_doc(dataset: Dataset, n_train: int) -> dict[str, Any]:
    """results.json's "dataset"."""
    return {"name": dataset.info.name, "source": dataset.source,
            "fingerprint": dataset.fingerprint(), "sha256": dataset.hashes(),
            "classes": list(dataset.info.classes), "train_images": n_train,
            "test_images": len(dataset.x_test), "class_counts": dataset.class_counts()}


@dataclass(frozen=True)
class _Ready:
    """What the study made of its plan: the store, the data, where the runs train, and what
    every seed's result files record beside the runs."""

    plan: StudyPlan
    store: RunStore
    dataset: Dataset
    device: torch.device
    executor: Executor
    env: dict[str, Any]
    data_doc: dict[str, Any]


def _load(plan: StudyPlan, store: RunStore, view: RunView) -> _Ready:
    from cnnbench.model.spec import check_classes, check_input_shape
    from cnnbench.study.environment import environment
    from cnnbench.train.engine import resolve_device
    from cnnbench.train.precision import resolve_precision

    dataset = open_dataset(plan.dataset, plan.data_dir, plan.class_names, log=view.data)
    image_shape = (*dataset.x_train.shape[1:], 1)
    for spec in plan.specs:  # fail before any training time is spent
        check_input_shape(spec, image_shape)
        check_classes(spec, dataset.num_classes)
    device = resolve_device(plan.device)
    precision = resolve_precision(plan.precision or plan.default_precision(), device)
    plan = replace(plan, precision=precision)
    env = environment(device)  # before any worker: they read the GEMM choice it caches
    executor, threads = _executor(plan, view.note)
    first = plan.config(plan.seeds[0])
    n_train = min(len(dataset.x_train), first.train_limit or len(dataset.x_train))
    from cnnbench.data.holdout import split_at
    n_fit = split_at(n_train, first.validation_split, first.validation_size)
    view.note(settings_line(plan, precision, n_train, n_fit, len(dataset.x_test)))
    what = f"{dataset.info.name}, {first.optimizer_label()}, {device}, {precision}, {threads}"
    if first.holdout:
        view.note(f"Train on {n_fit} samples, validate on the last {n_train - n_fit} of them; "
                  f"the {len(dataset.x_test)} test images are evaluated once, at the end "
                  f"({what})")
    else:
        view.note(f"Train on {n_train} samples, validate on {len(dataset.x_test)} samples "
                  f"({what})")
    if plan.ablations and plan.auto:
        view.note(f"Ablations: {', '.join(a.name for a in plan.ablations)}: "
                  f"{len(plan.specs)} distinct variants x {plan.auto.min} to {plan.auto.max} "
                  f"seeds (seeds auto)")
    elif plan.ablations:
        view.note(f"Ablations: {', '.join(a.name for a in plan.ablations)}: "
                  f"{len(plan.specs)} distinct variants x {len(plan.seeds)} seed(s) = "
                  f"{len(plan.specs) * len(plan.seeds)} runs")
    if executor.remote:  # the runs' environment, not this driver's
        env |= {"executor": executor.name, "threads": executor.threads}
    return _Ready(plan, store, dataset, device, executor, env, data_doc(dataset, n_train))


def _seeds(ready: _Ready, groups: Sequence[PlanGroup], view: RunView,
           expected_seconds: Mapping[str, float] | None = None
           ) -> Iterator[tuple[PlanGroup, TrainConfig, list[Outcome]]]:
    """Each group's runs of each seed through the store: (the group, the seed's config, its
    outcomes), group after group, seed after seed. A remote executor takes every group's and
    seed's jobs at once (``driver.run_studies``: no worker idles at a group's end), the longest
    expected first where ``expected_seconds`` has an estimate."""
    from cnnbench.study.driver import run_studies
    from cnnbench.study.runner import StudyRunner
    plan = ready.plan
    work = [(group, config) for group in groups for config in plan.configs(group)]

    def callbacks_for(seed: int) -> Callable[[Any], list[Callback]]:
        return lambda spec: view.run_starts(spec.name if len(plan.seeds) == 1
                                            else f"{spec.name}, seed {seed}")

    study = None
    if plan.ablations:  # kept in each run's config.json: `report` rebuilds What matters
        from cnnbench.study.studydoc import study_document
        study = study_document(*_ablation(ready))
    runners = [StudyRunner(ready.store, ready.dataset, config, ready.device, force=plan.force,
                           log=view.note, callbacks=callbacks_for(config.seed),
                           loggers=plan.loggers, executor=ready.executor, study=study)
               for _, config in work]
    if ready.executor.remote:
        outcomes = run_studies([(r, g.specs) for r, (g, _) in zip(runners, work, strict=True)],
                               expected_seconds)
        yield from ((g, c, o) for (g, c), o in zip(work, outcomes, strict=True))
    else:
        for (group, config), runner in zip(work, runners, strict=True):
            yield group, config, runner.run(group.specs)


def _seed_files(ready: _Ready, group: PlanGroup, config: TrainConfig,
                outcomes: list[Outcome]) -> SeedFiles:
    """One seed's results.json, history.csv and plots, from the store's records."""
    from cnnbench.atomic import output_path
    from cnnbench.report.figures import plot_history
    from cnnbench.report.files import results_document, write_results
    from cnnbench.report.notebook_table import notebook_scope
    out = ready.plan.out_for(group, config.seed)
    records = [o.record for o in outcomes]
    # The notebook's curves behind a plot only for its models at its settings.
    scope = notebook_scope(records, ready.dataset.info.name, len(ready.dataset.x_train))
    json_path, csv_path = write_results(out, results_document(records, config, ready.data_doc,
                                                              ready.env))
    plots = [plot_history(r.spec.name, r.history, output_path(out, r.spec.name, ".png"),
                          scope.reference.get(r.model, {}).get("history"))
             for r in records]
    rows = [{"spec": r.spec, "test_loss": r.test_loss, "test_accuracy": r.test_accuracy,
             "seconds": r.train_seconds, "status": r.status} for r in records]
    return SeedFiles(config.seed, outcomes, rows, json_path, csv_path, plots)


def run_study(plan: StudyPlan, view: RunView) -> StudyDone:
    """Train the plan's runs (reusing what the store holds) and write every result file and
    the report. SIGTERM ends it as Ctrl-C does (KeyboardInterrupt): recorded, resumable."""
    store = prepare(plan)
    ready = _load(plan, store, view)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    run_ids: list[str] = []
    try:
        if plan.auto is not None:
            ready, run_ids, sequential = _auto_rounds(ready, view)
            return _report(ready, run_ids, sequential)
        run_ids = _train(ready, view)
    finally:
        ready.executor.close()
    return _report(ready, run_ids)


def _train(ready: _Ready, view: RunView) -> list[str]:
    """Every seed of every group of the plan: its runs through the store, its files written."""
    run_ids = []
    for group, config, outcomes in _seeds(ready, ready.plan.groups, view):
        view.seed_done(group, _seed_files(ready, group, config, outcomes), ready.store)
        run_ids += [o.run_id for o in outcomes]
    return run_ids


def _auto_rounds(ready: _Ready, view: RunView) -> tuple[_Ready, list[str], list[str]]:
    """``--seeds auto``: a round of seeds for the models of every open comparison, then a
    look, until each comparison is decided. Rounds are ordinary runs in the store, so a study
    run again reuses every finished seed and goes on from there."""
    import math

    from cnnbench.analysis.diagnosis import detect_stuck
    from cnnbench.study.autoseeds import (
        design_of,
        lines,
        look_line,
        next_round,
        pairs,
        states,
    )
    plan = ready.plan
    assert plan.auto is not None
    design = design_of(plan.auto)
    comparisons = pairs([s.name for s in plan.specs], plan.ablations, plan.training)
    accuracy: dict[str, dict[int, float]] = {}
    stuck: dict[str, dict[int, bool]] = {}
    y_test, classes = ready.dataset.y_test, ready.dataset.num_classes
    seconds: dict[str, list[float]] = {}  # each model's runs' epoch seconds: longest first
    run_ids: list[str] = []
    seeds, models, done = tuple(range(plan.auto.min)), {s.name for s in plan.specs}, 0
    while seeds:
        which = f"Seed {seeds[0]}" if len(seeds) == 1 else f"Seeds {seeds[0]}-{seeds[-1]}"
        view.note(f"{which} for {len(models)} model(s) (seeds auto: a round, then a look)")
        ready = replace(ready, plan=replace(plan, seeds=seeds))
        chosen = [replace(g, specs=tuple(s for s in g.specs if s.name in models))
                  for g in plan.groups]
        expected = {m: sum(t) / len(t) for m, t in seconds.items()}
        for group, config, outcomes in _seeds(ready, [g for g in chosen if g.specs], view,
                                              expected):
            view.seed_done(group, _seed_files(ready, group, config, outcomes), ready.store)
            run_ids += [o.run_id for o in outcomes]
            for o in outcomes:
                name, acc = o.record.spec.name, o.record.test_accuracy
                accuracy.setdefault(name, {})[config.seed] = (
                    100 * acc if acc is not None else math.nan)
                stuck.setdefault(name, {})[config.seed] = (
                    acc is not None and detect_stuck(o.record, y_test, classes) is not None)
                seconds.setdefault(name, []).append(o.record.train_seconds)
        done = seeds[-1] + 1
        now = states(comparisons, accuracy, design, stuck=stuck)
        view.note(look_line(now, done))
        seeds, models = next_round(now, design, done)
    ready = replace(ready, plan=replace(plan, seeds=tuple(range(done))))
    account = lines(states(comparisons, accuracy, design, final=True, stuck=stuck), design)
    for line in account:
        view.note(line)
    return ready, run_ids, account


def _report(ready: _Ready, run_ids: Sequence[str],
            sequential: Sequence[str] = ()) -> StudyDone:
    from cnnbench.report.build import write_study_report
    plan = ready.plan
    ablation = _ablation(ready) if plan.ablations else None
    paths, lines = write_study_report(ready.store, run_ids, ready.dataset, plan.out,
                                      ablation=ablation, sequential=sequential)
    return StudyDone(list(run_ids), paths, lines)


def _ablation(ready: _Ready) -> tuple[Sequence[Ablation], Sequence[Claim],
                                      dict[tuple[str, str, int], str]]:
    """The plan's ablations, claims and the run id of each (ablation, variant, seed)."""
    from cnnbench.study.ablation import run_map
    plan = ready.plan
    assert plan.precision is not None  # _load resolved it for the device
    return (plan.ablations, plan.claims,
            run_map(plan.ablations, plan.training, plan.seeds, plan.precision,
                    ready.dataset.fingerprint()))
