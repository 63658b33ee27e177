"""One Registry type for every name -> entry table: loss terms, compression passes, export variants, sweep kinds.

It refuses a second entry of the same name with one error, and an unknown name with one line listing the
known ones. A registry whose entries live in their own modules names the package that holds them
(`package=`): on first lookup it imports every module of that package once, so adding an entry is one new
module and no import list anywhere. What a side list used to say is a flag on each entry.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from alembert.errors import fail

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, *, package: str | None = None):
        self.kind = kind  # what an entry is called in messages: "loss term", "compression pass"
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    def add(self, name: str, entry: T) -> T:
        self.load()  # a name the package registers later would otherwise slip past the duplicate check
        if name in self._entries:
            raise fail(f"the {self.kind} '{name}' is registered twice", f"give the new {self.kind} its own name")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def temporarily(self, name: str, entry: T) -> Iterator[T]:
        """`entry` under `name` for the duration of a block (tests register throw-away entries this way)."""
        self.add(name, entry)
        try:
            yield entry
        finally:
            self.remove(name)

    @contextlib.contextmanager
    def replaced(self, name: str, entry: T) -> Iterator[T]:
        """`entry` in place of the registered `name` (same position) for the duration of a block, for tests."""
        original = self.get(name)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            self._entries[name] = original

    def load(self) -> None:
        """Import every module of `package` once; each registers its own entries on import."""
        if self._loaded:
            return
        self._loaded = True
        root = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda info: info.name):
            importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self.load()
        return list(self._entries)

    def get(self, name: str) -> T:
        self.load()
        if name not in self._entries:
            raise fail(f"unknown {self.kind} '{name}'", f"use one of: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return list(self._entries.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
