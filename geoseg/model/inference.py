"""Model input and output on the device: normalization, test-time augmentation views, the
batched forward pass to class probabilities."""

from __future__ import annotations

import numpy as np
import torch

from .bundle import BundleMeta, ModelBundle
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
    np.copyto(out, 0, where=~valid)
    return out


def _view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(2, 3)) if k else x
    return x.flip(3) if flip else x


def _unview(p: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    p = p.flip(3) if flip else p
    return torch.rot90(p, -k, dims=(2, 3)) if k else p


def forward_probabilities(bundle: ModelBundle, batch: torch.Tensor, *,
                          tta: str = "none") -> torch.Tensor:
    """Class probabilities (N, K, H, W) float32 on the CPU for a normalized batch.

    inference_mode, channels_last; on CUDA non-blocking copies and autocast (bf16 where
    supported, else fp16). The network sees whole tiles; softmax runs in float32. With
    ``tta`` (see :data:`TTA`) the mean of the views' probabilities, summed in a fixed order.
    """
    device = bundle.device
    views = TTA[check_tta(tta)]
    with torch.inference_mode():
        x = batch.to(device, non_blocking=True)
        total: torch.Tensor | None = None
        for k, flip in views:
            xv = _view(x, k, flip).contiguous(memory_format=torch.channels_last)
            if device.startswith("cuda"):
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    logits = bundle.network(xv)
            else:
                logits = bundle.network(xv)
            # softmax over classes is twice as fast on a contiguous (NCHW) tensor on the CPU
            p = _unview(torch.softmax(logits.float().contiguous(), dim=1), k, flip)
            total = p if total is None else total.add_(p)
        assert total is not None  # TTA modes have one view or more
        if len(views) > 1:
            total = total.div_(len(views)).contiguous()
        return total.to("cpu")
