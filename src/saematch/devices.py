"""One device setting for the whole run, with per-stage overrides.

A run config's top-level ``device`` is ``auto``, ``cpu``, ``cuda`` or
``cuda:N``; a stage section (``extract``, ``sae``, ``features``, ``matching``,
``crosscoder``) may set its own ``device`` to override it.  ``auto`` picks CUDA
when torch sees a GPU.  Under ``torchrun`` (``LOCAL_RANK`` set) a bare
``cuda`` or ``auto`` means the rank's own GPU, so one process drives one GPU.

Devices never enter an artifact hash: the same node built on another device
holds the same result up to floating-point rounding (the SAELens-equality test
runs on every present device).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

from saematch.errors import ConfigError

log = logging.getLogger(__name__)

DEVICE_DOC = "torch device: auto (CUDA when present), cpu, cuda or cuda:N"
OVERRIDE_DOC = "device of this stage; default: the run's top-level `device`"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_spec(spec: Optional[str], where: str) -> None:
    """Validate the spelling of a device setting (no torch import, no hardware probe)."""
    if spec is not None and not _PATTERN.match(str(spec)):
        raise ConfigError(f"{where}: '{spec}' is not a device; use auto, cpu, cuda or cuda:N")


def resolve(spec: str) -> str:
    """The concrete torch device string for a setting, checked against the hardware."""
    import torch

    check_spec(spec, "device")
    has_cuda = torch.cuda.is_available()
    local = os.environ.get("LOCAL_RANK")
    if spec == "auto":
        spec = "cuda" if has_cuda else "cpu"
    if spec == "cpu":
        return "cpu"
    if not has_cuda:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"device '{spec}' was asked for, but torch sees no GPU (torch {torch.__version__}, "
                          f"{build}); use device: auto or cpu")
    index = int(spec.split(":")[1]) if ":" in spec else int(local or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device 'cuda:{index}' was asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return f"cuda:{index}"


def stage_device(cfg: Any, section: str) -> str:
    """The resolved device of a stage: its section's ``device`` if set, else the run's."""
    own = getattr(getattr(cfg, section), "device", None)
    return resolve(own or cfg.device)


def autocast_on(setting: Optional[bool], device: str) -> bool:
    """bf16 autocast for the SAE's products: on CUDA by default, off on CPU (bf16 is slow on many CPUs)."""
    return device.startswith("cuda") if setting is None else bool(setting)


def pin(tensor: Any, device: str) -> Any:
    """Page-locked copy of a host tensor when it is bound for a GPU (enables non-blocking copies)."""
    return tensor.pin_memory() if device.startswith("cuda") and not tensor.is_pinned() else tensor


def synchronize(device: str) -> None:
    """Wait for the device's queued work (for honest timings); a no-op on CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
