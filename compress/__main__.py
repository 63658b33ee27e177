"""`python -m compress`: the Hydra entry point; it turns the composed config into a CompressConfig at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from compress.cli import CompressConfig, run
from distill.recovery import kd_recovery  # an entry point may wire stages together
from alembert.config import from_dict
from alembert.errors import run_app, run_cli


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="compress")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)

    def job() -> None:
        run(from_dict(CompressConfig, OmegaConf.to_container(cfg, resolve=True)), out_dir, distiller=kd_recovery)

    run_cli(job, cleanup=lambda: shutil.rmtree(out_dir, ignore_errors=True))


if __name__ == "__main__":
    run_app(main)
