"""Model input and output on the device: normalization, test-time augmentation views, the
batched forward pass to class probabilities.

Prediction sends raw tiles to the device in the scene's own pixel type (uint8 is a quarter
of float32's transfer) and normalizes them there (:func:`normalize_region`); training
normalizes chips on the host (:func:`normalize`). Both compute ``value * (scale / std) -
mean / std`` in float32, so they give the same numbers.

Everything after reading runs on the arrays of the bundle's runtime (:mod:`geoseg.arrays`):
torch tensors on the model's device, or numpy arrays for ONNX Runtime, which then runs
without importing torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..arrays import (array_namespace, from_host, is_numpy_namespace, is_torch_array, rot90,
                      softmax)
from ..arrays import device as device_of
from .bundle import BundleMeta, ModelBundle
from .devices import device_kind, set_tf32
from .tta import TTA, check_tta


def normalize(pixels: np.ndarray, valid: np.ndarray, meta: BundleMeta,
              out: np.ndarray | None = None) -> np.ndarray:
    """Raw band values (C, H, W) -> float32 model input; invalid pixels become 0.

    ``(value * scale - mean) / std`` per band; 0 after normalization is the band mean, so
    masked pixels carry no signal (the same as the network's own zero padding).
    """
    c = pixels.shape[0]
    scale = np.asarray(meta.scale, np.float32).reshape(c, 1, 1)
    mean = np.asarray(meta.mean, np.float32).reshape(c, 1, 1)
    std = np.asarray(meta.std, np.float32).reshape(c, 1, 1)
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    np.multiply(pixels, scale / std, out=out, casting="unsafe")
    out -= mean / std
    # assignment, not multiplication: NaN * 0 is NaN, and nodata must carry no signal
    fill = 0.0 if meta.nodata_value is None else (
        np.asarray(meta.nodata_value, np.float32).reshape(c, 1, 1) * (scale / std) - mean / std)
    np.copyto(out, np.broadcast_to(fill, out.shape), where=~valid)
    return out


HOST_CASTS = {"float64": "float32", "uint32": "int64"}
"""Pixel types converted on the host before the transfer: float64 halves (the model runs in
float32), uint32 has no CUDA kernels; every other supported type travels as it is."""


def to_device(pixels: np.ndarray, valid: np.ndarray, device: str,
              xp: Any = None) -> tuple[Any, Any]:
    """A block's raw pixels (C, H, W) and validity (H, W) as arrays of ``xp`` (default:
    torch) on ``device``; on CUDA through page-locked memory, copied without blocking the
    host."""
    cast = HOST_CASTS.get(pixels.dtype.name)
    if cast:
        pixels = pixels.astype(cast)
    pixels = np.ascontiguousarray(pixels)
    if xp is not None and is_numpy_namespace(xp):
        return pixels, valid
    import torch

    px, ok = torch.from_numpy(pixels), torch.from_numpy(valid)
    if device.startswith("cuda"):
        return (px.pin_memory().to(device, non_blocking=True),
                ok.pin_memory().to(device, non_blocking=True))
    return px, ok


def _per_band(values: tuple[float, ...] | list[float]) -> np.ndarray:
    return np.asarray(values, np.float32)


def normalize_region(raw: Any, valid: Any, meta: BundleMeta, *,
                     rescale: tuple[tuple[float, ...], ...] | None = None,
                     channels_last: bool = True) -> Any:
    """A block's raw pixels (C, H, W) in any pixel type -> float32 model input, an array of
    the same kind on the same device. ``channels_last``: (H, W, C), the layout a torch
    network runs in, so tiles cut from it and stacked need no copy before the network;
    else (C, H, W), what ONNX Runtime takes (normalized without a transposing copy: 8 ms
    against 50 ms for a 1216^2 region of 3 bands). A pixel shared by overlapping tiles is
    normalized once. Pixels where ``valid`` (H, W) is False become 0 (see
    :func:`normalize`).

    ``rescale``: per band (gain, offset, low, high); raw values become ``clip(value * gain +
    offset, low, high)`` first (``--stretch``, ``--input-range``: geoseg.inputs.fit)."""
    xp, where = array_namespace(raw), device_of(raw)
    c = raw.shape[0]
    shape = (1, 1, c) if channels_last else (c, 1, 1)

    def per_band(values: tuple[float, ...] | list[float] | np.ndarray) -> Any:
        return from_host(xp, np.asarray(values, np.float32).reshape(shape), where)

    scale, mean, std = _per_band(meta.scale), _per_band(meta.mean), _per_band(meta.std)
    gain, offset = scale / std, mean / std  # float32, as the host's normalize
    if channels_last:
        x = xp.empty((*raw.shape[1:], c), dtype=xp.float32, device=where)
        x[...] = xp.permute_dims(raw, (1, 2, 0))
    else:
        x = xp.astype(raw, xp.float32, copy=True)
    if rescale is not None:
        g, o, lo, hi = (per_band(v) for v in zip(*rescale, strict=True))
        x *= g
        x += o
        x[...] = xp.minimum(xp.maximum(x, lo), hi)
    x *= per_band(gain)
    x -= per_band(offset)
    if bool(xp.all(valid)):  # most blocks: no pass over the block for nothing
        return x
    # assignment, not multiplication: NaN * 0 is NaN, and nodata must carry no signal
    if meta.nodata_value is None:
        if channels_last:
            x[~valid] = 0.0
        else:
            x[:, ~valid] = 0.0
        return x
    mask = valid[:, :, None] if channels_last else valid[None, ...]
    return xp.where(mask, x, per_band(_per_band(meta.nodata_value) * gain - offset))


def resize_tiles(x: Any, size: int) -> Any:
    """(N, C, H, W) -> (N, C, size, size) in float32: the area average of the pixels each
    output pixel covers when shrinking (GDAL's ``average``; no aliasing), bilinear
    interpolation of pixel centres when enlarging. Used both ways around the network when
    a scene is predicted at the model's GSD (:func:`geoseg.inputs.fit.model_zoom`): tiles of the
    scene to the network's size, probabilities back to the scene's pixels (a convex
    combination, so they still sum to 1).

    torch's kernels, for numpy arrays too (zero-copy): the one step of ONNX Runtime's path
    that imports torch. The same sampling written in the array API (a difference of
    cumulative sums per output pixel) took 0.62 s for a 2560^2 tile of 3 bands to 256^2
    where torch's ``area`` takes 0.015 s."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    import torch

    if not is_torch_array(x):
        return resize_tiles(torch.from_numpy(np.ascontiguousarray(x)), size).numpy()
    if x.shape[-1] > size:
        return torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                           align_corners=False)


def _view(xp: Any, x: Any, k: int, flip: bool) -> Any:
    x = rot90(xp, x, k)
    return xp.flip(x, axis=3) if flip else x


def _unview(xp: Any, p: Any, k: int, flip: bool) -> Any:
    p = xp.flip(p, axis=3) if flip else p
    return rot90(xp, p, -k)


@contextlib.contextmanager
def _torch_inference(x: Any, device: str, precision: str) -> Iterator[None]:
    """torch's inference mode and ``precision``'s TF32 setting for tensors; nothing for
    numpy arrays."""
    if not is_torch_array(x):
        yield
        return
    import torch

    set_tf32(device, precision)
    with torch.inference_mode():
        yield


def _autocast(x: Any, device: str, precision: str) -> Any:
    """torch's autocast to ``precision`` (bfloat16, float16) for tensors; else nothing."""
    if precision not in ("bfloat16", "float16") or not is_torch_array(x):
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_kind(device), dtype=getattr(torch, precision))


def _channels_last(x: Any) -> Any:
    if not is_torch_array(x):
        return x
    import torch

    return x.contiguous(memory_format=torch.channels_last)


def views_per_forward(device: str, views: int) -> int:
    """How many TTA views of a batch go through the network together: all of them on CUDA
    (one launch sequence of ``views x batch`` tiles keeps the GPU busy, where each view
    alone would be a small batch), one at a time elsewhere (a CPU's throughput does not grow
    with the batch, and its memory would grow ``views`` times)."""
    return views if device_kind(device) == "cuda" else 1


def forward_probabilities(bundle: ModelBundle, batch: Any, *, tta: str = "none",
                          precision: str = "float32") -> Any:
    """Class probabilities (N, K, H, W) float32 for a normalized batch, an array of the
    batch's kind (a torch tensor on the model's device, or a numpy array).

    For tensors: inference_mode, channels_last, non-blocking copies; the network runs under
    autocast to ``precision`` (a resolved name of ``devices.PRECISIONS``; float32 and tf32:
    no autocast, TF32 on CUDA only for tf32). The network sees whole tiles; softmax runs in
    float32. With ``tta`` (see :data:`TTA`) the mean of the views' probabilities, summed in
    a fixed order; the views go through the network :func:`views_per_forward` at a time.
    """
    device = bundle.device
    views = TTA[check_tta(tta)]
    together = views_per_forward(device, len(views))
    xp = array_namespace(batch)
    with _torch_inference(batch, device, precision):
        x = batch.to(device, non_blocking=True) if is_torch_array(batch) else batch
        m = x.shape[0]
        total: Any = None
        for first in range(0, len(views), together):
            group = views[first:first + together]
            xv = xp.concat([_view(xp, x, k, flip) for k, flip in group]) if len(group) > 1 \
                else _view(xp, x, *group[0])
            with _autocast(xv, device, precision):
                logits = run_network(bundle, _channels_last(xv))
            # softmax over classes is twice as fast on a contiguous (NCHW) tensor on the CPU
            probs = (xp.astype(logits, xp.float32) if bundle.meta.output == "probabilities"
                     else softmax(logits, axis=1))
            for i, (k, flip) in enumerate(group):
                p = _unview(xp, probs[i * m:(i + 1) * m, ...], k, flip)
                if total is None:
                    total = p
                else:
                    total += p
        assert total is not None  # TTA modes have one view or more
        if len(views) > 1:
            total /= len(views)
            total = _contiguous(total)
        return total


def _contiguous(x: Any) -> Any:
    return x.contiguous() if is_torch_array(x) else np.ascontiguousarray(x)


def run_network(bundle: ModelBundle, x: Any) -> Any:
    """The network's output for ``x``; a network that takes one batch size only (compiled,
    or a program with a static batch: ``bundle.fixed_batch``) runs ``x`` in batches of that
    size, the last padded with zero tiles whose output is dropped."""
    fixed = bundle.fixed_batch
    if fixed is None or x.shape[0] == fixed:
        return bundle.network(x)
    xp = array_namespace(x)
    outputs = []
    for first in range(0, x.shape[0], fixed):
        part = x[first:first + fixed, ...]
        n = part.shape[0]
        if n < fixed:
            part = xp.concat([part, xp.zeros((fixed - n, *part.shape[1:]), dtype=part.dtype,
                                             device=device_of(part))])
            part = _channels_last(part)
        outputs.append(bundle.network(part)[:n, ...])
    return xp.concat(outputs)
