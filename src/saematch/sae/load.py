"""Load SAEs: ours from the run dir, or pretrained by SAELens release/id or local dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saematch.adapter import ModelAdapter
from saematch.config import ModelSpec
from saematch.errors import ArtifactError, SaematchError


def load_sae_dir(path: str | Path) -> Any:
    """A SAELens-format SAE (``cfg.json`` + ``sae_weights.safetensors``) from disk."""
    from sae_lens import SAE

    path = Path(path)
    if not (path / "cfg.json").is_file() or not (path / "sae_weights.safetensors").is_file():
        raise ArtifactError(f"{path} is not a SAELens SAE directory (needs cfg.json and sae_weights.safetensors)")
    try:
        return SAE.load_from_disk(str(path))
    except Exception as exc:
        raise ArtifactError(f"cannot load SAE from {path}: {type(exc).__name__}: {exc}") from None


def check_fits(sae: Any, spec: ModelSpec, layer: int, d_model: int, source: str) -> None:
    """The SAE must read ``d_model`` dims at this layer's resid_post hook."""
    d_in = int(sae.cfg.d_in)
    if d_in != d_model:
        raise SaematchError(
            f"SAE {source} has d_in={d_in}, but model '{spec.name}' layer {layer} has d_model={d_model}"
        )
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    want = ModelAdapter.hook_name(layer)
    if hook and hook != want:
        raise SaematchError(f"SAE {source} reads hook '{hook}', but saematch needs '{want}' for layer {layer}")


def load_pretrained(spec: ModelSpec, layer: int) -> tuple[Any, str]:
    """The configured pretrained SAE for ``layer`` and a description of where it came from."""
    if spec.sae_path:
        path = spec.sae_path.format(layer=layer)
        return load_sae_dir(path), f"at {path}"
    from sae_lens import SAE

    assert spec.sae_release and spec.sae_id
    sae_id = spec.sae_id.format(layer=layer)
    try:
        sae = SAE.from_pretrained(spec.sae_release, sae_id)
    except Exception as exc:
        raise SaematchError(
            f"cannot load pretrained SAE {spec.sae_release}/{sae_id}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return sae, f"{spec.sae_release}/{sae_id}"
