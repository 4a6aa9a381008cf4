"""Save and load fitted maps: ``NAME.safetensors`` (float32 tensors) + ``NAME.json`` (kind, params, fitted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from saematch.artifacts import atomic_path, write_json
from saematch.errors import ArtifactError
from saematch.transfer.maps import BaseMap, RidgeCVMap, WhitenedProcrustesMap
from saematch.transfer.mlp import MLPMap

MAP_CLASSES: dict[str, type[BaseMap]] = {"ridge": RidgeCVMap, "procrustes": WhitenedProcrustesMap, "mlp": MLPMap}


def save_map(m: BaseMap, path: Path, **meta: Any) -> list[Path]:
    """Write ``path.safetensors`` (float32 tensors) and ``path.json`` (kind, params, fitted scalars, meta)."""
    from safetensors.numpy import save_file

    path = Path(path)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    with atomic_path(st) as tmp:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in m._tensors().items()}, str(tmp))
    write_json(js, {"kind": m.kind, "params": m._params(), "fitted": m._fitted(), **meta})
    return [st, js]


def load_map(path: Path) -> BaseMap:
    """Read a map written by :func:`save_map` (``path`` without suffix)."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        info = json.loads(path.with_suffix(".json").read_text())
        tensors = {k: v.astype(np.float64) for k, v in load_file(str(path.with_suffix(".safetensors"))).items()}
        cls = MAP_CLASSES[info["kind"]]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"cannot read map {path}: {type(exc).__name__}: {exc}") from None
    m = cls(**info["params"])
    m._restore(tensors, info["fitted"])
    return m
