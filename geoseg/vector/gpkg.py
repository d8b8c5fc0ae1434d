"""Polygon layers of vectorize: measurements in metres and atomic layer writing (built as a
GeoPackage, published in the format the file's extension names: :mod:`geoseg.vector.files`).

Areas and perimeters are in square metres and metres: planar, scaled by the CRS's linear
unit, for projected CRSs; geodesic on the CRS's ellipsoid (pyproj ``Geod``) for
geographic ones, never square degrees. Without a CRS, map units are taken as metres.
The layer goes through pyogrio to a hidden temporary name beside the final file, which is
renamed over the final name when complete (DESIGN.md promise 6). :class:`LayerWriter`
writes it in chunks (the first creates the layer, the rest are appended), so a caller
never needs to hold all features.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from ..errors import OutputNotWritableError
from ..names import staging_path

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.crs import CRS


def measure(geoms: np.ndarray, crs: CRS | None) -> tuple[np.ndarray, np.ndarray]:
    """Area (m^2) and perimeter (m) of map-coordinate geometries in ``crs``."""
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    if crs is not None and crs.is_geographic:
        from pyproj import CRS as ProjCRS

        geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod()
        assert geod is not None  # a geographic CRS always has an ellipsoid
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


GPKG_TIMESTAMP = "2000-01-01T00:00:00Z"
"""``gpkg_contents.last_change`` of every GeoPackage geoseg writes, so the same polygons give
the same bytes (DESIGN.md promise 2); an OGR_CURRENT_DATE in the environment wins."""


@contextmanager
def _fixed_timestamp() -> Iterator[None]:
    import pyogrio

    if "OGR_CURRENT_DATE" in os.environ:
        yield
        return
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


BATCH_FEATURES = 20_000
"""Features per write to the file. Batches hold exactly this many (the last one fewer),
whatever chunks the caller hands in, so the file's bytes (SQLite pages) depend only on the
features, not on the block grid that produced them."""


class LayerWriter:
    """One polygon layer written in batches to a staging file, published on success.

    Use as a context manager; :meth:`write` adds a chunk of features (the first batch
    written creates the layer with its CRS, spatial index and metadata). Leaving the block
    normally writes what is left and renames the staging file over ``path``; an error
    removes it and leaves ``path`` untouched. ``multi`` declares MultiPolygon (polygons
    promoted) instead of Polygon.
    """

    def __init__(self, path: str | os.PathLike, *, crs: CRS | None, layer: str, metadata: dict,
                 multi: bool = False) -> None:
        self.path, self.crs, self.layer = Path(path), crs, layer
        self.metadata, self.multi = metadata, multi
        self.staging = staging_path(self.path, suffix=".gpkg")
        self.created = False
        self._pending: list[tuple[dict, np.ndarray]] = []
        self._count = 0

    def __enter__(self) -> "LayerWriter":
        self._cleanup()
        return self

    def write(self, columns: dict, geoms: np.ndarray) -> None:
        """Add features (``columns``: name -> array, one value per geometry)."""
        self._pending.append((columns, np.asarray(geoms, object)))
        self._count += len(geoms)
        while self._count >= BATCH_FEATURES:
            self._flush(BATCH_FEATURES)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` pending features as one batch."""
        taken: list[tuple[dict, np.ndarray]] = []
        left = n
        while self._pending and (left > 0 or not taken):
            columns, geoms = self._pending.pop(0)
            if len(geoms) > left:
                self._pending.insert(0, ({k: v[left:] for k, v in columns.items()},
                                         geoms[left:]))
                columns, geoms = {k: v[:left] for k, v in columns.items()}, geoms[:left]
            taken.append((columns, geoms))
            left -= len(geoms)
        self._count -= n
        if not taken:
            return
        columns = {k: np.concatenate([c[k] for c, _ in taken]) for k in taken[0][0]}
        self._write_frame(columns, np.concatenate([g for _, g in taken]))

    def _write_frame(self, columns: dict, geoms: np.ndarray) -> None:
        import geopandas as gpd

        frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(list(geoms), crs=self.crs),
                                 crs=self.crs)
        kwargs = dict(layer=self.layer, driver="GPKG", promote_to_multi=self.multi,
                      geometry_type="MultiPolygon" if self.multi else "Polygon")
        try:
            with _fixed_timestamp(), warnings.catch_warnings():
                # a layer without CRS is what --allow-no-crs asked for: no library warning
                warnings.filterwarnings("ignore", message="'crs' was not provided")
                self._write(frame, kwargs)
        except OSError as exc:
            raise self._error(exc) from exc

    def _write(self, frame: gpd.GeoDataFrame, kwargs: dict[str, Any]) -> None:
        import pyogrio

        if self.created:
            pyogrio.write_dataframe(frame, self.staging, append=True, **kwargs)
        else:
            pyogrio.write_dataframe(frame, self.staging, metadata=self.metadata,
                                    layer_options={"SPATIAL_INDEX": "YES"},
                                    dataset_options={"VERSION": "1.2"}, **kwargs)
            self.created = True

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is None:
                if self._count or not self.created:  # the rest, or an empty layer
                    self._flush(self._count)
                try:
                    self._publish()
                except OSError as err:
                    raise self._error(err) from err
        finally:
            self._cleanup()

    def _publish(self) -> None:
        """The staged GeoPackage under the final name, or translated to its format."""
        from .files import translate

        suffix = self.path.suffix.lower()
        if suffix == ".gpkg":
            os.replace(self.staging, self.path)
        else:
            translate(self.staging, self.layer, self.path,
                      staging_path(self.path, suffix=suffix))

    def _error(self, exc: OSError) -> OutputNotWritableError:
        return OutputNotWritableError(f"{self.path}: could not write it "
                                      f"({exc.strerror or exc}); choose another --out")

    def _cleanup(self) -> None:
        for leftover in (self.staging, Path(f"{self.staging}-journal"),
                         Path(f"{self.staging}-wal")):
            if leftover.exists():
                leftover.unlink()
