"""One sweep worker: claim trials until the study holds `n_trials` of them, run each, and tell Optuna.

Workers started with the same command against the same storage cooperate: each claim (count, then create a
trial) happens under a cross-process lock, so `n_trials` is a global total over every worker and every resumed
run. Completed, pruned, running and waiting (retried) trials count; failed ones do not, so a trial a dead worker
left behind is run again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from alembert.errors import AlembertError, fail
from pipeline.run import RunConfig
from pipeline.sweep.figures import ExportPlan, PRIMARY, measure_trial
from pipeline.sweep.settings import SweepConfig
from pipeline.sweep.space import ParamSpec, overrides_for, sample, split_params
from pipeline.sweep.storage import Lock

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Compose = Callable[[tuple[str, ...]], RunConfig]  # python -m distill overrides -> the run's typed config


@dataclass(frozen=True)
class Trials:
    """What every trial of a sweep shares: the space, how configs are composed, and where trials write."""

    sweep: SweepConfig
    space: tuple[ParamSpec, ...]
    base: dict  # the composed base config, as plain data: which keys exist
    compose: Compose
    out_dir: Path
    prune: bool  # report dev evaluations to the pruner


@dataclass
class Worker:
    """This process's view of the sweep: the lock, the count of its own failures, the last error."""

    study: optuna.Study
    trials: Trials
    lock: Lock
    heartbeat: bool
    failures: int = 0
    last_error: str = ""
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def release(self) -> None:
        """Leave the claim lock (the trial now exists in the storage); a no-op when it is not held."""
        self.held.close()


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def trial_overrides(trials: Trials, params: dict) -> tuple[tuple[str, ...], dict]:
    """(the full python -m distill overrides of a trial, its sweep-level parameters)."""
    run_params, sweep_params = split_params(params)
    return tuple(trials.sweep.base_overrides) + overrides_for(run_params, trials.base), sweep_params


def export_plan(sweep: SweepConfig, sweep_params: dict) -> ExportPlan | None:
    if not sweep.export.enabled:
        return None
    return ExportPlan(str(sweep_params.get("export.variant", sweep.export.variant)), dict(sweep.export.config))


def pruning_reporter(trial: optuna.Trial) -> Callable[[int, dict[str, float]], None]:
    """Report the dev metric at each evaluation; stop the run through optuna.TrialPruned when the pruner says so."""
    def report(step: int, metrics: dict[str, float]) -> None:
        name = next(m for m in PRIMARY if m in metrics)
        trial.report(metrics[name], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"dev {name}={metrics[name]:.4f} at step {step}")

    return report


def objective(worker: Worker) -> Callable[[optuna.Trial], list[float]]:
    trials = worker.trials

    def run_trial(trial: optuna.Trial) -> list[float]:
        worker.release()
        overrides, sweep_params = trial_overrides(trials, sample(trial, trials.space))
        trial.set_user_attr("overrides", list(overrides))
        trial_dir = trials.out_dir / f"trial_{trial.number}"
        trial.set_user_attr("trial_dir", str(trial_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        tqdm.write(f"trial {trial.number}: python -m distill {' '.join(overrides)}")
        try:
            figures = measure_trial(trials.compose(overrides), trial_dir, report=pruning_reporter(trial) if trials.prune else None,
                                    export=export_plan(trials.sweep, sweep_params))
        except AlembertError as err:
            worker.last_error = str(err)
            raise
        trial.set_user_attr("figures", figures)
        return [figures[spec.metric] for spec in trials.sweep.objectives]

    return run_trial


def claim_and_run(worker: Worker) -> bool:
    """Under the lock: fail stale trials, and if the budget allows, start one trial. False when none was started."""
    sweep = worker.trials.sweep
    worker.held.enter_context(worker.lock())  # released by the trial as soon as it exists, or below
    try:
        if worker.heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(worker.study)  # a dead worker's trial: failed, retried as a waiting copy
        waiting = worker.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if counted(worker.study) >= sweep.n_trials and not waiting:  # a waiting (retried) trial is already counted
            return False
        worker.study.optimize(objective(worker), n_trials=1, catch=(AlembertError,), gc_after_trial=True)
    finally:
        worker.release()
    worker.failures = worker.failures + 1 if worker.last_error else 0  # last_error: this worker's trial failed
    if worker.failures >= sweep.max_failures:
        raise fail(f"{worker.failures} trials in a row failed, the last with: {worker.last_error}",
                   "fix the space or base overrides (or raise max_failures)")
    worker.last_error = ""
    return True


def others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def run_worker(worker: Worker) -> None:
    """Claim and run trials until the budget is spent (or `timeout` passes); with heartbeats, then wait for the
    other workers' trials, so that one of ours can be retried here if its worker died."""
    sweep, start = worker.trials.sweep, time.monotonic()
    finished = len(worker.study.get_trials(deepcopy=False, states=FINISHED))
    with tqdm(total=sweep.n_trials, initial=finished, desc=f"sweep {sweep.study_name}", unit="trial") as bar:
        while sweep.timeout is None or time.monotonic() - start < sweep.timeout:
            started = claim_and_run(worker)
            bar.n = len(worker.study.get_trials(deepcopy=False, states=FINISHED))
            bar.refresh()
            if started:
                continue
            if not (worker.heartbeat and others_running(worker.study)):
                return
            time.sleep(sweep.poll_s)
