"""One handler per pass config type, registered by name in one Registry, with what the pass does as flags.

A pass is a frozen dataclass (its settings) plus a handler `fn(model, config, *, batches) -> model`
registered for exactly that type. Dispatch is by config type, never by comparing strings. The passes live in
compress/passes/, whose modules the registry imports on first lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from alembert.config import from_dict
from alembert.errors import fail
from alembert.families import mark_last_entry
from alembert.registry import Registry

Handler = Callable[..., nn.Module]


@dataclass(frozen=True)
class PassSpec:
    config_type: type
    handler: Handler
    precision: bool = False  # changes the number format (int8, fp16): nothing can be trained after it
    leaves_zeroed: bool = False  # zeroes structure it cannot remove in a stock config; export compacts it
    needs_tokenizer: bool = False  # the handler takes tokenizer=... (prune_vocab reads its special tokens)
    remaps_inputs: bool = False  # changes the token ids the model reads: data after it is moved (alembert.vocab)


PASSES: Registry[PassSpec] = Registry("compression pass", package="compress.passes")


def register_pass(name: str, config_type: type, *, precision: bool = False, leaves_zeroed: bool = False,
                  needs_tokenizer: bool = False, remaps_inputs: bool = False) -> Callable[[Handler], Handler]:
    """Register `handler` for `config_type` under the YAML name `name`; duplicates are refused."""
    if not (dataclasses.is_dataclass(config_type) and config_type.__dataclass_params__.frozen):
        raise TypeError(f"{config_type.__name__} must be a frozen dataclass")

    def wrap(handler: Handler) -> Handler:
        if any(spec.config_type is config_type for _, spec in PASSES.items()):
            raise fail(f"the compression pass config {config_type.__name__} is registered twice",
                       "give each pass its own config dataclass")
        PASSES.add(name, PassSpec(config_type, handler, precision, leaves_zeroed, needs_tokenizer, remaps_inputs))
        return handler

    return wrap


def pass_names() -> list[str]:
    return sorted(PASSES.names())


def spec_of(config: object) -> tuple[str, PassSpec]:
    for name, spec in PASSES.items():
        if type(config) is spec.config_type:
            return name, spec
    raise fail(f"{type(config).__name__} is not a registered compression pass", f"use one of {', '.join(pass_names())}")


def name_of(config: object) -> str:
    return spec_of(config)[0]


def is_precision_pass(config: object) -> bool:
    return spec_of(config)[1].precision


def config_from_name(name: str, settings: dict[str, Any] | None = None) -> object:
    """Build the config for the pass called `name` from plain settings, failing clearly on a bad name or key."""
    return from_dict(PASSES.get(name).config_type, settings or {}, path=f"{name}.")


def apply(model: nn.Module, config: object, *, batches: Iterable[dict] | None = None, tokenizer=None) -> nn.Module:
    """Run the one handler registered for type(config). `batches` is task data, for passes that need it; the
    `tokenizer` goes to the passes whose entry says they need it."""
    _, spec = spec_of(config)
    extra = {"tokenizer": tokenizer} if spec.needs_tokenizer else {}
    model = spec.handler(model, config, batches=batches, **extra)
    if spec.leaves_zeroed:
        mark_last_entry(model, leaves_zeroed=True)  # export reads this from config.json, not from compress
    return model
