"""A quick look at a scene's result: ``preview.png``, the scene with its classes over it and
a legend, at most :data:`PREVIEW_SIDE` pixels a side.

Both rasters are read decimated (GDAL picks their overviews: the published classes.tif
always has MODE overviews, a COG scene has its own), so a preview costs a small read
whatever the scene's size; a scene without overviews is read once at that reduced size
(GDAL still reads its blocks). A preview that cannot be made is logged, never a failed
scene. The scene's bands are stretched for display (2nd-98th
percentile per band, any pixel type); classes that are not background are blended over it
in their colours, nodata is greyed. Deterministic: the same outputs give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import replacing
from ..classes import NODATA_CLASS, ClassInfo

PREVIEW_SIDE = 1024
"""The longest side of a preview image, in pixels."""
OVERLAY_ALPHA = 0.5
LEGEND_ROW = 18


def preview_shape(height: int, width: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """(height, width) of the preview of a height x width raster (never enlarged)."""
    scale = max(height, width) / side
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def stretch(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C, H, W) any pixel type -> (H, W, 3) uint8: each band's 2nd-98th percentile over
    the valid pixels onto 0-255 (one band shown as grey)."""
    out = np.zeros((*pixels.shape[1:], 3), np.uint8)
    bands = list(pixels[:3]) if pixels.shape[0] >= 3 else [pixels[0]] * 3
    for i, band in enumerate(bands):
        values = band[valid].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        low, high = np.percentile(values, [2, 98])
        scaled = (band.astype(np.float64) - low) / max(high - low, 1e-9) * 255
        out[..., i] = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)  # NaN nodata
    return out


def render(image: np.ndarray, classes: np.ndarray, infos: Sequence[ClassInfo],
           shares: dict[str, float]) -> object:
    """The preview as a PIL image: ``image`` (H, W, 3) with ``classes`` (H, W) blended over
    it and a legend of class colours, names and ``shares`` (fractions) below."""
    from PIL import Image, ImageDraw

    from .styles import class_rgba

    out = image.astype(np.float32)
    for c in infos:
        r, g, b, a = class_rgba(c)
        if a == 0:
            continue
        where = classes == c.id
        out[where] = out[where] * (1 - OVERLAY_ALPHA) + np.array([r, g, b]) * OVERLAY_ALPHA
    out[classes == NODATA_CLASS] = out[classes == NODATA_CLASS] * 0.3 + 90
    height, width = classes.shape
    legend = LEGEND_ROW * (len(infos) + 1)
    canvas = Image.new("RGB", (max(width, 220), height + legend), (255, 255, 255))
    canvas.paste(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = height + 4
    for c in infos:
        r, g, b, a = class_rgba(c)
        fill = (r, g, b) if a else (255, 255, 255)
        draw.rectangle((6, y + 2, 18, y + 12), fill=fill, outline=(0, 0, 0))
        share = shares.get(c.name)
        label = c.name + (f"  {100 * share:.1f}%" if share is not None else "")
        draw.text((26, y), label, fill=(0, 0, 0))
        y += LEGEND_ROW
    return canvas


def write_preview(scene: str | os.PathLike, classes_path: str | os.PathLike,
                  out: str | os.PathLike, *, bands: Sequence[int],
                  infos: Sequence[ClassInfo]) -> Path:
    """``out`` (a PNG) for the scene and its published class raster, read decimated."""
    import rasterio
    from rasterio.enums import Resampling

    from ..inputs.sources import gdal_path

    with rasterio.open(classes_path) as ds:
        shape = preview_shape(ds.height, ds.width)
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    with rasterio.open(gdal_path(os.fspath(scene))) as ds:
        pixels = ds.read(list(bands), out_shape=(len(bands), *shape),
                         resampling=Resampling.average)
    valid = classes != NODATA_CLASS
    counts = np.bincount(classes[valid].ravel(), minlength=256)
    total = max(int(valid.sum()), 1)
    shares = {c.name: counts[c.id] / total for c in infos}
    image = render(stretch(pixels, valid), classes, infos, shares)
    out = Path(out)
    with replacing(out, suffix=".png") as tmp:
        image.save(tmp, format="PNG")  # type: ignore[attr-defined]
    return out


def try_preview(scene: str | os.PathLike, classes_path: str | os.PathLike,
                out: str | os.PathLike, *, bands: Sequence[int],
                infos: Sequence[ClassInfo]) -> Path | None:
    """:func:`write_preview`, or None with a logged warning when it cannot be made: a quick
    look never fails a scene whose outputs are complete."""
    import logging

    try:
        return write_preview(scene, classes_path, out, bands=bands, infos=infos)
    except Exception as exc:  # noqa: BLE001 - any reader or image error: no preview
        logging.getLogger("geoseg").warning("%s: no preview (%s)", scene, exc)
        return None
