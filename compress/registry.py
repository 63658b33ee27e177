"""One handler per pass config type, and the name table the YAML uses to pick passes.

A pass is a frozen dataclass (its settings) plus a handler `fn(model, config, *, batches) -> model`
registered for exactly that type. Dispatch is by config type, never by comparing strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from distill.config import from_dict
from distill.errors import fail

Handler = Callable[..., nn.Module]

HANDLERS: dict[type, Handler] = {}
CONFIG_BY_NAME: dict[str, type] = {}


def register_pass(name: str, config_type: type) -> Callable[[Handler], Handler]:
    """Register `handler` for `config_type` under the YAML name `name`; duplicates are refused."""
    if not (dataclasses.is_dataclass(config_type) and config_type.__dataclass_params__.frozen):
        raise TypeError(f"{config_type.__name__} must be a frozen dataclass")

    def wrap(handler: Handler) -> Handler:
        if config_type in HANDLERS or name in CONFIG_BY_NAME:
            raise ValueError(f"a compression pass is already registered for {config_type.__name__} / '{name}'")
        HANDLERS[config_type] = handler
        CONFIG_BY_NAME[name] = config_type
        return handler

    return wrap


def pass_names() -> list[str]:
    return sorted(CONFIG_BY_NAME)


def name_of(config: object) -> str:
    for name, config_type in CONFIG_BY_NAME.items():
        if type(config) is config_type:
            return name
    raise fail(f"{type(config).__name__} is not a registered compression pass", f"use one of {', '.join(pass_names())}")


def config_from_name(name: str, settings: dict[str, Any] | None = None) -> object:
    """Build the config for the pass called `name` from plain settings, failing clearly on a bad name or key."""
    if name not in CONFIG_BY_NAME:
        raise fail(f"unknown compression pass '{name}'", f"valid passes are: {', '.join(pass_names())}")
    return from_dict(CONFIG_BY_NAME[name], settings or {}, path=f"{name}.")


def apply(model: nn.Module, config: object, *, batches: Iterable[dict] | None = None) -> nn.Module:
    """Run the one handler registered for type(config). `batches` is task data, for passes that need it."""
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise fail(f"{type(config).__name__} is not a registered compression pass", f"use one of {', '.join(pass_names())}")
    return handler(model, config, batches=batches)
