"""Lazy package exports (PEP 562): a package names its public objects and the modules that hold
them, and nothing is imported until one is used, so importing a package does no work."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps a public name to its module,
    given relative to the package (``"config"``) or absolute (``"saematch.config"``)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = exports[name]
        return getattr(importlib.import_module(mod if mod.startswith("saematch") else f"{package}.{mod}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
