"""`python -m benchmarks.recipes`: the recipes table of alembert/conf/recipes.yaml (see benchmarks/recipes/__init__.py)."""

import hydra
from omegaconf import DictConfig

from benchmarks.table.cli import run_benchmark
from alembert.errors import run_app


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="recipes")
def main(cfg: DictConfig) -> None:
    run_benchmark(cfg, "benchmarks.recipes")


if __name__ == "__main__":
    run_app(main)
