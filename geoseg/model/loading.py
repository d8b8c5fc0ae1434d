"""A bundle file ready to predict on a runtime: torch's prepared network
(:mod:`geoseg.model.optimize`), or an ONNX Runtime session of its graph. Loading for
onnxruntime imports no torch when the graph is an imported ONNX file or already in the
graph cache (:mod:`geoseg.model.onnx_graphs`)."""

from __future__ import annotations

import os

from .bundle import ModelBundle, load_bundle
from .meta import file_sha256, read_meta
from .onnx_graphs import cached_graph, network_digest, session_bundle


def load_for_prediction(path: str | os.PathLike, *, device: str, compile: bool = False,
                        batch_size: int = 8, runtime: str = "torch") -> ModelBundle:
    """The bundle at ``path`` ready to predict on ``runtime`` (a resolved name): for torch,
    :func:`~geoseg.model.bundle.load_bundle` then
    :func:`~geoseg.model.optimize.for_inference`; for onnxruntime, an imported ONNX graph
    or the smp network's exported graph in a session. A device that cannot take the
    network (no such GPU, out of memory, busy) is one DeviceError line."""
    from .devices import device_errors

    with device_errors():
        if runtime == "onnxruntime":
            meta = read_meta(path)
            if meta.network == "onnx":
                from .programs import read_program

                graph, sha = read_program(path), file_sha256(path)
            else:  # smp: exported once per machine; a cached graph needs no torch import
                digest, sha = network_digest(path, meta)  # one read of the file
                graph = cached_graph(digest, lambda: load_bundle(path, device="cpu").network,
                                     in_channels=meta.in_channels, size=meta.tile_size)
            return session_bundle(meta, graph, sha, device)
        from .optimize import for_inference

        return for_inference(load_bundle(path, device=device), compile=compile,
                             batch_size=batch_size)
