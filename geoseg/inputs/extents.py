"""Extents in words, and coordinates that cannot be what their CRS says.

Messages that place data ("the scene spans x ..., y ...") print extents with digits enough
to tell their edges apart; labels that declare a geographic CRS but hold metre coordinates
are refused before reprojection squashes them into a point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.crs import CRS

# Coordinates a geographic CRS can hold, in degrees: longitudes -180..180, or 0..360 as some
# global data sets write them; latitudes -90..90.
GEOGRAPHIC_X = (-180.0, 360.0)
GEOGRAPHIC_Y = (-90.0, 90.0)


def extent_digits(bounds: tuple[float, ...], crs: CRS | None = None) -> int:
    """Decimals to print an extent (left, bottom, right, top) with: 6 in a geographic CRS
    (degrees; 1e-6 degree is about 0.1 m), else enough to resolve about a thousandth of
    its larger side, 1 to 6 (a 10 km extent: 1; 80 m: 2; 0.5 units: 4)."""
    if crs is not None and crs.is_geographic:
        return 6
    left, bottom, right, top = bounds
    span = max(right - left, top - bottom)
    if not math.isfinite(span) or span <= 0:
        return 2
    return min(6, max(1, 3 - math.floor(math.log10(span))))


def fmt_extent(bounds: tuple[float, ...], crs: CRS | None = None) -> str:
    """``x left..right, y bottom..top`` with :func:`extent_digits` decimals."""
    left, bottom, right, top = bounds
    d = extent_digits(bounds, crs)
    return f"x {left:.{d}f}..{right:.{d}f}, y {bottom:.{d}f}..{top:.{d}f}"


def check_geographic_bounds(frame: gpd.GeoDataFrame, *, source: str) -> None:
    """Refuse labels that declare a geographic CRS (degrees) but hold coordinates no
    geographic CRS can (x outside -180..360 or y outside -90..90, in the file's total
    bounds): typically metres written with a wrong or missing CRS (GeoJSON implies WGS 84).
    Reprojecting them would squash every feature into a point or fail later."""
    if frame.crs is None or not frame.crs.is_geographic or frame.empty:
        return
    bounds = tuple(float(v) for v in frame.total_bounds)
    if not all(math.isfinite(v) for v in bounds):
        return  # only empty geometries: nothing to place
    left, bottom, right, top = bounds
    if (GEOGRAPHIC_X[0] <= left and right <= GEOGRAPHIC_X[1]
            and GEOGRAPHIC_Y[0] <= bottom and top <= GEOGRAPHIC_Y[1]):
        return
    raise InvalidInputError(
        f"{source}: its coordinates ({fmt_extent(bounds)}) are impossible for a geographic "
        f"CRS, yet it declares {frame.crs.to_string()} (degrees: x within -180..360, y "
        f"within -90..90); "
        f"they are probably projected (metres): set the CRS they are really in, e.g. "
        f"ogr2ogr -a_srs EPSG:<code> fixed.gpkg {Path(source).name}")
