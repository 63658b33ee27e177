"""`python -m benchmarks.sst2`: Hydra composes conf/sst2.yaml, and every row's run config exactly as
`python -m distill <the row's overrides>` would; everything below works on typed dataclasses."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf

import distill.__main__  # noqa: F401  (registers the resolvers the recipe files use)
from benchmarks.sst2.config import BenchConfig, Row, check_data_dir, check_rows
from distill.config import from_dict
from distill.errors import run_cli
from distill.run import RunConfig


def compose_rows(bench: BenchConfig, data_dir: Path) -> list[Row]:
    data = [f"data.{split}={data_dir / f'{split}.tsv'}" for split in ("train", "dev", "test")]
    shared = [*bench.base_overrides, *data, *bench.settings.overrides]
    rows = []
    for spec in bench.rows:
        overrides = (*shared, *spec.overrides, *bench.overrides)  # the user's last, so they win
        raw = OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)
        rows.append(Row(spec, from_dict(RunConfig, raw), overrides))
    return rows


def work_dir(bench: BenchConfig, rows: list[Row]) -> Path:
    """One cache folder per mode and set of row overrides, so a changed benchmark never reuses stale rows."""
    key = hashlib.sha256(json.dumps([[row.spec.id, row.spec.kind, row.spec.parent, row.overrides] for row in rows]).encode())
    return Path(bench.work_dir).expanduser() / f"{bench.mode}-{key.hexdigest()[:12]}"


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sst2")
def main(cfg: DictConfig) -> None:
    def job() -> None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw.pop("hydra", None)
        bench = from_dict(BenchConfig, raw)
        check_rows(bench.rows)
        data_dir = check_data_dir(bench.data_dir)
        rows = compose_rows(bench, data_dir)
        command = "python -m benchmarks.sst2 " + " ".join(sys.argv[1:])
        from benchmarks.sst2.run import run  # after the checks: bad input fails before torch loads

        run(bench, rows, work_dir(bench, rows), command=command.strip())

    run_cli(job)


if __name__ == "__main__":
    main()
