"""The one extension idiom: registries keyed by stable names.

Each registry names a package; every module in that package is imported the
first time the registry is read, and its ``@REGISTRY.register("name")``
decorators fill it.  There is no hard-coded module list: adding an SAE
architecture, a matching method, a similarity metric or a control is one new
module in the right package.  A name registered twice is an error.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from saematch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> registered objects (classes), discovered from one package."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; its ``name`` attribute is set to it."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} '{name}' is registered twice "
                                  f"({_where(self._items[name])} and {_where(obj)}); names must be unique")
            setattr(obj, "name", name)
            self._items[name] = obj
            return obj

        return deco

    def discover(self) -> None:
        """Import every module of the registry's package (once)."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._items))})")
        return self._items[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


SAE_ARCHITECTURES: Registry[Any] = Registry("SAE architecture", "saematch.sae.architectures")
MATCHERS: Registry[Any] = Registry("matching method", "saematch.matching.methods")
METRICS: Registry[Any] = Registry("similarity metric", "saematch.similarity.metrics")
