"""Labels -> a class raster on a scene's pixel grid.

Vector labels (GeoPackage, GeoJSON, shapefile: anything pyogrio reads) are reprojected to
the scene's CRS and burned with ``rasterio.features.rasterize`` (pixel centres inside a
polygon, ``all_touched=False``); the class of each polygon comes from an attribute through
a mapping from attribute values to class names. Label rasters are read on the scene's grid
(resampled with nearest neighbour when their grid differs) and their values mapped the same
way. The result is uint8: class ids 0..254, :data:`~geoseg.classes.NODATA_CLASS` (255) where
there is no label to learn from.

A label raster's nodata tag is not trusted blindly: tiled label rasters are often tagged
``nodata=0`` while 0 is their background class, which would silently drop every background
pixel. See :func:`resolve_raster_nodata` for the rule. Library code does not print: what
reading decided that a user should know comes back as one-line ``warnings`` in
:class:`GridLabels` (see :func:`read_labels`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.errors import RasterioIOError

from ..classes import NODATA_CLASS, ClassInfo
from ..errors import ConfigError, InputNotFoundError, InvalidInputError
from ..grid import PixelGrid
from ..inputs.extents import check_geographic_bounds, fmt_extent
from ..inputs.scene import open_raster, read_band

if TYPE_CHECKING:
    import geopandas as gpd

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")
UNLABELLED_POLICIES = ("background", "ignore")
AUTO_NODATA = "auto"
MOSTLY_NODATA = 0.5  # a nodata tag on more than this share of a label raster's pixels is said


@dataclass(frozen=True)
class LabelSpec:
    """How to turn a label file into class ids.

    ``attribute``: the vector field holding each polygon's class (None: every polygon is the
    one non-background class). ``mapping``: attribute or raster value (compared as text)
    -> class name; a value mapped to ``None`` is ignored (255). Without a mapping, values
    must be class ids or class names (any case). Raster labels without a
    mapping hold class ids already. ``unlabelled``: what pixels no polygon covers are,
    ``background`` (class named background/other...) or ``ignore`` (255, not learnt).
    ``layer``: the vector layer, when the file has several. ``nodata`` (label rasters
    only): the raster value that means "no label". ``"auto"`` (default): the raster's nodata
    tag, unless that value is also a class value, which is then read as its class (see
    :func:`resolve_raster_nodata`); a number: that value, whatever the tag says; ``None``
    (or ``"none"``): no value is nodata. 255 is never a class and always means no label.
    """

    attribute: str | None = None
    mapping: dict = field(default_factory=dict)
    unlabelled: str = "background"
    layer: str | None = None
    nodata: float | str | None = AUTO_NODATA


@dataclass(frozen=True, eq=False)
class GridLabels:
    """Class ids (H, W) uint8 on a scene's grid and what reading them decided.

    ``nodata``: the label-raster value read as "no label" (None: no value was, or the labels
    are vectors). ``warnings``: one-line notes a user should see (a nodata tag overruled, a
    label raster that is mostly nodata); the CLI prints them, library code does not.
    """

    ids: np.ndarray
    nodata: float | None = None
    warnings: tuple[str, ...] = ()


def is_vector(path: str | os.PathLike) -> bool:
    """True for files read as vectors (by suffix); everything else is read as a raster."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def class_lookup(spec: LabelSpec, classes: tuple[ClassInfo, ...], *, source: str) -> dict:
    """The spec's mapping as ``{str(value): class id or NODATA_CLASS}``; names checked."""
    by_name = {c.name.lower(): c.id for c in classes}
    out: dict[str, int] = {}
    for value, name in (spec.mapping or {}).items():
        if name is None or str(name).lower() in ("ignore", "nodata"):
            out[_key(value)] = NODATA_CLASS
            continue
        cid = by_name.get(str(name).lower())
        if cid is None:
            raise ConfigError(f"{source}: label value {value!r} maps to class {name!r}, which "
                              f"is not one of the classes "
                              f"({', '.join(c.name for c in classes)}); fix the mapping")
        out[_key(value)] = cid
    return out


def implicit_lookup(classes: tuple[ClassInfo, ...]) -> dict:
    """Without a mapping, a label value is a class id (``1``) or a class name."""
    out = {str(c.id): c.id for c in classes}
    out.update({c.name.lower(): c.id for c in classes})
    return out


def _key(value: object) -> str:
    """Mapping keys compare as text, so YAML ``1`` matches a field holding 1 or 1.0 or '1'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def background_id(classes: tuple[ClassInfo, ...]) -> int | None:
    """Id of the background class (by name), or None when the classes have none."""
    return next((c.id for c in classes if c.is_background), None)


def unlabelled_value(spec: LabelSpec, classes: tuple[ClassInfo, ...], *, source: str) -> int:
    if spec.unlabelled not in UNLABELLED_POLICIES:
        raise ConfigError(f"{source}: unlabelled {spec.unlabelled!r} is not one of "
                          f"{', '.join(UNLABELLED_POLICIES)}")
    if spec.unlabelled == "ignore":
        return NODATA_CLASS
    bg = background_id(classes)
    if bg is None:
        raise ConfigError(f"{source}: unlabelled pixels are to be background but no class is "
                          "named background; add one or set unlabelled: ignore")
    return bg


def read_vector_labels(path: str | os.PathLike, *,
                       layer: str | None = None) -> gpd.GeoDataFrame:
    """A GeoDataFrame of label polygons; refuses missing files and layers without a CRS."""
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: label file not found; check the path")
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise InvalidInputError(f"{path}: not a vector file pyogrio can read "
                                f"({str(exc).splitlines()[0]})") from exc
    if frame.crs is None:
        raise InvalidInputError(f"{path}: the labels have no CRS, so they cannot be placed on "
                                "the scene; assign one (ogr2ogr -a_srs EPSG:<code> out.gpkg in)")
    check_geographic_bounds(frame, source=str(path))
    return frame


def polygon_classes(frame: gpd.GeoDataFrame, spec: LabelSpec, classes: tuple[ClassInfo, ...],
                    *, source: str) -> np.ndarray:
    """Class id per feature (NODATA_CLASS for ignored ones), from ``spec``."""
    lookup = class_lookup(spec, classes, source=source)
    if spec.attribute is None:
        foreground = [c for c in classes if not c.is_background]
        if len(foreground) != 1:
            raise ConfigError(f"{source}: no class attribute given and there are "
                              f"{len(foreground)} non-background classes; set attribute "
                              f"(one of: {', '.join(_fields(frame)) or 'none'})")
        return np.full(len(frame), foreground[0].id, np.uint8)
    if spec.attribute not in frame.columns:
        raise InvalidInputError(f"{source}: has no attribute {spec.attribute!r}; the "
                                f"attributes are: {', '.join(_fields(frame)) or 'none'}")
    values = [_key(v) for v in frame[spec.attribute]]
    if not lookup:
        lookup = implicit_lookup(classes)
        values = [v.lower() for v in values]
    missing = sorted(set(values) - set(lookup))
    if missing:
        raise InvalidInputError(f"{source}: value(s) {', '.join(map(repr, missing))} of "
                                f"attribute {spec.attribute!r} have no class mapping; add "
                                "them to the mapping (a class name, or ignore to leave them out)")
    return np.array([lookup[v] for v in values], np.uint8)


def _fields(frame: gpd.GeoDataFrame) -> list[str]:
    return [c for c in frame.columns if c != frame.geometry.name]


def rasterize_vector_labels(path: str | os.PathLike, grid: PixelGrid, spec: LabelSpec,
                            classes: tuple[ClassInfo, ...]) -> np.ndarray:
    """Class ids (H, W) uint8 on ``grid`` from vector labels in any CRS.

    Polygons are reprojected to the grid's CRS and burned in file order (a later polygon
    wins where they overlap); polygons mapped to ignore burn last, so ignore areas stay
    ignored. Polygons that reach beyond the grid are clipped by rasterize itself.
    """
    from rasterio.features import rasterize
    from shapely import box

    source = Path(path).name
    if grid.crs is None:
        raise InvalidInputError(f"{source}: the scene has no CRS, so vector labels cannot be "
                                "placed on it")
    frame = read_vector_labels(path, layer=spec.layer)
    ids = polygon_classes(frame, spec, classes, source=source)
    fill = unlabelled_value(spec, classes, source=source)
    own_bounds, own_crs = frame.total_bounds, frame.crs
    frame = frame.to_crs(grid.crs)
    geoms = frame.geometry.values
    keep = ~(frame.geometry.isna().to_numpy() | frame.geometry.is_empty.to_numpy())
    footprint = box(*grid.window_bounds(grid.window))
    touching = keep & frame.geometry.intersects(footprint).to_numpy()
    if not touching.any():
        raise InvalidInputError(
            f"{source}: none of its {len(frame)} label features overlaps the scene "
            f"(labels span {fmt_extent(tuple(own_bounds), own_crs)} in "
            f"{own_crs.to_string()}; the scene spans {_fmt_bounds(grid)} in "
            f"{grid.crs.to_string()}); check that the labels belong to this scene")
    order = np.argsort(ids == NODATA_CLASS, kind="stable")  # ignored polygons burn last
    shapes = [(geoms[i], int(ids[i])) for i in order if touching[i]]
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform,
                     fill=fill, dtype="uint8", all_touched=False)


def _fmt_bounds(grid: PixelGrid) -> str:
    """The grid's extent in its CRS, with digits enough to tell its edges apart."""
    return fmt_extent(grid.window_bounds(grid.window), grid.crs)


def nodata_class(value: float, spec: LabelSpec, classes: tuple[ClassInfo, ...], *,
                 source: str) -> int | None:
    """The class id a label-raster ``value`` is read as (None: it is no class value).

    With a mapping, a value the mapping sends to a class (not to ignore); without one, a
    class id 0..K-1. 255 and NaN are never class values."""
    if math.isnan(value) or value == NODATA_CLASS:
        return None
    if spec.mapping:
        cid = class_lookup(spec, classes, source=source).get(_key(value))
        return None if cid is None or cid == NODATA_CLASS else cid
    return int(value) if float(value).is_integer() and 0 <= value < len(classes) else None


def resolve_raster_nodata(spec: LabelSpec, tag: float | None, values: np.ndarray,
                          classes: tuple[ClassInfo, ...], *,
                          source: str) -> tuple[float | None, str | None]:
    """The label-raster value to read as "no label", and a one-line warning (or None).

    ``spec.nodata`` a number or None: that, no warning. ``"auto"``: the raster's nodata
    ``tag``, except when the tag is also a class value (:func:`nodata_class`, e.g.
    ``nodata=0`` on a raster whose 0 is background): then no value is nodata, the tag's
    pixels are read as their class and the warning says so. A tag that is no class value
    stays nodata (it could not be read as any class); if it covers more than
    :data:`MOSTLY_NODATA` of the raster's pixels the warning says that most of the raster
    is left out (unless the mapping sends it to ignore: that was said). ``values`` are the
    raster's own pixels (band 1, before resampling).
    """
    choice = spec.nodata
    if choice is None or (isinstance(choice, str) and choice.strip().lower() == "none"):
        return None, None
    if not (isinstance(choice, str) and choice.strip().lower() == AUTO_NODATA):
        try:
            return float(choice), None
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: labels nodata {choice!r} is not a number, none or "
                              "auto; e.g. --truth-nodata 0 (nodata: 0 in a recipe's labels)"
                              ) from None
    if tag is None:
        return None, None
    tagged = np.isnan(values) if math.isnan(tag) else values == tag
    share = float(np.count_nonzero(tagged)) / max(values.size, 1)
    shown = _key(tag)
    cid = nodata_class(tag, spec, classes, source=source)
    if cid is not None and share == 0:
        return None, None  # no pixel holds the tag: whatever it means changes nothing
    if cid is not None:
        name = next((c.name for c in classes if c.id == cid), str(cid))
        return None, (f"{source}: its nodata value {shown} is also a class value ({name}) and "
                      f"covers {100 * share:.1f}% of the raster; reading {shown} as {name}, "
                      f"not as nodata (to ignore those pixels instead: --truth-nodata "
                      f"{shown}, or nodata: {shown} in a recipe's labels)")
    ignored_by_mapping = bool(spec.mapping) and _key(tag) in class_lookup(spec, classes,
                                                                          source=source)
    if share > MOSTLY_NODATA and not ignored_by_mapping:
        return tag, (f"{source}: its nodata value {shown} covers {100 * share:.1f}% of the "
                     f"raster (more than half), so only the rest is scored; if {shown} is a "
                     f"class, pass --truth-nodata none and map every value (--map "
                     f"{shown}=CLASS ...)")
    return tag, None


def read_raster_labels(path: str | os.PathLike, grid: PixelGrid, spec: LabelSpec,
                       classes: tuple[ClassInfo, ...]) -> np.ndarray:
    """Class ids (H, W) uint8 on ``grid`` from a label raster (band 1); see
    :func:`raster_labels`, which also returns the warnings."""
    return raster_labels(path, grid, spec, classes).ids


def raster_labels(path: str | os.PathLike, grid: PixelGrid, spec: LabelSpec,
                  classes: tuple[ClassInfo, ...]) -> GridLabels:
    """Class ids on ``grid`` from a label raster (band 1), with the nodata value used.

    Values go through ``spec.mapping`` when given (unmapped values are refused), else they
    must be class ids already; the nodata value (:func:`resolve_raster_nodata`) and 255
    become NODATA_CLASS. A raster on another grid is resampled (nearest) onto ``grid``;
    pixels it does not cover are 255.
    """
    from rasterio.warp import Resampling, reproject

    path = Path(path)
    source = path.name
    if not path.exists():
        raise InputNotFoundError(f"{path}: label file not found; check the path")
    try:
        with open_raster(path) as ds:
            same = (ds.height, ds.width, ds.transform) == (grid.height, grid.width,
                                                           grid.transform)
            if ds.crs is None and not same:
                raise InvalidInputError(f"{source}: the label raster has no CRS and is not "
                                        "on the scene's grid; assign one or align it")
            own = read_band(ds, 1, PixelGrid.of(ds).window)
            nodata, warning = resolve_raster_nodata(spec, ds.nodata, own, classes,
                                                    source=source)
            if same and (ds.crs is None or grid.crs is None or ds.crs == grid.crs):
                values = own
            else:
                # from the array, so that a tag read as a class is not masked by GDAL
                values = np.full((grid.height, grid.width), NODATA_CLASS, np.float64)
                reproject(own, values, src_transform=ds.transform, src_crs=ds.crs,
                          src_nodata=nodata, dst_transform=grid.transform, dst_crs=grid.crs,
                          dst_nodata=NODATA_CLASS, resampling=Resampling.nearest)
    except RasterioIOError as exc:
        raise InvalidInputError(f"{source}: not a label raster GDAL can read "
                                f"({str(exc).splitlines()[0]})") from exc
    invalid = values == NODATA_CLASS
    if nodata is not None:
        invalid |= np.isnan(values) if math.isnan(nodata) else values == nodata
    out = np.full(values.shape, NODATA_CLASS, np.uint8)
    present = np.unique(values[~invalid])
    lookup = class_lookup(spec, classes, source=source) if spec.mapping else None
    for value in present:
        if lookup is not None:
            cid = lookup.get(_key(value.item()))
            if cid is None:
                raise InvalidInputError(f"{source}: label value {_key(value.item())!r} has no "
                                        "class mapping; add it to the mapping")
        else:
            cid = int(value)
            if value != cid or not 0 <= cid < len(classes):
                raise InvalidInputError(f"{source}: label value {value} is not a class id "
                                        f"(0..{len(classes) - 1}); give a mapping")
        out[(values == value) & ~invalid] = cid
    if not (out != NODATA_CLASS).any():
        raise InvalidInputError(f"{source}: holds no label on the scene's grid; check that "
                                "the labels belong to this scene")
    return GridLabels(out, nodata, (warning,) if warning else ())


def read_labels(path: str | os.PathLike, grid: PixelGrid, spec: LabelSpec,
                classes: tuple[ClassInfo, ...]) -> GridLabels:
    """Class ids on ``grid`` from a vector or raster label file, with the warnings."""
    if is_vector(path):
        return GridLabels(rasterize_vector_labels(path, grid, spec, classes))
    return raster_labels(path, grid, spec, classes)


def labels_on_grid(path: str | os.PathLike, grid: PixelGrid, spec: LabelSpec,
                   classes: tuple[ClassInfo, ...]) -> np.ndarray:
    """Class ids (H, W) uint8 on ``grid`` from a vector or raster label file (the
    warnings of :func:`read_labels` dropped)."""
    return read_labels(path, grid, spec, classes).ids
