"""Search spaces: typed parameter specs, their checks, sampling, and the override strings a trial runs with.

A space key is either a `python -m distill` config key (it becomes a Hydra override) or a sweep-level key
(`export.variant`, the ONNX variant a trial is measured as), looked up in SWEEP_PARAMS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembert.config import from_dict
from alembert.errors import fail
from alembert.registry import Registry

Value = str | int | float | bool | None


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: float/int in [low, high] (optionally log-scaled or stepped), or categorical choices."""

    key: str
    type: str
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: tuple[Any, ...] = ()


def _check_range(spec: ParamSpec) -> None:
    if spec.low is None or spec.high is None:
        raise fail(f"space entry {spec.key} ({spec.type}) needs low and high", f"write {spec.key}: {{type: {spec.type}, low: ..., high: ...}}")
    if not spec.low < spec.high:
        raise fail(f"space entry {spec.key} has an empty or inverted range: low={spec.low} >= high={spec.high}",
                   "make low smaller than high (a fixed value belongs in base_overrides)")
    if spec.log and spec.low <= 0:
        raise fail(f"space entry {spec.key} is log-scaled but low={spec.low} <= 0", "use a positive low, or log: false")
    if spec.step is not None and (spec.step <= 0 or spec.log):
        raise fail(f"space entry {spec.key} has step={spec.step} with log={spec.log}", "use a positive step without log")


def _check_choices(spec: ParamSpec) -> None:
    if not spec.choices:
        raise fail(f"space entry {spec.key} has no choices", f"write {spec.key}: {{type: categorical, choices: [a, b]}}")


def _suggest_float(trial, spec: ParamSpec):
    return trial.suggest_float(spec.key, float(spec.low), float(spec.high), log=spec.log, step=spec.step)


def _suggest_int(trial, spec: ParamSpec):
    return trial.suggest_int(spec.key, int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))


def _suggest_choice(trial, spec: ParamSpec):
    return trial.suggest_categorical(spec.key, [hydra_value(choice) if isinstance(choice, (list, tuple, dict)) else choice
                                                for choice in spec.choices])


@dataclass(frozen=True)
class Kind:
    check: Callable[[ParamSpec], None]
    suggest: Callable[[Any, ParamSpec], Value]


KINDS: Registry[Kind] = Registry("parameter type")


def register_kind(name: str, kind: Kind) -> None:
    KINDS.add(name, kind)


register_kind("float", Kind(_check_range, _suggest_float))
register_kind("int", Kind(_check_range, _suggest_int))
register_kind("categorical", Kind(_check_choices, _suggest_choice))


def parse_space(raw: dict[str, dict[str, Any]]) -> tuple[ParamSpec, ...]:
    """Typed specs from the YAML mapping `key: {type, low, high, ...}`, each checked; an empty space fails."""
    if not raw:
        raise fail("the sweep's search space is empty", "add entries under space:, e.g. kd.temperature: {type: float, low: 1, high: 8}")
    specs = []
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            raise fail(f"space entry {key} is {entry!r}, not a mapping", f"write {key}: {{type: float, low: ..., high: ...}}")
        spec = from_dict(ParamSpec, {**entry, "key": key}, path=f"space.{key}.")
        if spec.type not in KINDS:
            raise fail(f"space entry {key} has type '{spec.type}'", f"use one of {', '.join(KINDS.names())}")
        KINDS[spec.type].check(spec)
        specs.append(spec)
    return tuple(specs)


def sample(trial, space: tuple[ParamSpec, ...]) -> dict[str, Value]:
    """One value per spec from the trial (a retried trial gets its fixed values back)."""
    return {spec.key: KINDS[spec.type].suggest(trial, spec) for spec in space}


def hydra_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: null, true, lists as [a,b], floats exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)


# Sweep-level keys (not python -m distill overrides): each checks a spec against what the sweep can do.
SWEEP_PARAMS: Registry[Callable[[ParamSpec], None]] = Registry("sweep parameter")


def register_sweep_param(key: str, check: Callable[[ParamSpec], None]) -> None:
    SWEEP_PARAMS.add(key, check)


def _check_export_variant(spec: ParamSpec) -> None:
    from export.variants import BASE, VARIANTS

    names = (BASE, *VARIANTS.names())
    unknown = [choice for choice in spec.choices if choice not in names]
    if spec.type != "categorical" or unknown:
        raise fail(f"space entry export.variant must be categorical over export variants (got {unknown or spec.type})",
                   f"choose from {', '.join(names)}")


register_sweep_param("export.variant", _check_export_variant)


def split_params(params: dict[str, Value]) -> tuple[dict[str, Value], dict[str, Value]]:
    """(python -m distill parameters, sweep-level parameters)."""
    return ({k: v for k, v in params.items() if k not in SWEEP_PARAMS}, {k: v for k, v in params.items() if k in SWEEP_PARAMS})


def overrides_for(params: dict[str, Value], base: dict) -> tuple[str, ...]:
    """Hydra overrides setting `params`; keys missing from the composed base config are added with `+`."""
    return tuple(f"{'' if has_key(base, key) else '+'}{key}={hydra_value(value)}" for key, value in params.items())


def has_key(config: dict, key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_keys(space: tuple[ParamSpec, ...], base: dict, base_overrides: tuple[str, ...]) -> None:
    """Every key must exist in the composed config (or be a known pass setting or sweep key), before any trial runs."""
    fixed = {override.split("=", 1)[0].lstrip("+~") for override in base_overrides}
    for spec in space:
        if spec.key in SWEEP_PARAMS:
            SWEEP_PARAMS[spec.key](spec)
        elif not (has_key(base, spec.key) or _is_pass_setting(spec.key)):
            raise fail(f"space key {spec.key} does not exist in the composed python -m distill config",
                       "use a key of alembert/conf/config.yaml (e.g. kd.temperature, student.num_layers), "
                       "compress.settings.<pass>.<setting>, or export.variant")
        if spec.key in fixed:
            raise fail(f"space key {spec.key} is also set in base_overrides", "remove it from one of the two")


def _is_pass_setting(key: str) -> bool:
    """compress.settings.<pass>.<field>: settings the config leaves empty until a pass is named."""
    from compress.registry import PASSES

    parts = key.split(".")
    if len(parts) != 4 or parts[:2] != ["compress", "settings"] or parts[2] not in PASSES:
        return False
    return parts[3] in {f.name for f in dataclasses.fields(PASSES[parts[2]].config_type)}
