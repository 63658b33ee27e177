"""`python -m benchmarks.sst2`: the headline table of alembert/conf/sst2.yaml (see benchmarks/sst2/__init__.py)."""

import hydra
from omegaconf import DictConfig

from benchmarks.table.cli import run_benchmark
from alembert.errors import run_app


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="sst2")
def main(cfg: DictConfig) -> None:
    run_benchmark(cfg, "benchmarks.sst2")


if __name__ == "__main__":
    run_app(main)
