"""Network kinds and runtimes by name (DESIGN.md promise 13), without torch.

A bundle's network is one of :data:`NETWORK_KINDS`; a runtime (:data:`RUNTIMES`) runs it.
``--runtime auto`` is decided where the model runs (:func:`resolve_runtime`, from the model
process's :class:`~geoseg.model.devices.Capabilities`), like the device and the precision:

* ONNX Runtime on a CPU, for a network that is an ONNX graph or that torch exports to one
  (smp networks), in float32: Unet resnet18, batch 8 of 256 px, 2 threads, 0.59-0.65 s a
  batch against 0.86 s for torch with batch norm folded (README "Runtimes"); its kernels
  give the same bits at every batch size.
* torch everywhere else: on CUDA (ONNX Runtime's CUDA and TensorRT providers were never
  measured against it here), under bfloat16 or float16 (a CPU with native bfloat16 runs
  torch's bfloat16 2.3x faster than float32), with ``--compile``, and for TorchScript and
  torch.export programs.

An ONNX graph runs on ONNX Runtime only. One batch runs one runtime; it is named in the
outputs' tags, the manifests and the resume identity.
"""

from __future__ import annotations

from ..errors import ConfigError

NETWORK_KINDS = ("smp", "onnx", "torchscript", "pt2")
"""smp: an smp (or geoseg extra) architecture's weights; onnx: an ONNX graph; torchscript:
a ``torch.jit.save`` module; pt2: a ``torch.export.save`` program."""

KIND_NAMES = {"smp": "smp weights", "onnx": "ONNX graph", "torchscript": "TorchScript module",
              "pt2": "torch.export program"}

RUNTIMES = ("auto", "torch", "onnxruntime")

ORT_HINT = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"


def check_runtime(runtime: str) -> str:
    """Refuse a runtime name that is none of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    return runtime


def check_kind(kind: str) -> str:
    if kind not in NETWORK_KINDS:
        raise ConfigError(f"unknown network kind {kind!r}; valid: {', '.join(NETWORK_KINDS)}")
    return kind


def runtimes_for(kind: str) -> tuple[str, ...]:
    """The runtimes that can run a network of ``kind`` (ONNX Runtime through an export to
    ONNX for smp networks; TorchScript and torch.export programs on torch only)."""
    return {"smp": ("torch", "onnxruntime"), "onnx": ("onnxruntime",)}.get(kind, ("torch",))


def onnxruntime_installed() -> bool:
    """Whether this process can import onnxruntime (looked up, not imported)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def check_runtime_fits(runtime: str, *, kind: str, precision: str, compile: bool = False,
                       onnxruntime: bool | None = None) -> None:
    """Refuse, in one line, what no device changes: a runtime that cannot run a network of
    ``kind``, onnxruntime where it is needed but not installed (``onnxruntime``: whether
    the model's process has it; default: this process), and a precision or ``--compile``
    onnxruntime cannot take."""
    check_runtime(runtime)
    check_kind(kind)
    names = KIND_NAMES[kind]
    if runtime == "torch" and "torch" not in runtimes_for(kind):
        raise ConfigError(f"--runtime torch: the model is an {names}, which runs on "
                          "onnxruntime; use --runtime onnxruntime or auto")
    if runtime == "onnxruntime" and "onnxruntime" not in runtimes_for(kind):
        raise ConfigError(f"--runtime onnxruntime: the model is a {names}, which runs on "
                          "torch; use --runtime torch or auto, or export it to ONNX with "
                          "`geoseg model export --format onnx` and import that")
    if runtime != "onnxruntime" and kind != "onnx":
        return
    if not (onnxruntime_installed() if onnxruntime is None else onnxruntime):
        what = "--runtime onnxruntime" if runtime == "onnxruntime" else \
            f"the model is an {names}, which"
        raise ConfigError(f"{what} needs onnxruntime, which is not installed: {ORT_HINT}")
    if precision not in ("auto", "float32"):
        raise ConfigError(f"--precision {precision}: onnxruntime runs the network in "
                          "float32; use --precision float32 or auto, or --runtime torch")
    if compile:
        raise ConfigError("--compile is torch.compile: it cannot run on onnxruntime; "
                          "drop --compile or use --runtime torch")


def resolve_runtime(runtime: str, *, kind: str, device: str, precision: str,
                    auto_precision: str = "float32", compile: bool = False,
                    onnxruntime: bool | None = None) -> str:
    """The runtime a batch runs on the model's process (see the module's docstring), after
    :func:`check_runtime_fits`.

    ``device`` is resolved; ``precision`` as asked (``auto`` or a name) and
    ``auto_precision`` what ``auto`` is on torch there (bfloat16 on a CPU that has it
    natively: torch then); ``onnxruntime``: whether the model's process has it (default:
    this process)."""
    has_ort = onnxruntime_installed() if onnxruntime is None else onnxruntime
    check_runtime_fits(runtime, kind=kind, precision=precision, compile=compile,
                       onnxruntime=has_ort)
    if runtime == "onnxruntime" or kind == "onnx":
        return "onnxruntime"
    if runtime == "torch":
        return "torch"
    float32 = precision == "float32" or (precision == "auto" and auto_precision == "float32")
    if device == "cpu" and kind == "smp" and has_ort and float32 and not compile:
        return "onnxruntime"
    return "torch"
