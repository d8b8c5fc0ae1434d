"""A bundle's network in the form prediction runs: batch norm folded into the convolution
before it, the classifier (the last convolution, smp's segmentation head) in float32 and,
with ``compile``, compiled by ``torch.compile``.

The classifier runs outside autocast: under bfloat16 its logits would otherwise be rounded
to 8 mantissa bits before the float32 softmax, moving probabilities near 0.5 by up to 1%
and flipping classes along object edges. It is a ``C -> K`` convolution of the decoder's
last features, so float32 there costs nothing measurable; under float32 it changes nothing.

Both are inference-only rewrites of the same function. Folding (``torch.fx``'s
``optimization.fuse``) removes a pass over every activation after each convolution: Unet
resnet18, batch 8 of 256 px, 2 CPU threads: 0.98 s -> 0.92 s per batch. A network fx cannot
trace keeps its layers as they are. ``torch.compile`` (inductor) saved a further 3% on the
same CPU (0.89 s per batch) after 53 s of compiling, so it pays only for scenes of
thousands of tiles; a compiled network runs every batch at one fixed size (the last batch
of a block is padded), because each new batch size would compile again.

:func:`~geoseg.model.loading.load_for_prediction` reads a bundle file into this form.
Prediction always uses the prepared network (the local runner, the Dask workers and
``predict_scene`` alike), so their outputs stay byte-identical; training and the bundle
file keep the plain network.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError
from .bundle import ModelBundle
from .onnx_graphs import session_bundle, to_onnx

log = logging.getLogger(__name__)


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (eval mode) with each BatchNorm2d that follows a Conv2d folded
    into the convolution's weights; the network itself when fx cannot trace it."""
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.BatchNorm2d) for m in network.modules()):
        return network
    try:
        plain = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
        folded = fuse(plain.eval())
    except Exception as exc:  # noqa: BLE001 - any tracing failure: run the network as it is
        log.debug("batch norm not folded (%s: %s)", type(exc).__name__, exc)
        return network
    return folded.to(memory_format=torch.channels_last)


class Float32Classifier(nn.Module):
    """A convolution run outside autocast, on float32 inputs: float32 logits."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.conv(x.float())


def float32_classifier(network: nn.Module) -> nn.Module:
    """``network`` with its last convolution (the classifier: smp's
    ``segmentation_head.0``, the last layer of geoseg's extra networks) wrapped in
    :class:`Float32Classifier`, in place; unchanged when it has no convolution."""
    last = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            last = name
        elif isinstance(module, Float32Classifier):
            return network  # already wrapped
    if last is None:
        return network
    parent_name, _, child = last.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    setattr(parent, child, Float32Classifier(getattr(parent, child)))
    return network


def for_inference(bundle: ModelBundle, *, compile: bool = False, batch_size: int = 8,
                  runtime: str = "torch") -> ModelBundle:
    """``bundle`` with its network prepared for prediction on ``runtime`` (idempotent):
    for torch, an smp network folded, its classifier in float32 and, with ``compile``,
    compiled; an imported program as it is (compiled if asked); for onnxruntime, the
    network's ONNX graph (exported and cached by the bundle's hash) in a session."""
    if bundle.prepared and bundle.runtime == runtime:
        return bundle
    if runtime == "onnxruntime":
        return _on_onnxruntime(bundle)
    if bundle.meta.network != "smp":
        program = _compiled(bundle.network) if compile else bundle.network
        return replace(bundle, network=program, prepared=True,
                       fixed_batch=batch_size if compile else bundle.meta.fixed_batch)
    network = fold_batch_norm(bundle.network)
    if network is bundle.network:  # not folded: wrap a copy, the bundle keeps its own
        network = copy.deepcopy(network)
    network = float32_classifier(network)
    fixed = None
    if compile:
        network = _compiled(network)
        fixed = batch_size
    return replace(bundle, network=network, prepared=True, fixed_batch=fixed)


def _compiled(network: nn.Module) -> nn.Module:
    """``torch.compile`` of ``network``: an OptimizedModule, an nn.Module that calls the
    compiled graph, at one batch size."""
    return cast(nn.Module, torch.compile(network, dynamic=False))


def _on_onnxruntime(bundle: ModelBundle) -> ModelBundle:
    """An in-memory bundle's torch network as an ONNX Runtime session (exported anew:
    only a bundle file's graph is cached, by :func:`load_for_prediction`)."""
    meta = bundle.meta
    if meta.network != "smp":
        raise ConfigError(f"a {meta.network} network runs on torch, not onnxruntime")
    graph = to_onnx(bundle.network, in_channels=meta.in_channels, size=meta.tile_size)
    return session_bundle(meta, graph, bundle.sha256, bundle.device)
