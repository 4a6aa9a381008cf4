"""Loading frozen dataclass configs from YAML, with dotted CLI overrides.

The stage configs themselves live in :mod:`saematch.config`.  This module only
knows how to turn plain dicts (from ``yaml.safe_load``) into typed, frozen
dataclasses and back, and reports an unknown key or a wrongly typed value as a
single :class:`~saematch.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from saematch.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(choose(tp, value, key), value, prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}.{i}") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return types.MappingProxyType({str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")  # pragma: no cover


def choose(cls: type, data: dict[str, Any], key: str) -> type:
    """The registered subclass that a section's choice key names (``sae.architecture: topk``)."""
    choice = getattr(cls, "__choice__", None)
    if choice is None:
        return cls
    field_name, registry = choice
    default = next(f.default for f in dataclasses.fields(cls) if f.name == field_name)
    name = data.get(field_name, default)
    if not isinstance(name, str):
        raise ConfigError(f"config key '{key}.{field_name}': expected a name, got {name!r}")
    try:
        return registry.get(name)
    except ConfigError as exc:
        raise ConfigError(f"config key '{key}.{field_name}': {exc}") from None


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        choice = getattr(cls, "__choice__", None)
        what = f" for {choice[0]} '{getattr(cls, 'name', '?')}'" if choice else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'{what} (known keys in this section: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'root'}': {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data (JSON/YAML-safe) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def hash_view(obj: Any) -> Any:
    """Plain data of a config with every ``hash=False`` field left out (the one hashing rule)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: hash_view(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("hash", True)}
    if isinstance(obj, (list, tuple)):
        return [hash_view(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: hash_view(v) for k, v in obj.items()}
    return obj


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (their hashed fields) and upstream hashes."""
    blob = json.dumps([hash_view(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def explain(obj: Any, prefix: str = "") -> list[tuple[str, Any, str, bool]]:
    """Every key of a config as ``(dotted key, value, meaning, hashed)``, sections expanded."""
    rows: list[tuple[str, Any, str, bool]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = prefix + f.name
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(value):
            rows.append((key, "", doc, True))
            rows += explain(value, key + ".")
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                rows += explain(v, f"{key}.{i}.")
        else:
            rows.append((key, to_dict(value), doc, bool(f.metadata.get("hash", True))))
    return rows


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested plain data; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key.path=value")
    path, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    keys = path.strip().split(".")
    node: Any = data
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise ConfigError(f"override '{path}': no list item {k!r}")
            node = node[int(k)]
        else:
            node = node.setdefault(k, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{path}': '{'.'.join(keys[: i + 1])}' is not a section")
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override '{path}': no list item {last!r}")
        node[int(last)] = value
    else:
        node[last] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data
