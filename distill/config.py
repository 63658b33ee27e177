"""Turn plain nested dicts (what Hydra composes) into frozen config dataclasses, refusing unknown keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from distill.errors import fail

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build `cls` from `data`; nested dataclasses recurse, lists become tuples, unknown keys fail clearly."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in '{path.rstrip('.')}'" if path else ""
        raise fail(f"unknown config key(s) {', '.join(path + k for k in unknown)}{where}",
                   f"valid keys there are: {', '.join(sorted(names))}")
    kwargs = {name: _convert(hints[name], value, f"{path}{name}.") for name, value in data.items()}
    return cls(**kwargs)


def _convert(hint, value, path: str):
    if value is None:
        return None
    for option in _options(hint):
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return from_dict(option, value, path)
    if isinstance(value, list):
        return tuple(_convert(_item_hint(hint), item, path) for item in value)
    if str in _options(hint) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # positional column names like text_column=0
    return value


def _options(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _item_hint(hint):
    for option in _options(hint):
        args = typing.get_args(option)
        if typing.get_origin(option) is tuple and args:
            return args[0]
    return Any


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
