"""STAC in (pystac): items, collections and catalogs as scenes.

Every item of an ``item.json``, ``collection.json``, ``catalog.json`` or
``FeatureCollection`` (local or a URL) becomes one virtual scene: the assets that hold the
model's bands, matched by name (asset key, ``eo:bands`` name or common name; ``--assets``
to choose), stacked in the model's band order on the grid of the finest of them, read with
a declared resampling (a VRT, :mod:`geoseg.inputs.vrt`). The VRT carries the item's href in its
metadata (``GEOSEG_STAC_ITEM``), so the output item (:mod:`geoseg.outputs.stac_items`)
links back to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .sources import is_virtual

if TYPE_CHECKING:
    import pystac


STAC_TAG = "GEOSEG_STAC_ITEM"
STAC_DATETIME_TAG = "GEOSEG_STAC_DATETIME"
STAC_TYPES = ("Feature", "FeatureCollection", "Collection", "Catalog")


def _read_json(href: str) -> dict | None:
    import pystac

    try:
        text = pystac.StacIO.default().read_text(href)
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{href}: cannot read it as STAC JSON ({exc})") from exc
    return data if isinstance(data, dict) else None


def is_stac(path: str | os.PathLike) -> bool:
    """A ``.json`` path or URL (STAC is read from JSON files)."""
    text = os.fspath(path).split("?", 1)[0].lower()
    return text.endswith(".json") or text.endswith(".geojson")


def stac_items(href: str) -> list[pystac.Item]:
    """Every item of the STAC document at ``href`` (an item, a collection or catalog with
    their children, or an item collection)."""
    import pystac

    data = _read_json(href) or {}
    kind = data.get("type")
    stac = "stac_version" in data or kind == "FeatureCollection"
    if kind not in STAC_TYPES or not stac:
        raise InvalidInputError(f"{href}: not a STAC item, collection or catalog (type "
                                f"{kind!r}); give a raster or a STAC JSON file")
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_dict(data))
    obj = pystac.read_dict(data, href=href)  # the document read once, above
    if isinstance(obj, pystac.Item):
        return [obj]
    assert isinstance(obj, pystac.Catalog)  # Collection is a Catalog
    items = list(obj.get_items(recursive=True))
    if not items:
        raise InvalidInputError(f"{href}: the {str(kind).lower()} holds no items")
    return items


def _asset_bands(asset: pystac.Asset) -> list[tuple[str, str]]:
    """(name, common name) of each band of an asset (eo:bands, or STAC 1.1 bands)."""
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return [(str(b.get("name", "")).lower(),
             str(b.get("common_name", b.get("eo:common_name", ""))).lower()) for b in bands]


def pick_assets(item: pystac.Item, band_names: Sequence[str],
                assets: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(asset key, 1-based band in it) for each of the model's bands, in the model's order.

    ``assets`` (``--assets``) names the keys to use, whose bands are taken in order; by
    default one asset whose bands cover all of the model's, else one asset per band matched
    by key, band name or common name."""
    wanted = [b.lower() for b in band_names]
    keys = {k.lower(): k for k in item.assets}
    if assets:
        out: list[tuple[str, int]] = []
        for key in assets:
            if key.lower() not in keys:
                raise InvalidInputError(f"{item.id}: no asset {key!r}; it has "
                                        f"{', '.join(item.assets)}")
            real = keys[key.lower()]
            out += [(real, i + 1) for i in range(max(1, len(_asset_bands(item.assets[real]))))]
        if len(out) != len(wanted):
            raise InvalidInputError(f"{item.id}: --assets {','.join(assets)} give {len(out)} "
                                    f"bands; the model expects {len(wanted)} "
                                    f"({', '.join(band_names)})")
        return out
    for key, asset in item.assets.items():
        names = _asset_bands(asset)
        found = [next((i + 1 for i, (n, c) in enumerate(names) if b in (n, c)), None)
                 for b in wanted]
        if len(names) > 1 and all(found):
            return [(key, int(i)) for i in found if i]
    out = []
    for b in wanted:
        match = keys.get(b) or next(
            (k for k, a in item.assets.items() if len(_asset_bands(a)) == 1
             and b in _asset_bands(a)[0]), None)
        if match is None:
            raise InvalidInputError(
                f"{item.id}: no asset holds band {b!r} (assets: {', '.join(item.assets)}); "
                "pass --assets KEY,KEY,... in the model's band order "
                f"({', '.join(band_names)})")
        out.append((match, 1))
    return out


def item_scene(item: pystac.Item, band_names: Sequence[str], folder: Path, *,
               assets: Sequence[str] | None = None, resampling: str = "bilinear") -> str:
    """The item's bands as one virtual scene ``folder/<item id>.vrt`` (see the module's
    docstring); returns its path."""
    from .vrt import BandSource, union_grid, write_vrt

    picked = pick_assets(item, band_names, assets)
    sources: list[BandSource] = []
    headers: dict[str, Any] = {}
    from .scene import read_header

    for (key, band), name in zip(picked, band_names, strict=True):
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        if href not in headers:
            headers[href] = read_header(href)
        h = headers[href]
        sources.append(BandSource(href, band, h.grid, h.dtype, h.nodata, name))
    dtypes = {s.dtype for s in sources}
    if len(dtypes) > 1:
        raise InvalidInputError(f"{item.id}: its assets mix pixel types "
                                f"({', '.join(sorted(dtypes))}); one scene has one type")
    finest = min(sources, key=lambda s: abs(s.grid.transform.a))
    grid = union_grid([finest.grid] + [s.grid for s in sources],
                      pixel=(finest.grid.transform.a, finest.grid.transform.e))
    nodata = {s.nodata for s in sources}
    path = folder / f"{item.id}.vrt"
    write_vrt(path, grid, [[s] for s in sources], dtype=sources[0].dtype,
              nodata=nodata.pop() if len(nodata) == 1 else None, resampling=resampling,
              metadata={STAC_TAG: item.get_self_href() or "",
                        STAC_DATETIME_TAG: item.datetime.isoformat() if item.datetime else ""})
    return str(path)


def expand_stac(paths: Sequence[str], band_names: Sequence[str], folder: Path, *,
                assets: Sequence[str] | None = None) -> list[str]:
    """``paths`` with every STAC document replaced by its items' virtual scenes."""
    out: list[str] = []
    for path in paths:
        if not is_stac(path) or (not is_virtual(path) and not Path(path).is_file()):
            out.append(path)
            continue
        for item in stac_items(path):
            out.append(item_scene(item, band_names, folder, assets=assets))
    return out
