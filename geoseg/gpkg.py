"""GeoPackage output of vectorize: measurements in metres and atomic layer writing.

Areas and perimeters are in square metres and metres: planar, scaled by the CRS's linear
unit, for projected CRSs; geodesic on the CRS's ellipsoid (pyproj ``Geod``) for
geographic ones, never square degrees. Without a CRS, map units are taken as metres.
The layer goes through pyogrio to a hidden temporary name beside the final file, which is
renamed over the final name when complete (DESIGN.md promise 6).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import shapely

from .errors import OutputNotWritableError


def measure(geoms: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Area (m^2) and perimeter (m) of map-coordinate geometries in ``crs``."""
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    if crs is not None and crs.is_geographic:
        from pyproj import CRS as ProjCRS

        geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod()
        pairs = [geod.geometry_area_perimeter(g) for g in geoms]
        return (np.abs(np.array([a for a, _ in pairs], float)),
                np.array([p for _, p in pairs], float))
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - CRS without a linear unit: keep map units
            factor = 1.0
    return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor


def write_polygons(path, columns: dict, geoms: np.ndarray, *, crs, layer: str,
                   metadata: dict) -> Path:
    """Write one polygon layer (spatial index, CRS, layer metadata) and publish it."""
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    multi = bool(len(geoms)) and bool(np.any(shapely.get_type_id(geoms) == 6))
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(list(geoms), crs=crs),
                             crs=crs)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}.gpkg")
    try:
        pyogrio.write_dataframe(
            frame, staging, layer=layer, driver="GPKG",
            geometry_type="MultiPolygon" if multi else "Polygon", promote_to_multi=multi,
            metadata=metadata, layer_options={"SPATIAL_INDEX": "YES"},
            dataset_options={"VERSION": "1.2"})
        os.replace(staging, path)
    except OSError as exc:
        raise OutputNotWritableError(f"{path}: could not write the GeoPackage "
                                     f"({exc.strerror or exc}); choose another --out") from exc
    finally:
        for leftover in (staging, Path(f"{staging}-journal"), Path(f"{staging}-wal")):
            if leftover.exists():
                leftover.unlink()
    return path
