"""Model input and output on the device: normalization, test-time augmentation views, the
batched forward pass to class probabilities.

Prediction sends raw tiles to the device in the scene's own pixel type (uint8 is a quarter
of float32's transfer) and normalizes them there (:func:`normalize_region`); training
normalizes chips on the host (:func:`normalize`). Both compute ``value * (scale / std) -
mean / std`` in float32, so they give the same numbers."""

from __future__ import annotations

import numpy as np
import torch

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


def to_device(pixels: np.ndarray, valid: np.ndarray,
              device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's raw pixels (C, H, W) and validity (H, W) as tensors on ``device``; on CUDA
    through page-locked memory, copied without blocking the host."""
    cast = HOST_CASTS.get(pixels.dtype.name)
    if cast:
        pixels = pixels.astype(cast)
    px, ok = torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(valid)
    if device.startswith("cuda"):
        return (px.pin_memory().to(device, non_blocking=True),
                ok.pin_memory().to(device, non_blocking=True))
    return px, ok


def normalize_region(raw: torch.Tensor, valid: torch.Tensor, meta: BundleMeta, *,
                     rescale: tuple[tuple[float, ...], ...] | None = None) -> torch.Tensor:
    """A block's raw pixels (C, H, W) in any pixel type -> float32 model input (H, W, C) on
    their device, in the channels-last layout the network runs in: tiles cut from it and
    stacked are already channels-last, and a pixel shared by overlapping tiles is normalized
    once. Pixels where ``valid`` (H, W) is False become 0 (see :func:`normalize`).

    ``rescale``: per band (gain, offset, low, high); raw values become ``clip(value * gain +
    offset, low, high)`` first (``--stretch``, ``--input-range``: geoseg.inputs.fit)."""
    scale = torch.tensor(meta.scale, dtype=torch.float32)
    mean = torch.tensor(meta.mean, dtype=torch.float32)
    std = torch.tensor(meta.std, dtype=torch.float32)
    gain, offset = (scale / std).to(raw.device), (mean / std).to(raw.device)
    x = torch.empty((*raw.shape[1:], raw.shape[0]), dtype=torch.float32, device=raw.device)
    x.copy_(raw.permute(1, 2, 0))
    if rescale is not None:
        g, o, lo, hi = (torch.tensor(v, dtype=torch.float32, device=raw.device)
                        for v in zip(*rescale, strict=True))
        x.mul_(g).add_(o)
        torch.maximum(x, lo, out=x)
        torch.minimum(x, hi, out=x)
    x.mul_(gain).sub_(offset)
    if bool(valid.all()):  # most blocks: no pass over the block for nothing
        return x
    # assignment, not multiplication: NaN * 0 is NaN, and nodata must carry no signal
    if meta.nodata_value is None:
        return x.masked_fill_(~valid[:, :, None], 0.0)
    fill = torch.tensor(meta.nodata_value, dtype=torch.float32).mul_(scale / std).sub_(
        mean / std).to(raw.device)
    return torch.where(valid[:, :, None], x, fill)


def resize_tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) in float32: the area average of the pixels each
    output pixel covers when shrinking (GDAL's ``average``; no aliasing), bilinear
    interpolation of pixel centres when enlarging. Used both ways around the network when
    a scene is predicted at the model's GSD (:func:`geoseg.inputs.fit.model_zoom`): tiles of the
    scene to the network's size, probabilities back to the scene's pixels (a convex
    combination, so they still sum to 1)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                           align_corners=False)


def _view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(2, 3)) if k else x
    return x.flip(3) if flip else x


def _unview(p: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    p = p.flip(3) if flip else p
    return torch.rot90(p, -k, dims=(2, 3)) if k else p


AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def views_per_forward(device: str, views: int) -> int:
    """How many TTA views of a batch go through the network together: all of them on CUDA
    (one launch sequence of ``views x batch`` tiles keeps the GPU busy, where each view
    alone would be a small batch), one at a time elsewhere (a CPU's throughput does not grow
    with the batch, and its memory would grow ``views`` times)."""
    return views if device_kind(device) == "cuda" else 1


def forward_probabilities(bundle: ModelBundle, batch: torch.Tensor, *, tta: str = "none",
                          precision: str = "float32") -> torch.Tensor:
    """Class probabilities (N, K, H, W) float32 on the model's device for a normalized
    batch.

    inference_mode, channels_last, non-blocking copies; the network runs under autocast to
    ``precision`` (a resolved name of ``devices.PRECISIONS``; float32 and tf32: no
    autocast, TF32 on CUDA only for tf32). The network sees whole tiles; softmax runs in
    float32. With ``tta`` (see :data:`TTA`) the mean of the views' probabilities, summed in
    a fixed order; the views go through the network :func:`views_per_forward` at a time.
    """
    device = bundle.device
    views = TTA[check_tta(tta)]
    dtype = AUTOCAST.get(precision)
    set_tf32(device, precision)
    together = views_per_forward(device, len(views))
    with torch.inference_mode():
        x = batch.to(device, non_blocking=True)
        m = x.shape[0]
        total: torch.Tensor | None = None
        for first in range(0, len(views), together):
            group = views[first:first + together]
            xv = torch.cat([_view(x, k, flip) for k, flip in group]) if len(group) > 1 \
                else _view(x, *group[0])
            xv = xv.contiguous(memory_format=torch.channels_last)
            if dtype is not None:
                with torch.autocast(device_kind(device), dtype=dtype):
                    logits = run_network(bundle, xv)
            else:
                logits = run_network(bundle, xv)
            # softmax over classes is twice as fast on a contiguous (NCHW) tensor on the CPU
            probs = (logits.float().contiguous() if bundle.meta.output == "probabilities"
                     else torch.softmax(logits.float().contiguous(), dim=1))
            for i, (k, flip) in enumerate(group):
                p = _unview(probs[i * m:(i + 1) * m], k, flip)
                total = p if total is None else total.add_(p)
        assert total is not None  # TTA modes have one view or more
        if len(views) > 1:
            total = total.div_(len(views)).contiguous()
        return total


def run_network(bundle: ModelBundle, x: torch.Tensor) -> torch.Tensor:
    """The network's output for ``x``; a network that takes one batch size only (compiled,
    or a program with a static batch: ``bundle.fixed_batch``) runs ``x`` in batches of that
    size, the last padded with zero tiles whose output is dropped."""
    fixed = bundle.fixed_batch
    if fixed is None or x.shape[0] == fixed:
        return bundle.network(x)
    outputs = []
    for first in range(0, x.shape[0], fixed):
        part = x[first:first + fixed]
        n = part.shape[0]
        if n < fixed:
            part = torch.cat([part, part.new_zeros((fixed - n, *part.shape[1:]))])
            part = part.contiguous(memory_format=torch.channels_last)
        outputs.append(bundle.network(part)[:n])
    return torch.cat(outputs)
