"""STAC out (pystac): one STAC Item per scene's outputs and an ItemCollection per batch.

``OUT/<scene>/item.json`` with the projection, raster, classification and file extensions,
the processing software, the source item (a STAC input's VRT names it:
:mod:`geoseg.inputs.stac`) and the model bundle as links; the batch's ``OUT/items.json``
(an ItemCollection) so outputs drop into a STAC catalog.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pystac

    from ..classes import ClassInfo
    from ..grid import PixelGrid

EXTENSIONS = {
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}


def _footprint(grid: PixelGrid) -> tuple[dict | None, list[float] | None]:
    """GeoJSON polygon and bbox of a grid in WGS84 (None without a CRS)."""
    if grid.crs is None:
        return None, None
    from rasterio.warp import transform_geom
    from shapely.geometry import Polygon, mapping, shape

    t, h, w = grid.transform, grid.height, grid.width
    ring = [t * (0, 0), t * (w, 0), t * (w, h), t * (0, h), t * (0, 0)]
    geom = transform_geom(grid.crs, "EPSG:4326", mapping(Polygon(ring)), precision=9)
    return geom, [round(v, 9) for v in shape(geom).bounds]


ZARR_MEDIA_TYPE = "application/vnd+zarr"
"""The media type STAC catalogs give Zarr stores (Zarr has no registered one yet)."""


def _checksum(path: Path) -> str:
    """sha2-256 multihash (the file extension's checksum) of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "1220" + digest.hexdigest()


def scene_item(*, stem: str, grid: PixelGrid, outputs: dict[str, str],
               classes: Sequence[ClassInfo], nodata: int, model_path: str, model_sha256: str,
               source: str | None, version: str,
               when: _dt.datetime | None = None) -> pystac.Item:
    """The STAC Item describing one scene's outputs (hrefs relative to its folder);
    ``when``: the source item's datetime (else the time of processing)."""
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.file import FileExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    geometry, bbox = _footprint(grid)
    item = pystac.Item(id=stem, geometry=geometry, bbox=bbox,
                       datetime=when or _dt.datetime.now(_dt.timezone.utc),
                       properties={"processing:software": {"geoseg": version}})
    item.stac_extensions.append(EXTENSIONS["processing"])
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg() if grid.crs is not None else None
    proj.epsg = epsg
    if epsg is None and grid.crs is not None:
        proj.wkt2 = grid.crs.to_wkt()
    proj.shape = [grid.height, grid.width]
    proj.transform = list(grid.transform)[:6]
    media = {"classes": pystac.MediaType.COG, "probabilities": pystac.MediaType.COG,
             "zarr": ZARR_MEDIA_TYPE,
             "preview": pystac.MediaType.PNG,
             ".gpkg": pystac.MediaType.GEOPACKAGE, ".fgb": pystac.MediaType.FLATGEOBUF,
             ".parquet": pystac.MediaType.PARQUET, ".geojson": pystac.MediaType.GEOJSON,
             ".shp": "application/vnd.shp"}
    for kind, path in outputs.items():
        asset = pystac.Asset(href=f"./{Path(path).name}",
                             media_type=media.get(kind, media.get(Path(path).suffix.lower())),
                             roles={"probabilities": ["data", "probability"],
                                    "preview": ["overview", "visual"]}.get(kind, ["data"]),
                             title=f"geoseg {kind}")
        item.add_asset(kind, asset)
        if Path(path).is_file():  # a Zarr group is a folder: no one size or checksum
            file = FileExtension.ext(asset, add_if_missing=True)
            file.size = Path(path).stat().st_size
            file.checksum = _checksum(Path(path))
        if kind in ("classes", "zarr"):
            RasterExtension.ext(asset, add_if_missing=True).bands = [RasterBand.create(
                nodata=nodata, data_type=DataType.UINT8)]
            ClassificationExtension.ext(asset, add_if_missing=True).classes = [
                Classification.create(value=c.id, name=c.name,
                                      color_hint=c.color.lstrip("#").upper())
                for c in classes]
        elif kind == "probabilities":
            RasterExtension.ext(asset, add_if_missing=True).bands = [
                RasterBand.create(data_type=DataType.UINT8, scale=1 / 255, offset=0.0)
                for _ in classes]
    if source:
        item.add_link(pystac.Link(rel="derived_from", target=source,
                                  media_type=pystac.MediaType.JSON, title="source item"))
    item.add_link(pystac.Link(rel="ml-model", target=str(Path(model_path).resolve()),
                              media_type="application/octet-stream",
                              title=f"geoseg model bundle sha256:{model_sha256}"))
    return item


def write_item(item: pystac.Item, folder: Path) -> Path:
    """``folder/item.json`` (through a temporary name)."""
    path = folder / "item.json"
    tmp = folder / ".item.json.tmp"
    tmp.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False),
                              indent=2))
    tmp.replace(path)
    return path


def write_item_collection(folders: Iterable[Path], out: Path) -> Path | None:
    """``OUT/items.json``: the items of ``folders`` that have one, hrefs relative to OUT.
    Written one item at a time (a batch of 10,000 scenes never holds them all), under a
    temporary name until complete. Each ``item.json`` was written by :func:`write_item`
    (pystac); only its assets' hrefs change, as plain JSON (2,000 items: 0.4 s, against
    1.6 s through pystac's round trip of each item; the same bytes)."""
    target, tmp, count = out / "items.json", out / ".items.json.tmp", 0
    try:
        with open(tmp, "w") as f:
            f.write('{\n  "type": "FeatureCollection",\n  "features": [')
            for folder in folders:
                path = folder / "item.json"
                if not path.is_file():
                    continue
                item = json.loads(path.read_text())
                for asset in item.get("assets", {}).values():
                    asset["href"] = f"./{folder.name}/{Path(asset['href']).name}"
                text = json.dumps(item, indent=2)
                f.write(("," if count else "") + "\n    "
                        + text.replace("\n", "\n    "))
                count += 1
            f.write("\n  ]\n}\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not count:
        tmp.unlink()
        return None
    tmp.replace(target)
    return target
