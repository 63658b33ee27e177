"""The sweep as one plain function over typed inputs: check everything, open the study, work, report."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from alembert.errors import fail
from pipeline.sweep.driver import Compose, Trials, Worker, run_worker
from pipeline.sweep.figures import PRIMARY, check_objectives
from pipeline.sweep.settings import SweepConfig
from pipeline.sweep.space import ParamSpec, check_keys, hydra_value, overrides_for, parse_space, split_params
from pipeline.sweep.storage import claim_lock, open_storage, open_study, shown, storage_url, supports_heartbeat
from pipeline.sweep import results

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    "hyperband": optuna.pruners.HyperbandPruner,
}


def out_dir_of(sweep: SweepConfig) -> Path:
    return Path(sweep.out_dir or f"sweeps/{sweep.study_name}").expanduser()


def _pick(registry: dict, name: str, what: str):
    if name not in registry:
        raise fail(f"{what}={name} is unknown", f"use one of {', '.join(registry)}")
    return registry[name]


def check_pruning(sweep: SweepConfig) -> bool:
    """True when trials report dev evaluations to the pruner: one objective that is the dev metric, maximized."""
    _pick(PRUNERS, sweep.pruner, "pruner")
    if sweep.pruner == "none":
        return False
    objective = sweep.objectives[0]
    if len(sweep.objectives) > 1:
        raise fail(f"pruner={sweep.pruner} needs a single objective (Optuna cannot prune multi-objective trials)", "set pruner=none")
    if objective.metric.removeprefix("dev_") not in PRIMARY or objective.direction != "maximize":
        raise fail(f"pruner={sweep.pruner} prunes on the dev metric, but the objective is {objective.metric} ({objective.direction})",
                   "use objective dev_accuracy (maximize), or pruner=none")
    return True


def dry_compose(space: tuple[ParamSpec, ...], base: dict, compose: Compose, base_overrides: tuple[str, ...]) -> None:
    """Compose the run config once per choice and range end, so a bad value fails before any trial runs."""
    for spec in space:
        values = spec.choices if spec.type == "categorical" else (spec.low, spec.high)
        for value in values:
            run_params, _ = split_params({spec.key: hydra_value(value) if isinstance(value, (list, tuple)) else value})
            if run_params:
                compose(tuple(base_overrides) + overrides_for(run_params, base))


def prepare(sweep: SweepConfig, base: dict, compose: Compose) -> Trials:
    space = parse_space(sweep.space)
    check_keys(space, base, sweep.base_overrides)
    check_enqueued(sweep.enqueue, space)
    check_objectives(tuple(s.metric for s in sweep.objectives), sweep.export.enabled)
    _pick(SAMPLERS, sweep.sampler, "sampler")
    prune = check_pruning(sweep)
    dry_compose(space, base, compose, sweep.base_overrides)
    return Trials(sweep, space, base, compose, out_dir_of(sweep).resolve(), prune)


def check_enqueued(points: tuple[dict, ...], space: tuple[ParamSpec, ...]) -> None:
    """An enqueued point names every space key, nothing else, and only values the space can sample."""
    specs = {spec.key: spec for spec in space}
    for point in points:
        if set(point) != set(specs):
            raise fail(f"enqueued point {point} does not name exactly the space's keys",
                       f"give a value for each of {', '.join(specs)}")
        for key, value in point.items():
            spec = specs[key]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            inside = value in spec.choices if spec.type == "categorical" else numeric and spec.low <= value <= spec.high
            if not inside:
                raise fail(f"enqueued {key}={value} is outside the space", "use a value the space entry can sample")


def run_sweep(sweep: SweepConfig, base: dict, compose: Compose) -> optuna.Study:
    """Check the sweep, run this worker's share of trials, then write the results table and plots."""
    trials = prepare(sweep, base, compose)
    created = not trials.out_dir.exists()
    trials.out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(sweep.storage, trials.out_dir, sweep.study_name)
    try:
        lock = claim_lock(url, sweep.study_name)
        with lock():  # workers starting together would race to create the schema and the study
            storage = open_storage(url, sweep.heartbeat)
            study = open_study(storage, url, sweep.study_name, tuple(s.metric for s in sweep.objectives),
                               tuple(s.direction for s in sweep.objectives), SAMPLERS[sweep.sampler](sweep.seed),
                               PRUNERS[sweep.pruner]())
            for params in sweep.enqueue:  # under the lock, and skipped once in the study: each runs exactly once
                study.enqueue_trial(params, skip_if_exists=True)
    except BaseException:
        if created:  # a storage that cannot be opened leaves no empty sweep folder behind
            shutil.rmtree(trials.out_dir, ignore_errors=True)
        raise
    tqdm.write(f"sweep {sweep.study_name}: storage {shown(url)}, trials in {trials.out_dir}")
    run_worker(Worker(study, trials, lock, supports_heartbeat(storage)))
    print(results.save_results(study, sweep, trials.out_dir))
    for name, where in results.save_plots(study, sweep, trials.out_dir).items():
        print(f"plot {name}: {where}")
    if sweep.export_best:
        trial = results.chosen_trial(study, sweep)
        bundle = results.export_best(trial, compose(tuple(trial.user_attrs["overrides"])), sweep, trials.out_dir / "best-onnx")
        print(f"trial {trial.number} exported to {bundle}")
    return study
