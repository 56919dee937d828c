"""One small registry class for every kind of named thing in poolarch (pools, models, datasets,
variants, tasks, methods).

    POOLS = Registry[PoolBuilder]("pool")

    @POOLS.register("dynopool")
    def _dynopool(...): ...

    POOLS.get("dynopool")        # the builder; an unknown name raises ValueError naming the allowed ones
    POOLS.names()                # sorted names
    "dynopool" in POOLS          # membership

It is the bottom of the package: it imports nothing from poolarch.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects (builders, classes). ``kind`` names the argument in error messages
    (``"model must be one of [...], got 'x'"``)."""

    def __init__(self, kind: str) -> None:
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"kind must be a non-empty string, got {kind!r}")
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so.

        Raises ``TypeError`` for a name that is not a non-empty string, ``ValueError`` when the
        name is taken."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; ``ValueError`` naming the allowed names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(f"{self.kind} must be one of {self.names()}, got {name!r}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
