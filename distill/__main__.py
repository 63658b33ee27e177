"""`python -m distill`: the Hydra entry point. It converts the composed config to typed dataclasses at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from alembert.config import from_dict
from alembert.errors import run_app, run_cli
from alembert.resolvers import register_resolvers
from pipeline.run import RunConfig, run


register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)

    def job() -> None:
        config = from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))
        run(config, out_dir)

    def cleanup() -> None:
        # A failed run leaves nothing behind, except checkpoints a later `train.resume=true` needs.
        if not (out_dir / "checkpoints").exists():
            shutil.rmtree(out_dir, ignore_errors=True)

    run_cli(job, cleanup=cleanup)


if __name__ == "__main__":
    run_app(main)
