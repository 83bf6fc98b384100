"""Name -> constructor registries with duplicate checks (torchvision ``models/_api.py`` style).

One :class:`Registry` per family of components (quantizers, networks, ...). Tests loop over
a registry, so a component is covered by the contract tests the day it is registered.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors.

    Args:
        kind: human-readable name of the family ("quantizer", "network"), used in errors.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``fn`` under ``name``; registering a name twice raises ``ValueError``."""
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")

        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str, **kwargs: Any) -> T:
        """Build the component registered as ``name`` with ``kwargs``."""
        try:
            fn = self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None
        return fn(**kwargs)

    def from_entry(self, entry: Any, sample_rate: int | None) -> T | None:
        """The component of a model config's entry ``{"name": str, "kwargs": {...}}`` (``None``
        without one), built at the model's ``sample_rate`` (audio components only: an image
        model, ``sample_rate=None``, cannot have one)."""
        if entry is None:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("kwargs", {}), dict):
            raise ValueError(f"model config: '{self.kind}' must be {{'name': str, 'kwargs': {{...}}}}")
        if sample_rate is None:
            raise ValueError(f"model config: an '{self.kind}' entry belongs to audio models only")
        kwargs = dict(entry.get("kwargs", {}))
        if "sample_rate" in kwargs:
            raise ValueError(f"model config: the {self.kind}'s sample rate is the model's")
        return self.get(entry["name"], sample_rate=int(sample_rate), **kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
