"""Documented config fields: the one way every config dataclass declares a key.

``opt(default, doc, hash=...)`` stores the key's meaning in ``metadata["doc"]``
(``saematch config CONFIG --explain`` prints it) and whether it can change a
result in ``metadata["hash"]`` (:func:`saematch.configio.hash_view` leaves
``hash=False`` fields out of every artifact hash).  This module imports nothing
of saematch but the errors, so every stage's config module can use it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from saematch.errors import ConfigError


def opt(default: Any = None, doc: str = "", *, hash: bool = True, factory: Any = None) -> Any:
    """A config field with its documentation; ``hash=False`` for fields that cannot change results."""
    meta = {"doc": doc, "hash": hash}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def req(doc: str) -> Any:
    """A required config field with its documentation."""
    return field(metadata={"doc": doc, "hash": True})


def check(cond: bool, msg: str) -> None:
    """Validation in ``__post_init__``: one readable :class:`ConfigError`."""
    if not cond:
        raise ConfigError(msg)
