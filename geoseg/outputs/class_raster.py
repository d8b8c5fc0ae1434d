"""Class rasters as vectorize reads them: open and validate, class names, kept classes.

A class raster has one integer band of class ids (``CLASS_DTYPES``), a CRS (unless
allowed otherwise) and, when geoseg wrote it, a GEOSEG_CLASSES tag with names and
background flags. Every refusal is a one-line :class:`~geoseg.errors.GeosegError` naming
the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..classes import NODATA_CLASS, ClassInfo, classes_from_tags
from ..errors import ConfigError, InvalidInputError
from ..grid import PixelGrid
from ..inputs.scene import read_header, require_crs

CLASS_DTYPES = ("uint8", "uint16", "int16", "int32")
"""Integer pixel types ``rasterio.features.shapes`` accepts for class rasters."""


@dataclass(frozen=True, slots=True)
class ClassRaster:
    """What vectorize needs to know about a class raster before reading it."""

    path: str
    grid: PixelGrid
    nodata: int | None
    classes: tuple[ClassInfo, ...] | None
    """From the GEOSEG_CLASSES tag; None for rasters geoseg did not write."""
    tags: dict


def open_class_raster(path: str | os.PathLike, *, allow_no_crs: bool = False) -> ClassRaster:
    """Inspect a class raster and refuse what cannot be vectorized, with a one-line reason."""
    header = read_header(path, hint="give the classes.tif written by geoseg predict")
    path, grid, count, dtype = header.path, header.grid, header.count, header.dtype
    nodata, tags = header.nodata, header.tags
    if count != 1:
        raise InvalidInputError(f"{path}: has {count} bands; a class raster has exactly one "
                                "(class ids); give classes.tif, not the scene or probabilities")
    if dtype not in CLASS_DTYPES:
        raise InvalidInputError(f"{path}: pixel type {dtype} holds no class ids; expected an "
                                f"integer type ({', '.join(CLASS_DTYPES)}), e.g. uint8 as "
                                "geoseg predict writes")
    require_crs(header, allow_no_crs=allow_no_crs, outputs="polygons")
    classes = classes_from_tags(tags)
    if nodata is not None:
        nodata = int(nodata) if float(nodata).is_integer() else None
    elif classes is not None:
        nodata = NODATA_CLASS
    return ClassRaster(str(path), grid, nodata, classes, tags)


def class_name(raster: ClassRaster, class_id: int) -> str:
    """The class's name from the raster's tags, else ``class_<id>``."""
    for c in raster.classes or ():
        if c.id == class_id:
            return c.name
    return f"class_{class_id}"


def resolve_classes(raster: ClassRaster,
                    keep_classes: str | int | Iterable[str | int] | None = None
                    ) -> tuple[int, ...] | None:
    """Class ids to polygonize; None means every value except nodata.

    By default a geoseg raster's background-like classes are left out; a raster geoseg did
    not write keeps every value (0 is not assumed to be background). ``keep_classes`` takes
    ids or names (``class_<id>`` works for foreign rasters), case-insensitive.
    """
    known = raster.classes or ()
    if keep_classes is None:
        if not known:
            return None
        return tuple(c.id for c in known if not c.is_background and c.id != raster.nodata)
    if isinstance(keep_classes, (str, int)):
        keep_classes = [keep_classes]
    by_name = {c.name.strip().lower(): c.id for c in known}
    ids = []
    for token in keep_classes:
        text = str(token).strip().lower()
        if text.lstrip("-").isdigit():
            ids.append(int(text))
        elif text in by_name:
            ids.append(by_name[text])
        elif text.startswith("class_") and text[6:].isdigit():
            ids.append(int(text[6:]))
        else:
            valid = ", ".join(f"{c.id}={c.name}" for c in known) or "class ids (integers)"
            raise ConfigError(f"--classes: {token!r} is not a class of {raster.path}; "
                              f"valid: {valid}")
    return tuple(sorted(set(ids) - {raster.nodata}))


def probability_bands(raster: ClassRaster, prob_path: str | os.PathLike,
                      keep: tuple[int, ...] | None) -> tuple[tuple[int, int], ...]:
    """Check a probability raster against the class raster; map class id -> band."""
    header = read_header(prob_path, hint="give the probabilities.tif written by geoseg "
                                         "predict")
    prob_path, grid, count, dtype = header.path, header.grid, header.count, header.dtype
    g = raster.grid
    if (grid.height, grid.width, grid.transform) != (g.height, g.width, g.transform):
        raise InvalidInputError(f"{prob_path}: grid {grid.height}x{grid.width} does not match "
                                f"{raster.path} ({g.height}x{g.width}, same transform "
                                "needed); give the probabilities written with it")
    if dtype != "uint8":
        raise InvalidInputError(f"{prob_path}: pixel type {dtype}; expected uint8 "
                                "(probability x 255) as geoseg predict writes")
    bands = tuple((c.id, i + 1) for i, c in enumerate(raster.classes or ()))
    for cid, band in bands:
        if band > count and (keep is None or cid in keep):
            raise InvalidInputError(f"{prob_path}: has {count} bands but {raster.path} has "
                                    f"{len(bands)} classes; give the matching probabilities")
    return bands
