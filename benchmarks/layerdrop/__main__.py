"""`python -m benchmarks.layerdrop`: accuracy against depth with and without LayerDrop (alembert/conf/layerdrop.yaml;
see benchmarks/layerdrop/__init__.py)."""

import shlex
import sys

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from alembert.errors import run_app
from alembert.resolvers import register_resolvers
from benchmarks.layerdrop import run_depth_benchmark

register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use


def compose_run(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="layerdrop")
def main(cfg: DictConfig) -> None:
    command = ("python -m benchmarks.layerdrop " + shlex.join(sys.argv[1:])).strip()
    run_depth_benchmark(OmegaConf.to_container(cfg, resolve=True), "benchmarks.layerdrop", compose_run, command)


if __name__ == "__main__":
    run_app(main)
