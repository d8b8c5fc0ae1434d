"""Devices by name: ``auto``, ``cpu``, ``cuda`` and ``cuda:N``; the one list the CLI and YAML
validation use. Checking a name imports no torch; resolving one does."""

from __future__ import annotations

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
"""Device names; ``cuda:N`` (a CUDA device by index) is accepted too."""


def check_device(device: str) -> str:
    """Refuse a device name that is none of :data:`DEVICES` or ``cuda:N``."""
    text = str(device)
    if text in DEVICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}, cuda:N")


def device_kind(device: str) -> str:
    """``cuda`` for any CUDA device, else the name: what changes output bytes."""
    return "cuda" if device.startswith("cuda") else device


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; refuse unknown names clearly."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was given but no CUDA device is available: use "
                          "--device cpu or auto")
    return device
