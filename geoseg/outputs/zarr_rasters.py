"""Class and probability rasters as one Zarr v3 group per scene (``--raster-format zarr``).

The group (``OUT/<stem>/prediction.zarr``)::

    classes        (y, x)         uint8, 255 where the input is nodata
    probabilities  (class, y, x)  uint8, probability x 255 (CF scale_factor 1/255)
    x (x), y (y)                  map coordinates of pixel centres (rectilinear grids)
    class (class)                 class ids (names and colours in the attributes)
    spatial_ref ()                CF grid mapping: crs_wkt and GeoTransform (rioxarray)

Georeferencing is written three ways, one per reader: the GeoZarr ``spatial:`` and
``proj:`` conventions (v0.1) on the group and the rasters, GDAL's ``_CRS`` attribute beside
the x/y coordinate arrays, and the CF grid mapping that xarray/rioxarray read.

Chunks follow the block grid: ``BlockGrid.step`` pixels on a side, and a block's window
starts at a multiple of the step (the last block of a row or column may cover several
chunks). Every chunk lies inside exactly one block, so any process that finishes a block
writes its chunks without a lock, a part file or a single writer (:func:`write_block`).
The group is built under a staging folder (the scene's parts folder, so an interrupted Dask
run resumes by block: a block's done record is written after its chunks) and published by
renaming that folder over the final name once its metadata is consolidated: readers see the
previous group or the new one, never a partial one (DESIGN.md promise 6).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from ..classes import CLASSES_TAG, NODATA_CLASS, ClassInfo
from ..errors import OutputNotWritableError
from ..names import temporary_path

if TYPE_CHECKING:
    from ..grid import PixelGrid, Window

ZARR_FORMAT: Final[Literal[3]] = 3
ZSTD_LEVEL = 1
"""Chunks are zstd-compressed at level 1: class maps compress ~20x at it, and a higher
level costs the workers that write the chunks time for a few percent of size."""
CONVENTIONS = [
    {"name": "spatial", "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
     "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/"
                   "v0.1/schema.json",
     "spec_url": "https://github.com/zarr-conventions/spatial/blob/v0.1/README.md",
     "description": "Spatial coordinate information"},
    {"name": "proj", "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
     "schema_url": "https://raw.githubusercontent.com/zarr-conventions/proj/refs/tags/"
                   "v0.1/schema.json",
     "spec_url": "https://github.com/zarr-conventions/proj/blob/v0.1/README.md",
     "description": "Coordinate reference system information for geospatial data"},
]
"""The GeoZarr conventions the group follows, registered in its ``zarr_conventions``."""


def geozarr_attributes(grid: PixelGrid) -> dict:
    """The ``spatial:`` and ``proj:`` attributes of ``grid`` (GeoZarr conventions v0.1):
    dimensions (y, x), the affine transform in rasterio's order (a, b, c, d, e, f), shape,
    bbox and pixel registration; the CRS as an authority code where it has one, WKT2 too."""
    t = grid.transform
    corners = [t * (c, r) for r in (0, grid.height) for c in (0, grid.width)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    attrs: dict[str, Any] = {
        "zarr_conventions": CONVENTIONS if grid.crs is not None else CONVENTIONS[:1],
        "spatial:dimensions": ["y", "x"], "spatial:transform_type": "affine",
        "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "spatial:shape": [grid.height, grid.width],
        "spatial:bbox": [min(xs), min(ys), max(xs), max(ys)],
        "spatial:registration": "pixel"}
    if grid.crs is not None:
        epsg = grid.crs.to_epsg()
        if epsg is not None:
            attrs["proj:code"] = f"EPSG:{epsg}"
        attrs["proj:wkt2"] = grid.crs.to_wkt()
    return attrs


def _gdal_crs(grid: PixelGrid) -> dict:
    """GDAL's Zarr driver reads a raster's CRS from its ``_CRS`` attribute."""
    if grid.crs is None:
        return {}
    return {"_CRS": {"wkt": grid.crs.to_wkt(), "projjson": grid.crs.to_dict(projjson=True)}}


def create_group(path: str | os.PathLike, grid: PixelGrid, classes: tuple[ClassInfo, ...],
                 tags: dict, *, probabilities: bool, chunk: int) -> Path:
    """A new, empty group at ``path`` (replacing whatever is there) with the scene's
    arrays, coordinates and attributes; chunks of ``chunk`` pixels (the block grid's step).
    Unwritten chunks read as the fill value: classes 255 (nodata), probabilities 0."""
    import zarr
    from zarr.codecs import ZstdCodec

    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    geo = geozarr_attributes(grid)
    classes_json: list[Any] = [{"id": c.id, "name": c.name, "color": c.color} for c in classes]
    attributes: dict[str, Any] = {**geo, **{k: v for k, v in tags.items() if k != CLASSES_TAG},
                                  "classes": classes_json, "nodata": NODATA_CLASS}
    group = zarr.create_group(path, zarr_format=ZARR_FORMAT, attributes=attributes)
    compressors = ZstdCodec(level=ZSTD_LEVEL)
    raster_attrs = {**geo, **_gdal_crs(grid), "grid_mapping": "spatial_ref",
                    "coordinates": "spatial_ref"}
    ids = [c.id for c in classes]
    group.create_array(
        "classes", shape=(grid.height, grid.width), chunks=(chunk, chunk), dtype="uint8",
        fill_value=NODATA_CLASS, dimension_names=("y", "x"), compressors=compressors,
        attributes={**raster_attrs, "_FillValue": NODATA_CLASS, "long_name": "class",
                    "flag_values": ids,
                    "flag_meanings": " ".join(c.name.replace(" ", "_") for c in classes),
                    "classes": classes_json})
    if probabilities:
        group.create_array(
            "probabilities", shape=(len(classes), grid.height, grid.width),
            chunks=(1, chunk, chunk), dtype="uint8", fill_value=0,
            dimension_names=("class", "y", "x"), compressors=compressors,
            attributes={**raster_attrs, "long_name": "class probability",
                        "scale_factor": 1 / 255, "add_offset": 0.0, "units": "1"})
        group.create_array("class", shape=(len(classes),), dtype="uint8", fill_value=0,
                           dimension_names=("class",),
                           attributes={"long_name": "class id",
                                       "class_names": [c.name for c in classes]})[:] = ids
    t = grid.transform
    if grid.is_rectilinear:  # pixel centres; a rotated grid has only its GeoTransform
        x = group.create_array("x", shape=(grid.width,), dtype="float64", fill_value=0.0,
                               dimension_names=("x",), attributes=_axis_attrs(grid, "x"))
        x[:] = t.c + (np.arange(grid.width) + 0.5) * t.a
        y = group.create_array("y", shape=(grid.height,), dtype="float64", fill_value=0.0,
                               dimension_names=("y",), attributes=_axis_attrs(grid, "y"))
        y[:] = t.f + (np.arange(grid.height) + 0.5) * t.e
    ref: dict[str, Any] = {"GeoTransform": " ".join(repr(float(v)) for v in t.to_gdal())}
    if grid.crs is not None:
        ref.update(crs_wkt=grid.crs.to_wkt(), spatial_ref=grid.crs.to_wkt())
    group.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0,
                       attributes=ref)[...] = 0
    return path


def _axis_attrs(grid: PixelGrid, axis: str) -> dict:
    geographic = grid.crs is not None and grid.crs.is_geographic
    if geographic:
        return {"standard_name": "longitude" if axis == "x" else "latitude",
                "units": "degrees_east" if axis == "x" else "degrees_north"}
    return {"standard_name": f"projection_{axis}_coordinate", "units": "metre"}


class ZarrRasters:
    """A scene's group open for writing blocks: :meth:`write` puts a block's classes (and
    probabilities) at its window. Cheap to open (two small metadata reads), so a Dask task
    opens it per block."""

    def __init__(self, path: str | os.PathLike) -> None:
        import zarr

        self.path = Path(path)
        group = zarr.open_group(self.path, mode="r+", zarr_format=ZARR_FORMAT)
        self.classes: Any = group["classes"]  # zarr.Array (indexing typed loosely)
        self.probs: Any = group["probabilities"] if "probabilities" in group else None

    def write(self, classes: np.ndarray, window: Window,
              probs: np.ndarray | None = None) -> None:
        """``classes`` (H, W) and ``probs`` (K, H, W) uint8 at ``window``; the window must
        cover whole chunks (a block's window does)."""
        rows = slice(window.row, window.row + window.height)
        cols = slice(window.col, window.col + window.width)
        self.classes[rows, cols] = classes
        if self.probs is not None and probs is not None:
            self.probs[:, rows, cols] = probs


def write_block(path: str | os.PathLike, classes: np.ndarray, window: Window,
                probs: np.ndarray | None = None) -> None:
    """Write one finished block into the group at ``path`` (another process may write
    other blocks at the same time: their chunks are disjoint)."""
    ZarrRasters(path).write(classes, window, probs)


def publish_group(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Consolidate the staging group's metadata and rename it over ``final``.

    A folder cannot be renamed over a non-empty one, so an existing ``final`` (--overwrite)
    is first renamed to a hidden temporary name and removed after: a reader sees the old
    group or the new one. A file system that cannot rename the folder (an object store
    mounted as files, another device) gets one line, and ``final`` is left as it was."""
    import zarr

    staging, final = Path(staging), Path(final)
    with warnings.catch_warnings():  # consolidated metadata: not yet in the v3 core spec
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(staging, zarr_format=ZARR_FORMAT)
    old = temporary_path(final) if final.exists() else None
    try:
        if old is not None:
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except OSError:
            if old is not None:
                os.replace(old, final)
            raise
    except OSError as exc:
        raise OutputNotWritableError(
            f"{final}: cannot publish the Zarr group by renaming it ({exc.strerror or exc}); "
            "Zarr outputs need a file system that renames folders atomically (not an "
            "object store); use --raster-format cog there") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
