"""Vector file formats of polygon outputs, chosen by the file's extension.

Polygons are always built as a GeoPackage layer (streamed in batches, atomically published:
:class:`~geoseg.vector.gpkg.LayerWriter`); another format is a translation of that finished
layer by pyogrio (GDAL's drivers) or, for GeoParquet, pyarrow a row group at a time in
Hilbert order (:mod:`geoseg.vector.geoparquet`), written under a staging name and renamed
into place (a shapefile's sidecar files with it), so nothing partial ever has the final
name. GDAL's translations hold the layer's features (polygons, not pixels) in memory once;
GeoParquet holds one row group.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import ConfigError, OutputNotWritableError

VECTOR_FORMATS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet",
                  ".geojson": "GeoJSON", ".shp": "ESRI Shapefile"}
"""File extension -> format written under it."""
FORMAT_NAMES = tuple(suffix[1:] for suffix in VECTOR_FORMATS)
"""``--vector-format`` values: the extensions without their dot."""
SHAPEFILE_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
SHAPEFILE_FIELDS = {"perimeter_m": "perim_m"}
"""Fields renamed for the shapefile's 10-character field names (others already fit)."""


def vector_suffix(path: str | os.PathLike) -> str:
    """The format-choosing extension of ``path`` (lower case); refuses others in one line."""
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_FORMATS:
        what = suffix or "a file without an extension"
        raise ConfigError(f"{Path(path).name}: cannot write {what}; name the output .gpkg "
                          "(GeoPackage), .fgb (FlatGeobuf), .parquet (GeoParquet), .geojson "
                          "or .shp")
    return suffix


def format_suffix(name: str) -> str:
    """A ``--vector-format`` name -> its extension; refuses unknown names in one line."""
    suffix = f".{str(name).lower().lstrip('.')}"
    if suffix not in VECTOR_FORMATS:
        raise ConfigError(f"vector format {name!r}; valid: {', '.join(FORMAT_NAMES)}")
    return suffix


def sidecars(path: Path) -> list[Path]:
    """The files that make up the vector file ``path`` (a shapefile is several)."""
    if path.suffix.lower() == ".shp":
        return [path.with_suffix(s) for s in SHAPEFILE_SIDECARS]
    return [path]


def translate(gpkg: Path, layer: str, target: Path, staging: Path) -> None:
    """Write the GeoPackage layer ``gpkg:layer`` as ``target``'s format at ``staging`` (same
    extension), then rename it over ``target`` (a shapefile's sidecars first, its ``.shp``
    last, so a complete ``.shp`` never stands beside another run's parts). A failed write
    leaves nothing of its own behind and ``target`` as it was."""
    import pyogrio

    suffix = vector_suffix(target)
    parts = sidecars(staging)
    try:
        if suffix == ".parquet":
            from .geoparquet import write_geoparquet

            write_geoparquet(gpkg, layer, staging)
        else:
            frame = pyogrio.read_dataframe(gpkg, layer=layer)
            if suffix == ".shp":
                frame = frame.rename(columns=SHAPEFILE_FIELDS)
            with warnings.catch_warnings():  # a layer without CRS is what was asked for
                warnings.filterwarnings("ignore", message="'crs' was not provided")
                pyogrio.write_dataframe(frame, staging, driver=VECTOR_FORMATS[suffix],
                                        layer=layer if suffix != ".shp" else None)
    except Exception as exc:
        for part in parts:
            part.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise
        raise OutputNotWritableError(str(exc).splitlines()[0] if str(exc)
                                     else type(exc).__name__) from exc
    for part, final in reversed(list(zip(parts, sidecars(target), strict=True))):
        if part.exists():
            os.replace(part, final)
        else:
            final.unlink(missing_ok=True)
