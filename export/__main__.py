"""`python -m export model=DIR`: the Hydra entry point. It builds the typed ExportConfig at once."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from alembert.config import from_dict
from alembert.errors import run_app, run_cli
from export.bundle import build_bundle
from export.config import ExportConfig


def to_export_config(raw: dict) -> ExportConfig:
    """`data.task: null` in the YAML means "no task data"."""
    data = raw.get("data")
    if isinstance(data, dict) and data.get("task") is None:
        raw = {**raw, "data": None}
    return from_dict(ExportConfig, raw)


@hydra.main(version_base="1.3", config_path="pkg://alembert.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    def job() -> None:
        config = to_export_config(OmegaConf.to_container(cfg, resolve=True))
        out = build_bundle(config)
        print(f"bundle written to {out}")

    run_cli(job)


if __name__ == "__main__":
    run_app(main)
