"""GeoParquet as the field writes it: version 1.1 with a bbox covering column, zstd, rows in
Hilbert order of their centroids, in row groups of bounded size, written from the finished
GeoPackage layer a row group at a time.

Two passes over the layer. The first streams its geometries (GDAL's Arrow stream, through
pyogrio) and keeps two numbers a polygon: its fid and the Hilbert distance of its centroid
within the layer's extent (geopandas' ``hilbert_distance``, level 16). The second reads the
polygons of each row group by fid, in that order (the GeoPackage's primary key), and
appends them to one Parquet file (pyarrow's ``ParquetWriter``). Memory holds one row group
and 16 bytes a polygon, never the layer.

The file's ``geo`` metadata follows the GeoParquet 1.1.0 specification: WKB geometry, its
types, PROJJSON CRS, the layer's bbox and the ``covering`` that names the ``bbox`` struct
column (xmin, ymin, xmax, ymax as float64), which readers use to skip row groups
(``geopandas.read_parquet(bbox=...)``, GDAL's Parquet driver). A spatially sorted file
makes those row groups small in extent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ROW_GROUP_ROWS = 65536
"""Polygons per row group (and per read of the GeoPackage in the second pass)."""
GEOPARQUET_VERSION = "1.1.0"
COMPRESSION = "zstd"
HILBERT_LEVEL = 16
GEOMETRY_TYPES = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint",
                  5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}
"""shapely's geometry type ids -> GeoParquet's ``geometry_types`` names (2D)."""


def hilbert_order(gpkg: Path, layer: str, bounds: tuple[float, ...],
                  batch_rows: int = ROW_GROUP_ROWS) -> tuple[np.ndarray, list[str]]:
    """The layer's fids sorted by the Hilbert distance of their centroids within
    ``bounds`` (ties: in fid order), and the geometry types it holds, from one streamed
    pass over its geometries."""
    import geopandas as gpd
    import shapely
    from pyogrio.raw import open_arrow

    keys, fids, types = [], [], set()
    with open_arrow(gpkg, layer=layer, columns=[], return_fids=True, batch_size=batch_rows,
                    use_pyarrow=True) as (meta, reader):
        for batch in reader:
            wkb = batch.column(meta["geometry_name"] or "wkb_geometry")
            geometry = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
            types |= set(shapely.get_type_id(geometry).tolist())
            points = gpd.GeoSeries(shapely.centroid(geometry))
            keys.append(points.hilbert_distance(total_bounds=bounds, level=HILBERT_LEVEL)
                        .to_numpy(np.uint64))
            fids.append(batch.column(meta["fid_column"] or "OGC_FID").to_numpy()
                        .astype(np.int64))
    names = sorted(GEOMETRY_TYPES[t] for t in types if t in GEOMETRY_TYPES)
    if not keys:
        return np.empty(0, np.int64), names
    key, fid = np.concatenate(keys), np.concatenate(fids)
    return fid[np.lexsort((fid, key))], names


def geo_metadata(info: dict, geometry_types: list[str]) -> dict:
    """GeoParquet 1.1.0 ``geo`` metadata for a layer described by ``pyogrio.read_info``."""
    from pyproj import CRS

    column: dict[str, Any] = {
        "encoding": "WKB", "geometry_types": geometry_types,
        "covering": {"bbox": {side: ["bbox", side] for side in ("xmin", "ymin", "xmax", "ymax")}},
        # no CRS is the spec's null ("unknown"); an absent key would mean OGC:CRS84
        "crs": CRS.from_user_input(info["crs"]).to_json_dict() if info.get("crs") else None,
    }
    if info["features"]:
        column["bbox"] = [float(v) for v in info["total_bounds"]]
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
            "columns": {"geometry": column}}


def _table(frame: Any) -> Any:
    """One row group's polygons as an Arrow table: attributes, WKB geometry, bbox struct."""
    import pyarrow as pa
    import shapely

    geometry = np.asarray(frame.geometry.array)
    bounds = shapely.bounds(geometry).reshape(-1, 4)
    columns = {name: pa.array(frame[name].to_numpy(), from_pandas=True)
               for name in frame.columns if name != frame.geometry.name}
    columns["geometry"] = pa.array(shapely.to_wkb(geometry), pa.binary())
    columns["bbox"] = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)],
        names=["xmin", "ymin", "xmax", "ymax"])
    return pa.table(columns)


def write_geoparquet(gpkg: Path, layer: str, target: Path, *,
                     row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write the GeoPackage layer ``gpkg:layer`` to ``target`` as GeoParquet 1.1 (see the
    module); ``target`` is a staging name the caller renames into place."""
    import pyarrow.parquet as pq
    import pyogrio

    info = pyogrio.read_info(gpkg, layer=layer)
    order, types = (hilbert_order(gpkg, layer, tuple(info["total_bounds"]), row_group_rows)
                    if info["features"] else (np.empty(0, np.int64), []))
    metadata = {b"geo": json.dumps(geo_metadata(info, types)).encode()}
    chunks = [order[i:i + row_group_rows] for i in range(0, len(order), row_group_rows)]
    first = _table(pyogrio.read_dataframe(gpkg, layer=layer, fids=chunks[0]) if chunks else
                   pyogrio.read_dataframe(gpkg, layer=layer, max_features=0))
    schema = first.schema.with_metadata(metadata)
    with pq.ParquetWriter(target, schema, compression=COMPRESSION) as writer:
        writer.write_table(first.cast(schema), row_group_size=row_group_rows)
        for fids in chunks[1:]:
            table = _table(pyogrio.read_dataframe(gpkg, layer=layer, fids=fids))
            writer.write_table(table.cast(schema), row_group_size=row_group_rows)
