"""`python -m benchmarks.recipes`: the recipes table of conf/recipes.yaml (see benchmarks/recipes/__init__.py)."""

import hydra
from omegaconf import DictConfig

from benchmarks.table.cli import run_benchmark


@hydra.main(version_base="1.3", config_path="../../conf", config_name="recipes")
def main(cfg: DictConfig) -> None:
    run_benchmark(cfg, "benchmarks.recipes")


if __name__ == "__main__":
    main()
