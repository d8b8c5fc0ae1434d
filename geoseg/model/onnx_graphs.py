"""ONNX graphs: torch networks exported to ONNX, kept in a cache by the bundle's tensors,
and run by ONNX Runtime behind the network interface the prediction flow calls
(:class:`OnnxNetwork`).

An smp bundle predicted with ``--runtime onnxruntime`` (``auto`` on CPUs) is exported once
per machine and torch version (2.4 s for the shipped model on 2 cores, :func:`to_onnx_fast`),
then read from ``$GEOSEG_CACHE`` (default ``~/.cache/geoseg``) in a fraction of a second.
The graph takes any batch, height and width (the network's own constraints, such as
multiples of its output stride, still hold). Finding and running a cached graph imports no
torch (:class:`OnnxNetwork` takes and gives numpy arrays); exporting one does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BundleError, ConfigError

if TYPE_CHECKING:
    from torch import nn

    from .bundle import ModelBundle
    from .meta import BundleMeta

log = logging.getLogger(__name__)

OPSET = 18
INPUT, OUTPUT = "input", "output"


def to_onnx_fast(network: nn.Module, *, in_channels: int, size: int) -> bytes:
    """:func:`to_onnx` through torch's older, tracing exporter (``dynamo=False``): 2.4 s
    against 32 s for the shipped model on 2 cores, the same ONNX Runtime speed, outputs
    3e-6 apart. Deprecated since torch 2.9, so the graph cache uses it while torch has
    it (the cache key names the torch version) and files users keep come from
    :func:`to_onnx`."""
    import torch

    network = network.eval().to("cpu").to(memory_format=torch.contiguous_format)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(network, (torch.zeros(2, in_channels, size, size),),
                          buf,  # type: ignore[arg-type]  # the TorchScript exporter takes files
                          dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: axes, OUTPUT: axes})
    return buf.getvalue()


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$GEOSEG_CACHE``, else ``$XDG_CACHE_HOME/geoseg``,
    else ``~/.cache/geoseg``."""
    explicit = os.environ.get("GEOSEG_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geoseg"


@contextlib.contextmanager
def _quiet() -> Any:
    """torch's exporter prints its progress and warns about its own internals: neither
    reaches the user's terminal (the log file has them at debug level)."""
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out):
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)
            if out.getvalue():
                log.debug("torch.onnx.export: %s", out.getvalue()[-2000:])


def to_onnx(network: nn.Module, *, in_channels: int, size: int,
            dynamic: bool = True) -> bytes:
    """``network`` (eval mode, float32, on the CPU) as an ONNX graph: input ``input``
    (N, C, H, W) float32, output ``output`` (N, K, H, W); batch, height and width dynamic
    unless ``dynamic`` is False. ``size`` is the example tile's side in pixels."""
    import torch

    network = network.eval().to("cpu").to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, in_channels, size, size)
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
            3: torch.export.Dim.DYNAMIC} if dynamic else None
    buf = io.BytesIO()
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(network, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=(dims,) if dims else None,
                                    optimize=True, verify=False)
        assert program is not None  # dynamo=True returns the ONNXProgram
        program.save(buf)  # type: ignore[arg-type]
    return buf.getvalue()


def network_digest(path: str | os.PathLike, meta: Any) -> tuple[str, str]:
    """(what an exported graph depends on, the file's sha256), from one read of the file.
    The first hashes the bundle's tensors (names, shapes and bytes, without the metadata
    header, which holds dates and provenance) and the fields that build the network: two
    bundles of the same weights share one cached graph."""
    import hashlib
    import json
    import struct

    h, whole = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(8)
        (size,) = struct.unpack("<Q", head)
        text = f.read(size)
        whole.update(head + text)
        header = json.loads(text)
        header.pop("__metadata__", None)
        h.update(json.dumps(header, sort_keys=True).encode())
        h.update(json.dumps([meta.arch, meta.encoder, meta.arch_kwargs, meta.in_channels,
                             len(meta.classes)], sort_keys=True).encode())
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            whole.update(chunk)
    return h.hexdigest(), whole.hexdigest()


def graph_path(digest: str) -> Path:
    """The cached graph of the network with :func:`network_digest` ``digest`` (named for
    the installed torch, the exporter, read from its package metadata: no import)."""
    from importlib.metadata import PackageNotFoundError, version as package_version

    try:
        version = package_version("torch").split("+")[0]
    except PackageNotFoundError:  # no torch: only graphs exported elsewhere can be found
        version = "none"
    return cache_dir() / "onnx" / f"{digest}-torch{version}-opset{OPSET}-v2.onnx"


def cached_graph(digest: str, network: Callable[[], nn.Module], *, in_channels: int,
                 size: int) -> bytes:
    """The ONNX graph of the network with :func:`network_digest` ``digest``: from the
    cache, or exported from ``network()`` and kept there. Processes that need it at once
    (a local cluster's workers) wait for the first one's export (a lock file), and the
    graph is written under a temporary name, then renamed."""
    from ..atomic import replacing

    path = graph_path(digest)
    if path.is_file():
        return path.read_bytes()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - closed below
    except OSError as exc:  # a read-only home: export, and again next time
        log.debug("ONNX graph cache %s unusable: %s", path.parent, exc)
        return _export_for_runtime(network(), in_channels=in_channels, size=size)
    import fcntl

    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # another process exported it while this one waited
            return path.read_bytes()
        graph = _export_for_runtime(network(), in_channels=in_channels, size=size)
        with replacing(path) as tmp:
            Path(tmp).write_bytes(graph)
    return graph


def _export_for_runtime(network: nn.Module, *, in_channels: int, size: int) -> bytes:
    try:
        return to_onnx_fast(network, in_channels=in_channels, size=size)
    except Exception as exc:  # noqa: BLE001 - the tracing exporter failed or is gone
        log.debug("TorchScript-based ONNX export failed (%s); torch.export's next", exc)
    try:
        return to_onnx(network, in_channels=in_channels, size=size)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one line
        raise ConfigError(f"torch could not export the network to ONNX for onnxruntime "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                          "predict with --runtime torch") from exc


def ort_session(graph: bytes, *, device: str, threads: int | None = None) -> Any:
    """An ONNX Runtime session of ``graph``: ``threads`` intra-op threads (default: what
    ``--threads`` set, :func:`~geoseg.model.devices.model_threads`), CUDA's provider on a
    CUDA device."""
    from .devices import model_threads
    from .runtimes import ORT_HINT

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"onnxruntime is not installed: {ORT_HINT}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or model_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are not the user's
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(f"--device {device} with --runtime onnxruntime needs "
                              "onnxruntime-gpu (pip install onnxruntime-gpu); or use "
                              "--runtime torch")
        index = int(device[5:]) if device.startswith("cuda:") else 0
        providers = [("CUDAExecutionProvider", {"device_id": index})]
    try:
        return ort.InferenceSession(graph, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise BundleError(f"onnxruntime cannot load the ONNX graph "
                          f"({str(exc).splitlines()[0][:200]})") from exc


class OnnxNetwork:
    """An ONNX Runtime session called like a network: (N, C, H, W) float32 in, the graph's
    first output out; numpy arrays in and out (what prediction on onnxruntime computes
    with), or a torch tensor in and a float32 tensor on its device out."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]
        import torch

        out = self(x.detach().float().cpu().numpy())
        return torch.from_numpy(out).to(x.device)


def session_bundle(meta: BundleMeta, graph: bytes, sha256: str, device: str) -> ModelBundle:
    """A prepared bundle whose network is an ONNX Runtime session of ``graph``."""
    from .bundle import ModelBundle

    return ModelBundle(meta, OnnxNetwork(ort_session(graph, device=device)), sha256, device,
                       prepared=True, fixed_batch=meta.fixed_batch, runtime="onnxruntime")
