"""Devices and precisions by name: the one list the CLI and YAML validation use; what a
process that runs the model has (:class:`Capabilities`), and ``auto`` decided from it; CUDA
errors as one line. Checking a name imports no torch; neither does probing a machine that
cannot have a CUDA device (a prediction on ONNX Runtime never imports it).

Device and precision are decided where the model runs: a batch's workers report their
:func:`probe_capabilities` and the batch resolves its options from those reports (a client
on a login node without a GPU drives GPU workers), the in-process runner from its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ConfigError, DeviceError, GeosegError

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


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware: a container's or a batch job's
    share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def visible_gpus() -> tuple[str, ...]:
    """The CUDA devices a process started here would see, without torch or CUDA: the
    entries of ``CUDA_VISIBLE_DEVICES`` when it is set (ids or UUIDs; empty: none), else
    one per NVIDIA device node (``/dev/nvidia0``, ...), as their ids (one, ``0``, on WSL2
    and ROCm, which have no such nodes). What the layout of a local cluster is planned
    from; the workers' own probe decides device and precision."""
    import glob
    import re

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        out = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):
                break  # CUDA stops at the first invalid or negative entry
            out.append(entry)
        return tuple(out)
    if not cuda_present():
        return ()
    nodes = [n for n in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", n)]
    if not nodes:  # WSL2 or ROCm: a GPU without NVIDIA nodes to count; the workers count
        return ("0",)
    return tuple(str(i) for i in sorted(int(n[11:]) for n in nodes))


def check_device_present(device: str) -> None:
    """Refuse a CUDA device on a machine without one, in milliseconds (a batch checks this
    before any cluster starts)."""
    if str(device).startswith("cuda") and not cuda_present():
        raise ConfigError(f"--device {device}: this machine has no CUDA device (no NVIDIA "
                          "driver or device found); use --device cpu or auto")


PRECISIONS = ("auto", "float32", "tf32", "bfloat16", "float16")
"""The network's compute type (``--precision``). ``auto``: bfloat16 on CUDA devices with
native bfloat16 (compute capability 8.0 and newer; float16 on older GPUs, where bfloat16
would be emulated) and on CPUs with native bfloat16 (AVX512-BF16 or AMX: 2.3x faster than
float32 for Unet resnet18 on this project's CI machine), float32 on other CPUs.
``float32`` is IEEE float32 everywhere (on CUDA, TF32 convolutions and matmuls are turned
off); ``tf32`` lets Ampere and newer GPUs run them in TensorFloat-32 (a CUDA precision). The
segmentation head's logits, softmax, weighting and stitching always run in float32 and
integers."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the process that runs the model has, probed there (:func:`probe_capabilities`)
    and sent to whoever resolves a batch's options."""

    cuda: tuple[str, ...] = ()
    """Names of the CUDA devices it sees, in the order of ``cuda:0``, ``cuda:1``, ..."""
    cuda_bf16: tuple[bool, ...] = ()
    """Per CUDA device: bfloat16 natively (compute capability >= 8, or ROCm), not
    emulated."""
    cpu_bf16: bool = False
    """The CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    onnxruntime: bool = False
    """onnxruntime is installed (``--runtime auto`` takes it on CPUs)."""


def probe_capabilities() -> Capabilities:
    """This process's devices: without torch where there can be no CUDA device (no NVIDIA
    driver or device node, :func:`cuda_present`), the CPU's bfloat16 from its flags; else
    through torch, which initializes CUDA where there is one."""
    from .runtimes import onnxruntime_installed

    cpu_flags = _cpu_flags()
    if not cuda_present() and cpu_flags is not None:
        native = bool(cpu_flags & {"avx512_bf16", "amx_tile"})
        return Capabilities((), (), native, onnxruntime_installed())
    import torch

    names: list[str] = []
    bf16: list[bool] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            names.append(torch.cuda.get_device_name(index))
            major, _ = torch.cuda.get_device_capability(index)
            bf16.append(bool(torch.version.hip) or major >= 8)
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return Capabilities(tuple(names), tuple(bf16), bool(native), onnxruntime_installed())


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (what torch's cpuinfo reads too); None
    where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


_THREADS: list[int] = []


def set_model_threads(threads: int | None, runtime: str) -> None:
    """``--threads`` for the model in this process: torch's intra-op threads (torch is
    imported for it on the torch runtime only) and what ONNX Runtime sessions take
    (:func:`model_threads`). Set before the model loads."""
    import sys

    if not threads:
        return
    _THREADS[:] = [threads]
    if runtime != "onnxruntime" or "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def model_threads() -> int:
    """The intra-op threads an ONNX Runtime session takes: ``--threads``
    (:func:`set_model_threads`), else torch's count where torch is loaded, else what torch's
    would be: ``OMP_NUM_THREADS`` where it is set (Dask's workers set it to 1, so a local
    cluster's workers do not oversubscribe the cores), else 0 (ONNX Runtime's default: one
    per physical core, as torch's)."""
    import sys

    if _THREADS:
        return _THREADS[0]
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else 0


def check_precision(precision: str) -> str:
    """Refuse a precision that is none of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def cuda_index(device: str) -> int:
    """``cuda:N`` -> N; ``cuda`` -> 0 (the current device)."""
    return int(device[5:]) if device.startswith("cuda:") else 0


def resolve_device(device: str = "auto", capabilities: Capabilities | None = None) -> str:
    """``auto`` -> ``cuda`` when the process has a CUDA device, else ``cpu``; a CUDA device
    it does not have (none at all, or ``cuda:N`` past its count) is refused in one line.
    ``capabilities``: the model process's report (default: probe this process)."""
    check_device(device)
    if device == "cpu":
        return device
    caps = capabilities if capabilities is not None else probe_capabilities()
    if device == "auto":
        return "cuda" if caps.cuda else "cpu"
    if not caps.cuda:
        raise ConfigError(f"--device {device} was given but no CUDA device is available: use "
                          "--device cpu or auto")
    if cuda_index(device) >= len(caps.cuda):
        raise ConfigError(f"--device {device}: only {len(caps.cuda)} CUDA device(s) are "
                          f"visible (cuda:0-cuda:{len(caps.cuda) - 1}; a worker pinned to "
                          "one GPU by CUDA_VISIBLE_DEVICES sees it as cuda:0): use --device "
                          "cuda")
    return device


def resolve_precision(precision: str, device: str,
                      capabilities: Capabilities | None = None) -> str:
    """``auto`` -> what ``device`` runs fastest without changing what it predicts in
    practice (see :data:`PRECISIONS`); other names as given, ``tf32`` only on CUDA."""
    check_precision(precision)
    cuda = device.startswith("cuda")
    if precision == "tf32" and not cuda:
        raise ConfigError("--precision tf32 is a CUDA precision (TensorFloat-32 "
                          f"convolutions); on {device} use float32")
    if precision != "auto":
        return precision
    caps = capabilities if capabilities is not None else probe_capabilities()
    if cuda:
        index = cuda_index(device)
        native = caps.cuda_bf16[index] if index < len(caps.cuda_bf16) else False
        return "bfloat16" if native else "float16"
    return "bfloat16" if caps.cpu_bf16 else "float32"


def device_kind(device: str) -> str:
    """``cuda`` for any CUDA device, else the name: what changes output bytes."""
    return "cuda" if device.startswith("cuda") else device


def set_tf32(device: str, precision: str) -> None:
    """IEEE float32 on CUDA unless ``precision`` is ``tf32`` (torch lets cuDNN convolutions
    use TF32 by default on Ampere and newer); nothing on other devices."""
    if not device.startswith("cuda"):
        return
    import torch

    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


_DEVICE_ERRORS = (
    (("cuda out of memory", "cuda error: out of memory", "hip out of memory",
      "outofmemoryerror"),
     "out of GPU memory ({detail}): lower --batch-size or --block-size, or use a GPU that "
     "other processes do not hold"),
    (("invalid device ordinal",),
     "no such CUDA device ({detail}): --device cuda:N counts the GPUs this process sees "
     "(CUDA_VISIBLE_DEVICES renumbers them from 0)"),
    (("busy or unavailable",),
     "the GPU is busy or in exclusive-process mode ({detail}): another process holds it; "
     "wait for it, choose another GPU, or ask for the default compute mode"),
    (("no kernel image is available",),
     "this torch build has no kernels for the GPU ({detail}): install a torch build for its "
     "compute capability"),
    (("driver version is insufficient", "found no nvidia driver"),
     "the NVIDIA driver cannot run this torch build ({detail}): update the driver or use "
     "--device cpu"),
    (("c compiler", "compiler not found", "backendcompilerfailed", "inductorerror",
      "triton"),
     "--compile could not compile the network ({detail}): install a C compiler (gcc) and, "
     "on CUDA, Triton; or predict without --compile"),
)


def device_error(exc: BaseException) -> DeviceError | None:
    """A torch or CUDA error as one :class:`~geoseg.errors.DeviceError` line, or None when
    ``exc`` is not one of them (it is then a bug, and stays a traceback for --debug).
    Matched on the type's name and message, so this imports no torch."""
    if isinstance(exc, DeviceError):
        return exc
    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    haystack = f"{type(exc).__name__} {text}".lower()
    for needles, message in _DEVICE_ERRORS:
        if any(n in haystack for n in needles):
            detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            return DeviceError(message.format(detail=detail[:160]))
    return None


@contextmanager
def device_errors() -> Iterator[None]:
    """Torch and CUDA errors raised inside become one :class:`~geoseg.errors.DeviceError`
    line (the original kept as its cause, for --debug); anything else passes unchanged."""
    try:
        yield
    except GeosegError:
        raise
    except Exception as exc:
        mapped = device_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
