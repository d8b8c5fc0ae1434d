"""Pixel grids and windows: the only place where affine math lives.

A :class:`Window` is a frozen value in integer pixels (row/col offsets, height/width).
A :class:`PixelGrid` is a raster's shape plus its affine transform and CRS. Every window's
transform is derived from the grid's transform and the window's offsets, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio import windows as rio_windows
from rasterio.crs import CRS
from rasterio.windows import Window as RioWindow


@dataclass(frozen=True, slots=True)
class Window:
    """An integer pixel window. ``row``/``col`` may be negative (boundless reads)."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """First row past the window (exclusive)."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """First column past the window (exclusive)."""
        return self.col + self.width

    @property
    def size(self) -> int:
        """Pixel count."""
        return self.height * self.width

    def to_rasterio(self) -> RioWindow:
        """The same window as rasterio's type, for reads and writes."""
        return RioWindow(self.col, self.row, self.width, self.height)

    def slices(self, *, within: "Window | None" = None) -> tuple[slice, slice]:
        """Row and column slices of this window inside ``within`` (default: origin 0, 0)."""
        row0 = self.row - (within.row if within else 0)
        col0 = self.col - (within.col if within else 0)
        return slice(row0, row0 + self.height), slice(col0, col0 + self.width)


def nearest_picks(length: int, count: int) -> np.ndarray:
    """Indexes of ``count`` pixels picked from ``length``: each the pixel nearest the centre
    of its ``length / count`` stretch (a nearest-neighbour decimation, as GDAL's)."""
    return ((np.arange(count) + 0.5) * length / count).astype(np.int64)


def intersect(a: Window, b: Window) -> Window | None:
    """The overlap of two windows, or None when they do not overlap."""
    row, col = max(a.row, b.row), max(a.col, b.col)
    row_stop, col_stop = min(a.row_stop, b.row_stop), min(a.col_stop, b.col_stop)
    if row_stop <= row or col_stop <= col:
        return None
    return Window(row, col, row_stop - row, col_stop - col)


@dataclass(frozen=True, slots=True)
class PixelGrid:
    """A raster's geometry: shape in pixels, affine transform, CRS (None if absent)."""

    height: int
    width: int
    transform: Affine
    crs: CRS | None

    @classmethod
    def of(cls, dataset: Any) -> "PixelGrid":
        """The grid of an open rasterio dataset."""
        return cls(dataset.height, dataset.width, dataset.transform, dataset.crs)

    @property
    def window(self) -> Window:
        """The whole grid as a window."""
        return Window(0, 0, self.height, self.width)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared CRS units (square metres for a metric CRS)."""
        return abs(self.transform.determinant)

    @property
    def is_rectilinear(self) -> bool:
        """True when the transform has no rotation or shear terms."""
        return self.transform.b == 0 and self.transform.d == 0

    def window_transform(self, window: Window) -> Affine:
        """The transform that maps ``window``'s pixel (0, 0) corner to map coordinates."""
        return rio_windows.transform(window.to_rasterio(), self.transform)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a window in map units; for rectilinear grids."""
        t = self.window_transform(window)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (window.width, window.height)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def to_map(geoms: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """Geometries in pixel coordinates (col, row) as the grid's map coordinates (x, y),
    with rasterio's arithmetic: the same numbers ``features.shapes(transform=...)`` gives."""
    t = grid.transform

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return shapely.transform(geoms, apply)
