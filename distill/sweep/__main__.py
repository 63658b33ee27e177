"""`python -m distill.sweep sweep=NAME [overrides...]`: the only part of the sweep that touches Hydra/OmegaConf.

`sweep=NAME` picks alembert/conf/sweep/NAME.yaml (`sweep=path/to/file.yaml` a file of your own). An override whose first key is a sweep setting (n_trials=20,
storage=..., pruner=median, export.enabled=true, ...) changes the sweep; any other (teacher=/path, data.max_length=64)
is added to the sweep's base overrides of every trial. Each trial's config is composed by Hydra from
alembert/conf/config.yaml exactly as `python -m distill <base overrides> <trial overrides>` would compose it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import optuna

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alembert.config import from_dict
from alembert.errors import fail, run_cli
from alembert.resolvers import register_resolvers
from pipeline.sweep.settings import SWEEP_KEYS, SweepConfig

from alembert.conf import CONF_DIR
SWEEP_DIR = CONF_DIR / "sweep"
register_resolvers(OmegaConf.register_new_resolver)  # one_minus and kd_params, which the recipe files use
RUN_CONFIG = "config"


def sweep_names() -> list[str]:
    return sorted(path.stem for path in SWEEP_DIR.glob("*.yaml"))


def sweep_file(name: str) -> Path:
    """alembert/conf/sweep/NAME.yaml, or a YAML file given by its path."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    if name not in sweep_names():
        raise fail(f"sweep={name} is neither in {SWEEP_DIR} nor a YAML file",
                   f"choose one of: {', '.join(f'sweep={n}' for n in sweep_names())}, or sweep=path/to/file.yaml")
    return SWEEP_DIR / f"{name}.yaml"


def split_args(args: list[str]) -> tuple[Path, list[str], list[str]]:
    """(sweep file, overrides of the sweep config, overrides added to every trial's run)."""
    names = [arg.split("=", 1)[1] for arg in args if arg.startswith("sweep=")]
    if len(names) != 1:
        raise fail("no sweep=NAME was given" if not names else f"sweep= was given {len(names)} times",
                   f"choose one of: {', '.join(f'sweep={n}' for n in sweep_names())}, or sweep=path/to/file.yaml")
    rest = [arg for arg in args if not arg.startswith("sweep=")]
    for arg in rest:
        if "=" not in arg:
            raise fail(f"argument '{arg}' is not an override", "write key=value, e.g. n_trials=20 or teacher=/path/to/model")
    is_sweep = [arg.split("=", 1)[0].lstrip("+~").split(".", 1)[0] in SWEEP_KEYS for arg in rest]
    return sweep_file(names[0]), [a for a, s in zip(rest, is_sweep) if s], [a for a, s in zip(rest, is_sweep) if not s]


def _compose(name: str, overrides: list[str]) -> dict:
    """Compose and resolve a config to plain data; Hydra's and OmegaConf's errors become one line."""
    try:
        return OmegaConf.to_container(compose(config_name=name, overrides=overrides), resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise fail(f"cannot compose {name} with overrides {' '.join(overrides) or '(none)'}: {detail}",
                   "check the keys and values (see alembert/conf/config.yaml and alembert/conf/sweep/)") from None


def load_sweep(path: Path, sweep_overrides: list[str], run_overrides: list[str]) -> SweepConfig:
    """The sweep file composed as a primary config of its own folder (so overrides address its top level)."""
    # `++` sets a sweep setting whether or not the file spells it out (the dataclass holds the defaults).
    forced = [arg if arg.startswith(("+", "~")) else f"++{arg}" for arg in sweep_overrides]
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.3", job_name="sweep"):
        raw = _compose(path.stem, forced)
    raw["base_overrides"] = list(raw.get("base_overrides") or []) + run_overrides
    return from_dict(SweepConfig, raw)


def compose_plain(overrides: tuple[str, ...]) -> dict:
    """The `python -m distill` config with `overrides`, resolved to plain data."""
    return _compose(RUN_CONFIG, list(overrides))


def compose_run(overrides: tuple[str, ...]):
    """A trial's typed RunConfig, composed exactly as `python -m distill <overrides>` composes it."""
    from pipeline.run import RunConfig

    return from_dict(RunConfig, compose_plain(overrides))


def main(args: list[str]) -> None:
    path, sweep_overrides, run_overrides = split_args(args)
    sweep = load_sweep(path, sweep_overrides, run_overrides)
    from pipeline.sweep.sweep import run_sweep  # torch and friends load only once the arguments are good

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sweep"):
        compose_run(tuple(sweep.base_overrides))  # the base alone must make a valid run config
        base = compose_plain(tuple(sweep.base_overrides))
        run_sweep(sweep, base, compose_run)


if __name__ == "__main__":
    # Heartbeats, metric names and the matplotlib plots are "experimental" in Optuna: say so once, here, not per trial.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    run_cli(lambda: main(sys.argv[1:]))
