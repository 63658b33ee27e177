"""The typed sweep config that alembert/conf/sweep/*.yaml is converted into (by alembert.config.from_dict)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from alembert.config import bounded
from alembert.errors import fail

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a figure of the trial (see pipeline.sweep.figures) and whether larger is better."""

    metric: str
    direction: str = "maximize"

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise fail(f"objective {self.metric} has direction '{self.direction}'", f"use one of {', '.join(DIRECTIONS)}")


@dataclass(frozen=True)
class ExportSettings:
    """ONNX export of every trial's final model, for onnx_* figures; off by default because it costs time.

    `variant` is the one variant built and measured (a space entry `export.variant` samples it instead);
    `config` holds further export.config.ExportConfig fields, e.g. {latency: {runs: 10}, parity: {samples: 8}}.
    """

    enabled: bool = False
    variant: str = "optimized"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatSettings:
    """A worker that dies mid-trial: after `grace_period` s without a heartbeat its trial is failed and retried.

    Optuna records heartbeats for database (RDB) storages only; with journal storage these settings are unused.
    """

    interval: int = bounded(30, low=1)
    grace_period: int = bounded(120, low=1)
    max_retry: int = bounded(2, low=0)


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep. `space` maps config keys to parameter specs (pipeline.sweep.space.ParamSpec fields)."""

    study_name: str
    objectives: tuple[ObjectiveSpec, ...]
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_trials: int = bounded(10, low=1)  # a total across every worker and every resumed run
    storage: str | None = None  # null: sqlite:///<out_dir>/<study_name>.db; an SQLAlchemy URL; journal:/path/file.log
    sampler: str = "tpe"  # tpe | nsga2 | random
    pruner: str = "none"  # median | hyperband | none (single objective only)
    base_overrides: tuple[str, ...] = ()  # python -m distill overrides shared by every trial
    timeout: float | None = bounded(None, above=0.0)  # seconds after which this worker starts no new trial
    seed: int | None = None  # sampler seed; leave null with several workers, or they sample the same trials
    out_dir: str | None = None  # null: sweeps/<study_name>
    export: ExportSettings = ExportSettings()
    export_best: bool = False  # export the best (or `export_trial`) trial's model to <out_dir>/best-onnx
    export_trial: int | None = None  # which Pareto trial export_best takes; null: the best by the first objective
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    max_failures: int = bounded(3, low=1)  # this many failed trials in a row stop the worker
    poll_s: float = bounded(5.0, above=0.0)  # how often a worker with nothing left to claim checks on the others' trials
    enqueue: tuple[dict[str, Any], ...] = ()  # points of the space run first (e.g. today's defaults, as a reference)

    def __post_init__(self):
        if not self.objectives:
            raise fail(f"sweep {self.study_name} has no objectives", "add objectives: [{metric: dev_accuracy, direction: maximize}]")
        if self.n_trials < 1:
            raise fail(f"n_trials={self.n_trials} is not valid", "use n_trials >= 1")


SWEEP_KEYS = frozenset(f.name for f in fields(SweepConfig))
