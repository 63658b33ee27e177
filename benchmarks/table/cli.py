"""Every row benchmark's first step: the composed alembert/conf/<name>.yaml becomes typed rows, each composed
exactly as `python -m distill <the row's overrides>` would compose it; everything below is typed.

Hydra stays in the benchmarks' __main__ files: they hand over the composed config as plain data and a
`compose(overrides) -> dict` function for the rows.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

from collections.abc import Callable

from benchmarks.table.config import BenchConfig, Row, check_data_dir, check_rows, split_path
from alembert.config import from_dict
from alembert.errors import run_cli
from pipeline.run import RunConfig


def data_overrides(bench: BenchConfig) -> list[str]:
    """The mode's split files from data_dir (split_file names them), checked first; nothing when the mode names
    its own task."""
    if not bench.settings.data_files:
        return []
    data_dir = check_data_dir(bench)
    return ["data.task=files", *(f"data.{split}={data_dir / split_path(bench, split)}" for split in bench.settings.splits)]


Compose = Callable[[list[str]], dict]  # python -m distill overrides -> the resolved config as plain data


def compose_rows(bench: BenchConfig, compose: Compose) -> list[Row]:
    shared = [*bench.base_overrides, *data_overrides(bench), *bench.settings.overrides]
    rows, keys = [], {}
    for spec in bench.active_rows:
        overrides = (*shared, *spec.overrides, *bench.overrides)  # the user's last, so they win
        raw = compose(list(overrides))
        # the resolved settings, not only the overrides: a row whose defaults changed (say bucketing) is trained anew
        identity = json.dumps([spec.kind, raw, keys.get(spec.parent)], sort_keys=True, default=str)
        keys[spec.id] = hashlib.sha256(identity.encode()).hexdigest()[:12]
        rows.append(Row(spec, from_dict(RunConfig, raw), overrides, keys[spec.id]))
    return rows


def run_benchmark(raw: dict, module: str, compose: Compose) -> None:
    """Check everything, then train, measure and report; bad input is one line, not a traceback."""
    def job() -> None:
        bench = from_dict(BenchConfig, {key: value for key, value in raw.items() if key != "hydra"})
        check_rows(bench.active_rows)
        rows = compose_rows(bench, compose)
        command = f"python -m {module} " + shlex.join(sys.argv[1:])  # quoted, so it can be pasted back
        from benchmarks.table.run import run  # after the checks: bad input fails before torch loads

        run(bench, rows, Path(bench.work_dir).expanduser(), command=command.strip())

    run_cli(job)
