"""Opening and reading scenes: the only module that reads input rasters.

Reads are windowed and boundless: the part of a window outside the scene is filled with 0
and marked invalid. Validity comes from the scene's nodata value, alpha band or internal
mask (GDAL's mask flags), and NaNs in float data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError

from ..errors import InputNotFoundError, InvalidInputError
from ..grid import PixelGrid, Window, intersect
from .sources import gdal_path, is_virtual

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True, slots=True)
class Scene:
    """What geoseg needs to know about an input raster before reading it."""

    path: str
    grid: PixelGrid
    count: int
    dtype: str
    nodata: float | None
    data_bands: tuple[int, ...]
    """1-based band indexes that hold data (alpha bands left out)."""
    descriptions: tuple[str, ...] = ()
    """Band descriptions (names) as the file gives them, '' where none."""


@dataclass(frozen=True, slots=True)
class RasterHeader:
    """What opening a raster file tells before any pixel is read. ``path`` is the text the
    user gave (a local path, a URL or a ``/vsi*`` path; see :mod:`geoseg.inputs.sources`)."""

    path: str
    grid: PixelGrid
    count: int
    dtype: str
    nodata: float | None
    tags: dict
    alpha_bands: frozenset
    descriptions: tuple[str, ...] = ()


@contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[Any]:
    """``rasterio.open`` for reading, without rasterio's NotGeoreferencedWarning: geoseg
    checks georeferencing itself (:func:`require_crs`, ``--allow-no-crs``) and says so in
    its own words, so the library's two-line warning never reaches the user. URLs open
    through GDAL's network file systems (:func:`geoseg.inputs.sources.gdal_path`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(gdal_path(path))
    with ds:
        yield ds


def read_header(path: str | os.PathLike, *,
                hint: str = "give a GeoTIFF or another GDAL raster") -> RasterHeader:
    """Open ``path`` with GDAL and read its header; one-line errors for a missing file, a
    folder, or a file GDAL cannot read (``hint`` says what to give instead). URLs and
    ``/vsi*`` paths are opened without a local check."""
    path = os.fspath(path)
    remote = is_virtual(path)
    if not remote and not Path(path).exists():
        raise InputNotFoundError(f"{path}: file not found; check the path")
    if not remote and Path(path).is_dir():
        raise InvalidInputError(f"{path}: is a folder, not a raster file")
    try:
        with open_raster(path) as ds:
            alpha = frozenset(i + 1 for i, ci in enumerate(ds.colorinterp)
                              if ci == ColorInterp.alpha)
            return RasterHeader(path, PixelGrid.of(ds), ds.count, ds.dtypes[0], ds.nodata,
                                ds.tags(), alpha, tuple(d or "" for d in ds.descriptions))
    except RasterioIOError as exc:
        if remote:
            raise InvalidInputError(f"{path}: cannot open ({_first_line(exc)}); check the "
                                    "URL, that the server allows range requests, and the "
                                    "credentials (AWS_*, GS_*, AZURE_* variables)") from exc
        raise InvalidInputError(f"{path}: not a raster GDAL can read ({_first_line(exc)}); "
                                f"{hint}") from exc


def require_crs(header: RasterHeader, *, allow_no_crs: bool, outputs: str = "outputs") -> None:
    """Refuse a raster without a CRS unless the user allowed it."""
    if header.grid.crs is None and not allow_no_crs:
        raise InvalidInputError(f"{header.path}: has no CRS, so {outputs} could not be placed "
                                "on a map; assign one (gdal_edit.py -a_srs EPSG:<code>) or "
                                "pass --allow-no-crs")


def open_scene(path: str | os.PathLike, *, allow_no_crs: bool = False) -> Scene:
    """Inspect a scene and refuse what geoseg cannot use, with a one-line reason."""
    header = read_header(path)
    path, grid, count, dtype = header.path, header.grid, header.count, header.dtype
    if count == 0 or grid.height == 0 or grid.width == 0:
        raise InvalidInputError(f"{path}: the raster is empty ({count} bands, "
                                f"{grid.height} x {grid.width} pixels)")
    if dtype not in SUPPORTED_DTYPES:
        raise InvalidInputError(f"{path}: pixel type {dtype} is not supported; expected one "
                                f"of {', '.join(SUPPORTED_DTYPES)}")
    require_crs(header, allow_no_crs=allow_no_crs)
    data_bands = tuple(b for b in range(1, count + 1) if b not in header.alpha_bands)
    return Scene(path, grid, count, dtype, header.nodata, data_bands, header.descriptions)


def select_bands(scene: Scene, bands: Iterable[int] | None, *, expected: int,
                 names: Sequence[str] = ()) -> tuple[int, ...]:
    """1-based band indexes to feed a model that expects ``expected`` bands.

    ``bands`` (e.g. ``(3, 2, 1)``) is used as given after checks; by default the bands
    whose descriptions are the model's band names (any order, case-insensitive), else the
    scene's data bands (alpha left out) when their number fits.
    """
    label = f" ({', '.join(names)})" if names else ""
    described = {d.strip().lower(): i + 1 for i, d in enumerate(scene.descriptions) if d}
    if not bands and names and all(n.lower() in described for n in names):
        return tuple(described[n.lower()] for n in names)
    if bands:
        bands = tuple(int(b) for b in bands)
        bad = [b for b in bands if not 1 <= b <= scene.count]
        if bad:
            raise InvalidInputError(f"{scene.path}: has {scene.count} bands; band(s) "
                                    f"{', '.join(map(str, bad))} do not exist")
        if len(bands) != expected:
            raise InvalidInputError(f"{len(bands)} bands selected; the model expects "
                                    f"{expected}{label}")
        return bands
    if len(scene.data_bands) != expected:
        # the scene's own bands where it has enough, its first repeated where it has fewer
        # (a 1-band scene into an RGB model: 1,1,1)
        have = list(scene.data_bands) or [1]
        picks = have[:expected] if len(have) >= expected else have + [have[0]] * (
            expected - len(have))
        hint = ",".join(str(b) for b in picks)
        raise InvalidInputError(f"{scene.path}: has {len(scene.data_bands)} bands; the model "
                                f"expects {expected}{label}: pass --bands {hint} (or the "
                                "bands that hold them)")
    return scene.data_bands


def _first_line(exc: BaseException | None) -> str:
    """The most specific message in an exception chain: GDAL's own error sits at its end
    ("TIFFFillTile: Read error at row 384 ...") behind rasterio's "Read failed"."""
    messages: list[str] = []
    while exc is not None and len(messages) < 10:
        messages.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    useful = [m for m in messages if "see previous exception" not in m.lower()]
    return (useful or messages)[-1]


def read_window(ds: Any, window: Window, *,
                bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (C, H, W) in the scene's dtype and a validity mask (H, W) for ``window``.

    Boundless: the window may reach past the scene; that part is 0 and invalid. A pixel is
    invalid where the GDAL mask says so (alpha, internal mask) or where every selected band
    equals nodata, or any is NaN.
    """
    pixels = np.zeros((len(bands), window.height, window.width), ds.dtypes[0])
    valid = np.zeros((window.height, window.width), bool)
    inner = intersect(window, Window(0, 0, ds.height, ds.width))
    if inner is None:
        return pixels, valid
    rows, cols = inner.slices(within=window)
    try:
        data = ds.read(list(bands), window=inner.to_rasterio())
        pixels[:, rows, cols] = data
        valid[rows, cols] = _valid_mask(ds, data, inner, bands)
    except RasterioError as exc:
        raise corrupt_pixels(ds.name, inner, exc) from exc
    return pixels, valid


def corrupt_pixels(name: str, window: Window, exc: BaseException) -> InvalidInputError:
    """The one line for pixels GDAL could not read (a truncated or damaged file)."""
    return InvalidInputError(f"{name}: cannot read pixels at rows {window.row}-"
                             f"{window.row_stop}, cols {window.col}-{window.col_stop} "
                             f"({_first_line(exc)}); the file may be corrupt")


def read_band(ds: Any, band: int, window: Window) -> np.ndarray:
    """One band at ``window`` (inside the raster); a damaged file is one clear line."""
    try:
        return ds.read(band, window=window.to_rasterio())
    except RasterioError as exc:
        raise corrupt_pixels(ds.name, window, exc) from exc


def _valid_mask(ds: Any, data: np.ndarray, window: Window,
                bands: tuple[int, ...]) -> np.ndarray:
    flags = ds.mask_flag_enums[bands[0] - 1]
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        valid = ds.read_masks(bands[0], window=window.to_rasterio()) > 0
    else:
        valid = np.ones(data.shape[1:], bool)
    return valid & valid_values(data, ds.nodata)


def valid_values(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) of (C, H, W) ``data``: False where every band equals ``nodata`` or any is
    NaN (the value rule of :func:`read_window`, for pixels that come from an array)."""
    valid = np.ones(data.shape[1:], bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.all(data == data.dtype.type(nodata), axis=0)
    if data.dtype.kind == "f":
        valid &= ~np.any(np.isnan(data), axis=0)
    return valid


GDAL_CACHE_MB = 64
"""GDAL's block cache while predicting (GDAL's default is 5% of RAM, which would let memory
grow with the scene); an explicit GDAL_CACHEMAX in the environment wins."""


def gdal_env() -> rasterio.Env:
    """The GDAL settings every process that predicts runs under (bounded block cache)."""
    return rasterio.Env(**({} if "GDAL_CACHEMAX" in os.environ
                           else {"GDAL_CACHEMAX": GDAL_CACHE_MB}))
