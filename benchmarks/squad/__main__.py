"""`python -m benchmarks.squad`: the SQuAD v1.1 QA table of alembert/conf/squad.yaml (see benchmarks/squad/__init__.py)."""

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from benchmarks.table.cli import run_benchmark
from alembert.errors import run_app
from alembert.resolvers import register_resolvers

register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use


def compose_run(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="squad")
def main(cfg: DictConfig) -> None:
    run_benchmark(OmegaConf.to_container(cfg, resolve=True), "benchmarks.squad", compose_run)


if __name__ == "__main__":
    run_app(main)
