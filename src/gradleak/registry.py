"""Name -> factory lookup, so the CLI and configs name models, datasets and attacks without if/elif chains."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gradleak.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names to factories of one kind (``kind`` appears in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        key = name.lower()

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = factory
            return factory

        return add

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, **kwargs: object) -> T:
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{self.kind} {name!r} rejected its settings {kwargs}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
