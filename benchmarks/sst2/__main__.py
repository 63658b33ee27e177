"""`python -m benchmarks.sst2`: the headline table of conf/sst2.yaml (see benchmarks/sst2/__init__.py)."""

import hydra
from omegaconf import DictConfig

from benchmarks.table.cli import run_benchmark


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sst2")
def main(cfg: DictConfig) -> None:
    run_benchmark(cfg, "benchmarks.sst2")


if __name__ == "__main__":
    main()
