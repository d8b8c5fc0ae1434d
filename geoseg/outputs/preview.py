"""A quick look at a scene's result: ``preview.png``, the scene with its classes over it and
a legend, at most :data:`PREVIEW_SIDE` pixels a side.

The classes are read decimated from the published classes.tif's MODE overviews, a small
read whatever the scene's size. The scene's picture is read from its own overviews where
it has some; a scene without overviews is not decoded a second time: the local runner
picks its picture from the blocks it reads for the model (:class:`Thumbnail`, the pixel
nearest each preview pixel's centre), and a runner that cannot (the Dask runner's
assembling task) picks the same picture from a strip-by-strip read. A preview that cannot
be made is logged, never a failed scene. The scene's bands are stretched for display
(2nd-98th percentile per band, any pixel type); classes that are not background are
blended over it in their colours, nodata is greyed. Deterministic: the same outputs give
the same bytes, on either runner and at any block size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import replacing
from ..classes import NODATA_CLASS, ClassInfo
from ..grid import Window, nearest_picks

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


class Thumbnail:
    """The preview's picture of a scene, picked from full-resolution pixels as they pass:
    preview pixel (i, j) is scene pixel (``floor((i + 0.5) * H / h)``, the same for
    columns), the nearest to its centre, 0 where that pixel is not valid. Blocks add their
    windows in any order and from any thread; each preview pixel comes from one scene
    pixel, so the picture does not depend on the block grid or the runner. A scene without
    overviews is then decoded once, by the prediction, not a second time for its preview
    (an average over each box cost 16-40 ms a 1024^2 block, a pick costs well under 1)."""

    def __init__(self, height: int, width: int, *, bands: int, dtype: str) -> None:
        self.shape = preview_shape(height, width)
        self.rows = nearest_picks(height, self.shape[0])
        self.cols = nearest_picks(width, self.shape[1])
        self.picture = np.zeros((bands, *self.shape), dtype)
        self.filled = np.zeros(self.shape, bool)

    def add(self, pixels: np.ndarray, valid: np.ndarray, window: Window, *,
            within: Window | None = None) -> None:
        """(C, h, w) ``pixels`` and their (h, w) validity at ``window`` of the scene, or at
        ``within`` when they cover that larger window (a block read with its halo)."""
        if within is not None:
            inner_rows, inner_cols = window.slices(within=within)
            pixels, valid = pixels[:, inner_rows, inner_cols], valid[inner_rows, inner_cols]
        rows = self._inside(self.rows, window.row, window.row_stop)
        cols = self._inside(self.cols, window.col, window.col_stop)
        if rows.start == rows.stop or cols.start == cols.stop:
            return
        r = self.rows[rows] - window.row
        c = self.cols[cols] - window.col
        keep = valid[np.ix_(r, c)]
        self.picture[:, rows, cols] = np.where(keep, pixels[:, r][:, :, c], 0)
        self.filled[rows, cols] = True

    @staticmethod
    def _inside(picks: np.ndarray, start: int, stop: int) -> slice:
        """The preview pixels whose picked scene pixel lies in ``start:stop``."""
        return slice(int(np.searchsorted(picks, start)), int(np.searchsorted(picks, stop)))

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())


def scene_thumbnail(scene: str | os.PathLike, height: int, width: int, *,
                    bands: Sequence[int], strip: int = 512) -> np.ndarray:
    """The scene's picture for its preview: from its overviews where it has some (GDAL's
    average over the overview it picks, a small read), else the :class:`Thumbnail` of its
    full-resolution pixels, read a strip of rows at a time (the picture the local runner
    picks from its blocks, so both give the same)."""
    import rasterio
    from rasterio.enums import Resampling

    from ..inputs.scene import read_window
    from ..inputs.sources import gdal_path

    with rasterio.open(gdal_path(os.fspath(scene))) as ds:
        shape = preview_shape(height, width)
        if ds.overviews(bands[0]):
            return ds.read(list(bands), out_shape=(len(bands), *shape),
                           resampling=Resampling.average)
        thumbnail = Thumbnail(height, width, bands=len(bands), dtype=ds.dtypes[0])
        for row in range(0, height, strip):
            window = Window(row, 0, min(strip, height - row), width)
            pixels, valid = read_window(ds, window, bands=tuple(bands))
            thumbnail.add(pixels, valid, window)
        return thumbnail.picture


def has_overviews(scene: str | os.PathLike, band: int) -> bool:
    """Whether the scene's ``band`` has overviews (its preview picture is then read from
    them, not picked from the blocks)."""
    import rasterio

    from ..inputs.sources import gdal_path

    with rasterio.open(gdal_path(os.fspath(scene))) as ds:
        return bool(ds.overviews(band))


PNG_LEVEL = 3
"""zlib level of preview.png: a 1024 x 1078 preview takes 0.14 s at level 3 against 0.25 s
at Pillow's default 6, and comes out 1% smaller (a photo-like picture gains nothing from
the slower levels); it is written in the scene's tail, after the model's last batch."""


def write_preview(scene: str | os.PathLike, classes_path: str | os.PathLike,
                  out: str | os.PathLike, *, bands: Sequence[int],
                  infos: Sequence[ClassInfo], pixels: np.ndarray | None = None) -> Path:
    """``out`` (a PNG) for the scene and its published class raster, read decimated
    (``pixels``: the :func:`scene_thumbnail` when the caller read it already)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(classes_path) as ds:
        shape = preview_shape(ds.height, ds.width)
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        if pixels is None or pixels.shape[1:] != shape:
            pixels = scene_thumbnail(scene, ds.height, ds.width, bands=bands)
    valid = classes != NODATA_CLASS
    counts = np.bincount(classes[valid].ravel(), minlength=256)
    total = max(int(valid.sum()), 1)
    shares = {c.name: counts[c.id] / total for c in infos}
    image = render(stretch(pixels, valid), classes, infos, shares)
    out = Path(out)
    with replacing(out, suffix=".png") as tmp:
        image.save(tmp, format="PNG",  # type: ignore[attr-defined]
                   compress_level=PNG_LEVEL)
    return out


def try_preview(scene: str | os.PathLike, classes_path: str | os.PathLike,
                out: str | os.PathLike, *, bands: Sequence[int],
                infos: Sequence[ClassInfo], pixels: np.ndarray | None = None) -> Path | None:
    """:func:`write_preview`, or None with a logged warning when it cannot be made: a quick
    look never fails a scene whose outputs are complete. ``pixels``: the scene's picture
    (:func:`scene_thumbnail`) when the caller has it."""
    import logging

    try:
        return write_preview(scene, classes_path, out, bands=bands, infos=infos,
                             pixels=pixels)
    except Exception as exc:  # noqa: BLE001 - any reader or image error: no preview
        logging.getLogger("geoseg").warning("%s: no preview (%s)", scene, exc)
        return None
