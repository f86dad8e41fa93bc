"""One registry shape for every backend family: a name → factory map with a ``ConfigError`` for
an unknown name that lists the known ones.

Encoders, vector indexes, tiers, model providers, trace sinks and bench methods each keep one
``Registry``, keyed by the name their config gives. Factories import their backend's module on
first call, so building a registry loads nothing heavy. Written here: the few lines a dict lookup
needs are not worth a plugin library (entry points would also scan installed packages at start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from router.errors import ConfigError

F = TypeVar("F")
V = TypeVar("V")


def lookup(entries: Mapping[str, V], name: str, missing: Callable[[list[str]], Exception]) -> V:
    """``entries[name]``; for an unknown name, the error ``missing`` makes from the known names
    (sorted), never a bare ``KeyError``."""
    try:
        return entries[name]
    except KeyError:
        raise missing(sorted(entries)) from None


class Registry(Generic[F]):
    """``family`` names what the entries are ("encoder backend"); ``field`` is the config key that
    chooses one ("encoder.backend"), named in the error for an unknown name."""

    def __init__(self, family: str, field: str, entries: Mapping[str, F] | None = None) -> None:
        self.family = family
        self.field = field
        self._entries: dict[str, F] = dict(entries or {})

    def register(self, name: str) -> Callable[[F], F]:
        """Add (or replace) the entry ``name``; usable as a decorator."""

        def add(factory: F) -> F:
            self._entries[name] = factory
            return factory

        return add

    def get(self, name: str, field: str | None = None) -> F:
        """The entry for ``name``; ``ConfigError`` naming ``field`` (default: the registry's) and
        the known names when there is none."""
        return lookup(self._entries, name, lambda known: ConfigError(
            f"{field or self.field}={name!r}: unknown {self.family}; known: {', '.join(known)}"))

    def __getitem__(self, name: str) -> F:
        """``registry[name]`` is ``registry.get(name)``: a ``ConfigError``, never a ``KeyError``."""
        return self.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"
