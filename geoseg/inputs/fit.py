"""Does a scene fit a model: its pixel size against the model's ground sample distance, its
pixel values against the radiometry the model was trained on; and the linear rescale that
makes them fit when the user asks for one (``--stretch``, ``--input-range``).

Checked when a scene is planned, before any block is predicted, so a misfit is one line
and no output (DESIGN.md promise 10: never predicted as if it fitted).

* Pixel size: metres per pixel from the CRS's linear unit, or geodesic metres per degree
  at the scene's centre for geographic CRSs. Within :data:`GSD_TOLERANCE` of the model's
  GSD a scene fits. Coarser by more than :data:`COARSEST` it is refused outright (a 30 m
  Landsat scene cannot show what a 1 m building model looks for). Any other difference is
  predicted at the model's GSD: the global tile grid is laid on the scene's own pixels with
  tiles of ``tile size x zoom`` scene pixels (:func:`model_zoom`), each tile is resampled
  to the network's tile on the device and its probabilities resampled back
  (:func:`geoseg.model.inference.resize_tiles`), so blocks, seams, stitching and every
  output stay on the scene's grid. ``--resample off`` predicts at the scene's own pixel
  size anyway.
* Radiometry: the range the model expects per band (its recorded ``input_range``; for
  bundles from before it was recorded, 0-255 when their scale is 1/255). A scene whose
  pixel type is the model's fits without a read; otherwise its values are sampled from a
  decimated read (overviews where the file has them, at most :data:`SAMPLE_SIDE` px a side)
  and must lie in that range. ``--stretch LOW,HIGH`` maps each band's LOW-th..HIGH-th
  percentile of that sample onto the expected range; ``--input-range LOW,HIGH`` maps a
  known range. Values outside are clipped. A model trained on stretched scenes (its
  ``stretch``) has every scene stretched so unless one of those two options is given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..model.radiometry import Ranges, expected_range

if TYPE_CHECKING:
    from ..grid import PixelGrid
    from ..model.meta import BundleMeta
    from .scene import Scene

GSD_TOLERANCE = 1.25
"""A scene whose pixel size is within this factor of the model's GSD is predicted at its own
pixel size; beyond it, at the model's GSD."""
COARSEST = 4.0
"""Scenes coarser than the model's GSD by more than this are refused (up to it, their tiles
are enlarged to the network's; beyond it there is nothing left to see)."""
FINEST = 20.0
"""Scenes finer than the model's GSD by more than this are refused: their tiles would be
``tile size x 20`` pixels and more (memory grows with its square); resample them first."""
SAMPLE_SIDE = 1024
"""The decimated read a scene's value range is measured on, in pixels a side."""
RANGE_SLACK = 0.02
"""Share of the expected range a scene's 0.5th/99.5th percentile may pass it by."""
RESAMPLE_MODES = ("auto", "off")

def training_radiometry(pixels: Sequence[tuple[np.ndarray, np.ndarray]]
                        ) -> tuple[str, Ranges]:
    """(pixel type, per band (low, high)) of training scenes given as (pixels (C, H, W),
    valid (H, W)): uint8's full 0-255 (its 1/255 scale covers it), else the values seen."""
    dtype = pixels[0][0].dtype
    n = pixels[0][0].shape[0]
    if dtype == np.uint8:
        return dtype.name, ((0.0, 255.0),) * n
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    for data, valid in pixels:
        if valid.any():
            values = data[:, valid]
            low = np.minimum(low, values.min(axis=1))
            high = np.maximum(high, values.max(axis=1))
    return dtype.name, tuple((float(lo), float(max(hi, lo + 1)))
                             for lo, hi in zip(low, high, strict=True))


def training_gsd(paths: Sequence[str]) -> float | None:
    """The median pixel size in metres of the training scenes (None without CRSs)."""
    from .scene import read_header

    sizes = [g for g in (metres_per_pixel(read_header(p).grid) for p in paths) if g]
    return float(np.median(sizes)) if sizes else None


def metres_per_pixel(grid: PixelGrid) -> float | None:
    """The mean of a grid's pixel width and height in metres (None without a CRS)."""
    crs = grid.crs
    if crs is None:
        return None
    t = grid.transform
    x_size, y_size = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if crs.is_geographic:
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        lon, lat = t * (grid.width / 2, grid.height / 2)
        _, _, dx = geod.inv(lon, lat, lon + x_size, lat)
        _, _, dy = geod.inv(lon, lat, lon, lat + y_size)
        return (abs(dx) + abs(dy)) / 2
    factor = crs.linear_units_factor[1]
    return (x_size + y_size) / 2 * factor


def model_zoom(scene: Scene, meta: BundleMeta, *, resample: str) -> float:
    """Scene pixels per model pixel along each axis: 1.0 when the scene is predicted at its
    own pixel size (it fits, ``resample='off'``, or the model or scene has no GSD), else
    ``model GSD / scene GSD`` (> 1: a finer scene, its tiles shrunk for the network; < 1: a
    coarser one, enlarged). Refuses scenes coarser than :data:`COARSEST` times the model's
    GSD (see the module's docstring)."""
    if meta.gsd is None or resample == "off":
        return 1.0
    gsd = metres_per_pixel(scene.grid)
    if gsd is None:
        return 1.0
    ratio = gsd / meta.gsd
    if ratio > COARSEST:
        raise InvalidInputError(
            f"{scene.path}: pixels are {_metres(gsd)}, {ratio:.0f}x coarser than the "
            f"{_metres(meta.gsd)} the model was trained at, too coarse to show what it "
            f"looks for; use a model trained near {_metres(gsd)}, or pass --resample off to "
            "predict anyway")
    if 1 / ratio > FINEST:
        raise InvalidInputError(
            f"{scene.path}: pixels are {_metres(gsd)}, {1 / ratio:.0f}x finer than the "
            f"{_metres(meta.gsd)} the model was trained at: resample it first (gdalwarp -tr "
            f"{meta.gsd:g} {meta.gsd:g} -r average), or pass --resample off")
    if 1 / GSD_TOLERANCE <= ratio <= GSD_TOLERANCE:
        return 1.0
    return 1 / ratio


def _metres(value: float) -> str:
    return f"{value:.3g} m"


def sample_values(ds: Any, bands: Sequence[int]) -> np.ndarray:
    """(C, N) valid pixel values of ``bands`` from a decimated read (GDAL picks the
    overview that fits, so a large scene costs a small read); a damaged file is the one
    line :func:`geoseg.inputs.scene.read_window` gives."""
    from rasterio.errors import RasterioError

    from ..grid import Window
    from .scene import corrupt_pixels

    scale = max(ds.height, ds.width) / SAMPLE_SIDE
    shape = (len(bands), max(1, round(ds.height / max(scale, 1))),
             max(1, round(ds.width / max(scale, 1))))
    try:
        data = ds.read(list(bands), out_shape=shape, masked=True)
    except RasterioError as exc:
        raise corrupt_pixels(ds.name, Window(0, 0, ds.height, ds.width), exc) from exc
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data.data).any(axis=0)
    return np.asarray(data.data)[:, valid]


def _sample(path: str, bands: Sequence[int]) -> np.ndarray:
    from .scene import open_raster

    with open_raster(path) as ds:
        return sample_values(ds, bands)


Sampler = Callable[[Sequence[int]], np.ndarray]
"""bands -> (C, N) valid values of a decimated read (:func:`sample_values`): how a scene that
is not a file (a lazy DataArray) gives its sample."""


def fit_radiometry(scene: Scene, bands: Sequence[int], meta: BundleMeta, *,
                   stretch: tuple[float, float] | None,
                   input_range: tuple[float, float] | None,
                   sample: Sampler | None = None) -> Ranges | None:
    """The per band source ranges to rescale from (None: the scene fits as it is); refuses
    a scene whose values do not fit and for which no rescale was asked (``stretch`` and
    ``input_range``: ``--stretch`` and ``--input-range``). The scene is read (a decimated
    sample) only when its type is not the model's or a stretch is asked or recorded in the
    model: from its file, or by ``sample``."""
    sample = sample or functools.partial(_sample, scene.path)
    expected = expected_range(meta)
    if stretch is None and input_range is None:
        stretch = meta.stretch  # a model trained on stretched scenes: each scene alike
    if stretch is None and input_range is None:
        if expected is None or scene.dtype == (meta.input_dtype or "uint8"):
            return None
        values = sample(bands)
        if values.size == 0:
            return None
        low, high = np.percentile(values, [0.5, 99.5], axis=1)
        for i, (lo, hi) in enumerate(expected):
            slack = RANGE_SLACK * (hi - lo)
            if low[i] < lo - slack or high[i] > hi + slack:
                raise InvalidInputError(
                    f"{scene.path}: {scene.dtype} values reach {low[i]:g}-{high[i]:g} in "
                    f"band {bands[i]} (0.5-99.5th percentile); the model expects "
                    f"{meta.input_dtype or 'uint8'} values in {lo:g}-{hi:g}: pass --stretch "
                    "2,98 (each band's 2nd-98th percentile onto that range) or "
                    "--input-range LOW,HIGH (the scene's known range, e.g. 0,10000)")
        return None
    if expected is None:
        raise InvalidInputError(f"the model records no input range, so {scene.path} cannot "
                                "be rescaled to it; give the model one (geoseg model "
                                "create --input-range) or predict without --stretch and "
                                "--input-range")
    if input_range is not None:
        return (input_range,) * len(bands)
    assert stretch is not None
    return scene_stretch(scene.path, bands, stretch, sample=sample)


def scene_stretch(path: str, bands: Sequence[int], stretch: Sequence[float], *,
                  sample: Sampler | None = None) -> Ranges:
    """Per band (LOW-th, HIGH-th percentile) of a scene's decimated sample (its file's, or
    ``sample``'s): the source range ``--stretch`` (or a model trained with ``stretch``) maps
    onto the expected one. Training measures its scenes with this too, so both see the same
    numbers."""
    values = (sample or functools.partial(_sample, path))(bands)
    if values.size == 0:
        raise InvalidInputError(f"{path}: no valid pixel to compute the stretch from")
    low, high = np.percentile(values, list(stretch), axis=1)
    return tuple((float(lo), float(hi) if hi > lo else float(lo) + 1.0)
                 for lo, hi in zip(low, high, strict=True))


def rescale_terms(source: Ranges, expected: Ranges) -> tuple[tuple[float, ...], ...]:
    """Per band ``(gain, offset, low, high)``: ``clip(value * gain + offset, low, high)``
    maps ``source`` linearly onto ``expected``."""
    out = []
    for (s_lo, s_hi), (e_lo, e_hi) in zip(source, expected, strict=True):
        gain = (e_hi - e_lo) / (s_hi - s_lo)
        out.append((gain, e_lo - s_lo * gain, e_lo, e_hi))
    return tuple(out)
