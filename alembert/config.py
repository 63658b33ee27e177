"""Turn plain nested dicts (what Hydra composes) into frozen config dataclasses, checking every value.

`from_dict` refuses unknown keys, values of the wrong type (`train.epochs=abc`) and values outside the
range a field declares with `bounded(...)` or `one_of(...)` (`train.epochs=-1`, `data.max_length=0`), each
with one line that names the key, the value and what is allowed, before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, TypeVar

from alembert.errors import fail

T = TypeVar("T")
CHECK = "alembert_check"  # the field-metadata key that holds a field's Check


@dataclass(frozen=True)
class Check:
    """What values a field accepts beyond its type: a closed or open range, or a set of choices."""

    low: float | None = None  # value >= low
    above: float | None = None  # value > above
    high: float | None = None  # value <= high
    choices: tuple | Callable[[], list] = ()  # a callable is asked at check time, e.g. a registry's names
    pattern: str | None = None  # a regular expression the whole (string) value must match
    shown: str = ""  # how the pattern is described in the error, e.g. "auto, cpu, cuda, cuda:N or mps"

    def allowed_choices(self) -> tuple:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def problem(self, value) -> str | None:
        if self.pattern is not None:
            return None if re.fullmatch(self.pattern, str(value)) else f"is not {self.shown}"
        if self.choices:
            choices = self.allowed_choices()
            return None if value in choices else f"is not one of {', '.join(map(str, choices))}"
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        if self.low is not None and value < self.low:
            return f"is below the minimum {self.low:g}"
        if self.above is not None and value <= self.above:
            return f"must be greater than {self.above:g}"
        if self.high is not None and value > self.high:
            return f"is above the maximum {self.high:g}"
        return None


def bounded(default, *, low: float | None = None, above: float | None = None, high: float | None = None):
    """A dataclass field whose value (when not None) must lie in the range; checked by `from_dict`."""
    return dataclasses.field(default=default, metadata={CHECK: Check(low=low, above=above, high=high)})


def one_of(default, choices: tuple | Callable[[], list]):
    """A dataclass field whose value must be one of `choices` (or of what the callable returns); checked by `from_dict`."""
    return dataclasses.field(default=default, metadata={CHECK: Check(choices=choices if callable(choices) else tuple(choices))})


def matching(default: str, pattern: str, shown: str):
    """A string field whose value must match `pattern` as a whole (described as `shown`); checked by `from_dict`."""
    return dataclasses.field(default=default, metadata={CHECK: Check(pattern=pattern, shown=shown)})


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build `cls` from `data`; nested dataclasses recurse, lists become tuples, bad keys and values fail clearly."""
    if data is not None and not isinstance(data, dict):
        raise fail(f"{path.rstrip('.') or cls.__name__} must be a mapping of settings, not {data!r}",
                   f"give it as key: value pairs ({', '.join(f.name for f in dataclasses.fields(cls))})")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in '{path.rstrip('.')}'" if path else ""
        raise fail(f"unknown config key(s) {', '.join(path + k for k in unknown)}{where}",
                   f"valid keys there are: {', '.join(sorted(fields))}")
    missing = [name for name, spec in fields.items() if name not in data and _required(spec)]
    if missing:
        raise fail(f"the required config key(s) {', '.join(path + name for name in missing)} are missing",
                   f"add {', '.join(path + name for name in missing)} (see the shipped files in alembert/conf/)")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{path}{name}.")
        _check_range(fields[name], kwargs[name], f"{path}{name}")
    return cls(**kwargs)


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _check_range(spec: dataclasses.Field, value, key: str) -> None:
    check = spec.metadata.get(CHECK)
    problem = check.problem(value) if check is not None and value is not None else None
    if problem:
        allowed = _allowed(check)
        raise fail(f"{key}={value} {problem}", f"set {key} to {allowed}")


def _allowed(check: Check) -> str:
    if check.pattern is not None:
        return check.shown
    if check.choices:
        return "one of " + ", ".join(map(str, check.allowed_choices()))
    parts = [f">= {check.low:g}" if check.low is not None else None, f"> {check.above:g}" if check.above is not None else None,
             f"<= {check.high:g}" if check.high is not None else None]
    return "a value " + " and ".join(part for part in parts if part)


def _convert(hint, value, path: str):
    key = path.rstrip(".")
    options = _options(hint)
    if value is None:
        if type(None) in options or Any in options:
            return None
        raise fail(f"{key} is null", f"give {key} a value ({_describe(hint)})")
    for option in options:
        converted = _as(option, value, path)
        if converted is not _NO:
            return converted
    raise fail(f"{key}={value!r} is not {_describe(hint)}", f"give {key} {_describe(hint)}")


_NO = object()  # "this option of a union does not take the value"


def _as(option, value, path: str):
    """`value` converted to the type `option`, or _NO when it is not of that type."""
    origin = typing.get_origin(option)
    if option is Any or option is object:
        return value
    if dataclasses.is_dataclass(option):
        return from_dict(option, value, path) if isinstance(value, dict) else _NO
    if option is bool:
        return value if isinstance(value, bool) else _NO
    if option is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 3.0 from YAML or a sampler means 3
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if option is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO
    if option is str:
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO  # text_column=0
    if option is dict or origin is dict:
        return value if isinstance(value, dict) else _NO
    if option is tuple or origin is tuple:
        return _as_tuple(option, value, path)
    return value  # a type this parser does not know: leave it to the dataclass


def _as_tuple(option, value, path: str):
    if not isinstance(value, (list, tuple)):
        return _NO
    args = typing.get_args(option)
    if len(args) == 2 and args[1] is Ellipsis or not args:
        item = args[0] if args else Any
        return tuple(_convert(item, element, f"{path}{i}.") for i, element in enumerate(value))
    if len(args) != len(value):
        raise fail(f"{path.rstrip('.')} has {len(value)} entries", f"give exactly {len(args)}")
    return tuple(_convert(item, element, f"{path}{i}.") for i, (item, element) in enumerate(zip(args, value)))


def _options(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(hint) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "a mapping"}
    parts = []
    for option in _options(hint):
        if option is type(None):
            parts.append("null")
        elif dataclasses.is_dataclass(option):
            parts.append(f"a mapping of {option.__name__} settings")
        elif option is tuple or typing.get_origin(option) is tuple:
            parts.append("a list")
        else:
            parts.append(names.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(parts)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
