"""Devices and precisions by name: the one list the CLI and YAML validation use. Checking a
name imports no torch; resolving one does."""

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


def cuda_present() -> bool:
    """Whether this machine can have a CUDA device, without importing torch (seconds) or
    initializing CUDA: on Linux an NVIDIA device node and the driver library; elsewhere
    assumed (resolving the device checks for real)."""
    import ctypes
    import glob
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    # NVIDIA device nodes; WSL2's /dev/dxg; ROCm's /dev/kfd (torch names it cuda too)
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")
            or os.path.exists("/dev/kfd")):
        return False
    if os.path.exists("/dev/kfd") and not glob.glob("/dev/nvidia[0-9]*"):
        return True  # ROCm: no libcuda to look for
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def check_device_present(device: str) -> None:
    """Refuse a CUDA device on a machine without one, in milliseconds (a batch checks this
    before any cluster starts)."""
    if str(device).startswith("cuda") and not cuda_present():
        raise ConfigError(f"--device {device}: this machine has no CUDA device (no NVIDIA "
                          "driver or device found); use --device cpu or auto")


PRECISIONS = ("auto", "float32", "bfloat16", "float16")
"""The network's compute type (``--precision``). ``auto``: bfloat16 on CUDA (float16 where
the GPU has no bfloat16) and on CPUs with native bfloat16 (AVX512-BF16 or AMX: 2.3x faster
than float32 for Unet resnet18 on this project's CI machine), float32 on other CPUs.
Softmax, weighting and stitching always run in float32 and integers."""


def check_precision(precision: str) -> str:
    """Refuse a precision that is none of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> what ``device`` runs fastest without changing what it predicts in
    practice (see :data:`PRECISIONS`); other names as given."""
    import torch

    check_precision(precision)
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "float32"


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
