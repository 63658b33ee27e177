"""The one Hydra-facing step of every row benchmark: alembert/conf/<name>.yaml becomes typed rows, each composed
exactly as `python -m distill <the row's overrides>` would compose it; everything below is typed."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from alembert.resolvers import register_resolvers
register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use
from benchmarks.table.config import BenchConfig, Row, check_data_dir, check_rows
from alembert.config import from_dict
from alembert.errors import run_cli
from pipeline.run import RunConfig


def data_overrides(bench: BenchConfig) -> list[str]:
    """SST-2's three files from data_dir, checked first; nothing when the mode names its own task."""
    if not bench.settings.data_files:
        return []
    data_dir = check_data_dir(bench.data_dir)
    return ["data.task=files", *(f"data.{split}={data_dir / f'{split}.tsv'}" for split in ("train", "dev", "test"))]


def compose_rows(bench: BenchConfig) -> list[Row]:
    shared = [*bench.base_overrides, *data_overrides(bench), *bench.settings.overrides]
    rows, keys = [], {}
    for spec in bench.rows:
        overrides = (*shared, *spec.overrides, *bench.overrides)  # the user's last, so they win
        raw = OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)
        identity = json.dumps([spec.kind, list(overrides), keys.get(spec.parent)])
        keys[spec.id] = hashlib.sha256(identity.encode()).hexdigest()[:12]
        rows.append(Row(spec, from_dict(RunConfig, raw), overrides, keys[spec.id]))
    return rows


def run_benchmark(cfg: DictConfig, module: str) -> None:
    """Check everything, then train, measure and report; bad input is one line, not a traceback."""
    def job() -> None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw.pop("hydra", None)
        bench = from_dict(BenchConfig, raw)
        check_rows(bench.rows)
        rows = compose_rows(bench)
        command = f"python -m {module} " + shlex.join(sys.argv[1:])  # quoted, so it can be pasted back
        from benchmarks.table.run import run  # after the checks: bad input fails before torch loads

        run(bench, rows, Path(bench.work_dir).expanduser(), command=command.strip())

    run_cli(job)
