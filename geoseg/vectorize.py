"""Polygons from a class raster, block by block, merged exactly across block seams.

Each block (a :class:`~geoseg.grid.Window`) is read on its own and polygonized with
``rasterio.features.shapes`` in *global pixel coordinates* (integer vertices), with nodata
and dropped classes masked. A piece whose bounds reach an internal block seam is kept
pending; every other piece is final as it is. Pending pieces of the same class from
different blocks are joined when they share a seam edge (4-connectivity) or any point
(8-connectivity, which covers diagonal and block-corner touches); each joined group is one
``shapely.coverage_union_all``. Working in integer pixel coordinates makes the union exact;
the raster's affine transform is applied once at the end, with the same arithmetic as
rasterio, so the result equals one whole-raster ``shapes`` call (made valid) polygon for
polygon. No array larger than a block is ever held; pending pieces are vectors.

Geometries are canonical (collinear vertices removed, ``shapely.normalize``) and sorted
by their top-left corner, so the output does not depend on block size or worker count.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.errors import RasterioIOError
from rasterio.features import rasterize, shapes

from . import __version__
from .classes import CLASSES_TAG, NODATA_CLASS, ClassInfo, classes_from_tags
from .coverage import merge_small, simplify_coverage
from .errors import ConfigError, InputNotFoundError, InvalidInputError
from .gpkg import measure, prepare_output, write_polygons
from .grid import PixelGrid, Window

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


@dataclass(frozen=True, slots=True)
class BlockJob:
    """Everything one block needs, small enough to send to a worker process."""

    path: str
    window: Window
    height: int
    width: int
    nodata: int | None
    keep: tuple[int, ...] | None
    connectivity: int
    prob_path: str | None = None
    prob_bands: tuple[tuple[int, int], ...] = ()
    """(class id, 1-based band) pairs of the probability raster."""


@dataclass(slots=True)
class Pieces:
    """Polygons with per-polygon pixel statistics; geometries in global pixel coords."""

    class_ids: np.ndarray
    geoms: np.ndarray
    pixels: np.ndarray
    prob_sums: np.ndarray

    @classmethod
    def empty(cls) -> "Pieces":
        return cls(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0), np.zeros(0))

    def take(self, index) -> "Pieces":
        return Pieces(self.class_ids[index], self.geoms[index], self.pixels[index],
                      self.prob_sums[index])

    @classmethod
    def concat(cls, parts) -> "Pieces":
        parts = [p for p in parts if len(p.geoms)] or [cls.empty()]
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("class_ids", "geoms", "pixels", "prob_sums")))


def open_class_raster(path, *, allow_no_crs: bool = False) -> ClassRaster:
    """Inspect a class raster and refuse what cannot be vectorized, with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a folder, not a class raster")
    try:
        with rasterio.open(path) as ds:
            grid, count, dtype = PixelGrid.of(ds), ds.count, ds.dtypes[0]
            nodata, tags = ds.nodata, ds.tags()
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"{path}: not a raster GDAL can read ({reason}); give the "
                                "classes.tif written by geoseg predict") from exc
    if count != 1:
        raise InvalidInputError(f"{path}: has {count} bands; a class raster has exactly one "
                                "(class ids); give classes.tif, not the scene or probabilities")
    if dtype not in CLASS_DTYPES:
        raise InvalidInputError(f"{path}: pixel type {dtype} holds no class ids; expected an "
                                f"integer type ({', '.join(CLASS_DTYPES)}), e.g. uint8 as "
                                "geoseg predict writes")
    if grid.crs is None and not allow_no_crs:
        raise InvalidInputError(f"{path}: has no CRS, so polygons could not be placed on a "
                                "map; assign one (gdal_edit.py -a_srs EPSG:XXXX) or pass "
                                "--allow-no-crs")
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


def resolve_classes(raster: ClassRaster, keep_classes=None) -> tuple[int, ...] | None:
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


def block_windows(grid: PixelGrid, *, block_size: int) -> list[Window]:
    """Windows of ``block_size`` pixels tiling the grid row by row; edge blocks smaller."""
    return [Window(row, col, min(block_size, grid.height - row),
                   min(block_size, grid.width - col))
            for row in range(0, grid.height, block_size)
            for col in range(0, grid.width, block_size)]


def _to_polygon(geojson: dict) -> shapely.Polygon:
    rings = geojson["coordinates"]
    return shapely.Polygon(rings[0], rings[1:])


def polygonize_block(job: BlockJob) -> tuple[Pieces, np.ndarray]:
    """Polygons of one block (global pixel coords) and which of them touch an inner seam."""
    win = job.window
    with rasterio.open(job.path) as ds:
        data = ds.read(1, window=win.to_rasterio())
    mask = np.ones(data.shape, bool) if job.nodata is None else data != job.nodata
    if job.keep is not None:
        mask &= np.isin(data, job.keep)
    if not mask.any():
        return Pieces.empty(), np.zeros(0, bool)
    offset = rasterio.Affine.translation(win.col, win.row)
    found = list(shapes(data, mask=mask, connectivity=job.connectivity, transform=offset))
    geoms = np.array([_to_polygon(g) for g, _ in found] + [None], object)[:-1]
    class_ids = np.array([int(v) for _, v in found], np.int64)
    if job.connectivity == 8:  # diagonal touches give self-touching rings: make them OGC valid
        bad = ~shapely.is_valid(geoms)
        geoms[bad] = shapely.simplify(shapely.make_valid(geoms[bad]), 0)
    pixels = shapely.area(geoms)
    prob_sums = _probability_sums(job, geoms, class_ids) if job.prob_path else np.zeros(len(geoms))
    xmin, ymin, xmax, ymax = shapely.bounds(geoms).T
    pending = (((xmin == win.col) & (win.col > 0)) | ((ymin == win.row) & (win.row > 0))
               | ((xmax == win.col_stop) & (win.col_stop < job.width))
               | ((ymax == win.row_stop) & (win.row_stop < job.height)))
    return Pieces(class_ids, geoms, pixels, prob_sums), pending


def _probability_sums(job: BlockJob, geoms, class_ids) -> np.ndarray:
    """Per piece: sum over its pixels of its class's probability band (0..255)."""
    win = job.window
    offset = rasterio.Affine.translation(win.col, win.row)
    labels = rasterize(zip(geoms, range(1, len(geoms) + 1)), out_shape=(win.height, win.width),
                       transform=offset, fill=0, dtype="int32")
    bands = dict(job.prob_bands)
    sums = np.zeros(len(geoms))
    with rasterio.open(job.prob_path) as ds:
        for cid in np.unique(class_ids):
            band = bands.get(int(cid), int(cid) + 1)
            if band > ds.count:
                raise InvalidInputError(f"{job.prob_path}: has {ds.count} bands, none for "
                                        f"class {cid}; give the probabilities.tif written "
                                        "with this class raster")
            prob = ds.read(band, window=win.to_rasterio()).astype(np.float64)
            sel = np.isin(labels, np.flatnonzero(class_ids == cid) + 1)
            sums += np.bincount(labels[sel], weights=prob[sel], minlength=len(geoms) + 1)[1:]
    return sums


def merge_seams(pieces: Pieces, blocks: np.ndarray, *, connectivity: int,
                block_size: int) -> Pieces:
    """Join pending pieces of one class from different blocks that belong to one region.

    Two pieces are one region when they share a seam edge of positive length, or, with
    8-connectivity, any point (a diagonal pixel touch). Groups are found with union-find
    over touching pairs (an STRtree query) and unioned as a coverage (pieces never overlap).
    """
    n = len(pieces.geoms)
    if n == 0:
        return pieces
    tree = shapely.STRtree(pieces.geoms)
    left, right = tree.query(pieces.geoms, predicate="intersects")
    sel = ((left < right) & (pieces.class_ids[left] == pieces.class_ids[right])
           & (blocks[left] != blocks[right]))
    left, right = left[sel], right[sel]
    if connectivity == 4 and len(left):
        shared_edge = shapely.relate_pattern(pieces.geoms[left], pieces.geoms[right], "****1****")
        left, right = left[shared_edge], right[shared_edge]
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    order = np.argsort(roots, kind="stable")
    starts = np.flatnonzero(np.r_[True, roots[order][1:] != roots[order][:-1]])
    groups = np.split(order, starts[1:])
    geoms = [pieces.geoms[g[0]] if len(g) == 1 else shapely.normalize(shapely.simplify(
        _union(pieces.geoms[g], block_size=block_size), 0)) for g in groups]
    first = np.array([g[0] for g in groups])
    return Pieces(pieces.class_ids[first], np.array(geoms + [None], object)[:-1],
                  np.array([pieces.pixels[g].sum() for g in groups]),
                  np.array([pieces.prob_sums[g].sum() for g in groups]))


def _union(geoms, *, block_size: int) -> shapely.Geometry:
    """Union of non-overlapping pieces with integer vertices.

    Pieces from two sides of a seam are noded differently; a vertex at every pixel corner
    along the seams (exact for integer coordinates) makes them a proper coverage, so the
    fast coverage union applies. Its result may hold a self-touching ring (a hole touching
    the shell at a vertex); ``make_valid`` splits that without changing the point set.
    The overlay union is the fallback.
    """
    try:
        merged = shapely.coverage_union_all([_node_seams(g, block_size) for g in geoms])
        if not shapely.is_valid(merged):
            merged = shapely.make_valid(merged)
        if shapely.get_type_id(merged) in (3, 6) and shapely.is_valid(merged):
            return merged
    except shapely.errors.GEOSException:
        pass
    return shapely.union_all(geoms)


def _node_seams(geom, block_size: int):
    """``geom`` with a vertex at every integer point of its edges that lie on a seam."""
    if shapely.get_type_id(geom) == 6:
        return shapely.MultiPolygon([_node_seams(p, block_size) for p in geom.geoms])
    rings = [_node_ring(np.asarray(geom.exterior.coords), block_size)]
    rings += [_node_ring(np.asarray(r.coords), block_size) for r in geom.interiors]
    return shapely.Polygon(rings[0], rings[1:])


def _node_ring(coords: np.ndarray, block_size: int) -> np.ndarray:
    start, stop = coords[:-1], coords[1:]
    step = stop - start
    length = np.abs(step).sum(axis=1)  # rectilinear: one of dx, dy is 0
    on_seam = (((step[:, 0] == 0) & (start[:, 0] % block_size == 0))
               | ((step[:, 1] == 0) & (start[:, 1] % block_size == 0))) & (length > 1)
    if not on_seam.any():
        return coords
    count = np.where(on_seam, length, 1).astype(np.int64)
    seg = np.repeat(np.arange(len(start)), count)
    within = np.arange(len(seg)) - np.repeat(np.cumsum(count) - count, count)
    unit = step / np.where(on_seam, length, 1)[:, None]
    unit[~on_seam] = 0
    points = start[seg] + within[:, None] * unit[seg]
    return np.vstack([points, coords[-1:]])


def polygonize_raster(raster: ClassRaster, *, keep=None, block_size: int = 1024,
                      connectivity: int = 4, prob_path=None, prob_bands=(),
                      workers: int = 1) -> Pieces:
    """Every region of the kept classes as one polygon, in global pixel coordinates.

    ``workers`` > 1 polygonizes blocks in that many processes; the result is the same.
    """
    grid = raster.grid
    windows = block_windows(grid, block_size=block_size)
    jobs = [BlockJob(raster.path, w, grid.height, grid.width, raster.nodata, keep,
                     connectivity, str(prob_path) if prob_path else None, tuple(prob_bands))
            for w in windows]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(polygonize_block, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        results = [polygonize_block(j) for j in jobs]
    final = Pieces.concat([p.take(~pend) for p, pend in results])
    pending = Pieces.concat([p.take(pend) for p, pend in results])
    blocks = np.concatenate([np.full(int(pend.sum()), i) for i, (_, pend) in enumerate(results)]
                            or [np.zeros(0, int)])
    merged = merge_seams(pending, blocks, connectivity=connectivity,
                         block_size=block_size)
    out = Pieces.concat([final, merged])
    out.geoms = shapely.normalize(out.geoms)
    return out.take(_canonical_order(out))


def _canonical_order(pieces: Pieces) -> np.ndarray:
    """Sort by top edge, left edge, class, then geometry bytes: independent of blocking."""
    if len(pieces.geoms) == 0:
        return np.zeros(0, int)
    xmin, ymin = shapely.bounds(pieces.geoms)[:, :2].T
    wkb = shapely.to_wkb(pieces.geoms)
    return np.array(sorted(range(len(wkb)), key=lambda i: (ymin[i], xmin[i],
                                                            pieces.class_ids[i], wkb[i])), int)


def to_map(geoms: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """Pixel-coordinate geometries in the grid's map coordinates (rasterio's arithmetic)."""
    t = grid.transform

    def apply(xy):
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return shapely.transform(geoms, apply)


def _apply_min_area(pieces: Pieces, grid: PixelGrid, *, min_area: float) -> Pieces:
    """Merge regions under ``min_area`` m^2 into neighbours (see :mod:`geoseg.coverage`).

    A merged region keeps the survivor's class and pixel statistics: its ``mean_prob`` is
    over the pixels the raster gave that class, not over the absorbed ones.
    """
    areas, _ = measure(to_map(pieces.geoms, grid), grid.crs)
    groups = merge_small(pieces.geoms, areas, min_area=min_area)
    out = pieces.take(np.array([g[0] for g in groups], int))
    out.geoms = np.array([shapely.normalize(shapely.simplify(
        _union(pieces.geoms[g], block_size=1), 0)) if len(g) > 1 else pieces.geoms[g[0]]
        for g in groups] + [None], object)[:-1]
    return out.take(_canonical_order(out))


def _probability_bands(raster: ClassRaster, prob_path, keep) -> tuple[tuple[int, int], ...]:
    """Check a probability raster against the class raster; map class id -> band."""
    prob_path = Path(prob_path)
    if not prob_path.exists():
        raise InputNotFoundError(f"{prob_path}: probability raster not found; check the path")
    try:
        with rasterio.open(prob_path) as ds:
            grid, count, dtype = PixelGrid.of(ds), ds.count, ds.dtypes[0]
    except RasterioIOError as exc:
        raise InvalidInputError(f"{prob_path}: not a raster GDAL can read; give the "
                                "probabilities.tif written by geoseg predict") from exc
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


def vectorize_raster(classes_path, out_path, *, block_size: int = 1024,
                     min_area: float | None = None, simplify: float | None = None,
                     connectivity: int = 4, keep_classes=None, probabilities_path=None,
                     overwrite: bool = False, allow_no_crs: bool = False,
                     metadata: dict | None = None, workers: int = 1,
                     layer: str = "polygons") -> dict:
    """Vectorize a class raster into a GeoPackage layer; return a summary dict.

    ``min_area`` is in square metres (geodesic for geographic CRSs): smaller regions are
    merged into the neighbour sharing their longest edge, or dropped if they have none.
    ``simplify`` is a tolerance in map units, applied to the whole coverage so neighbours
    keep shared edges. ``keep_classes`` takes ids or names (default: all but
    background-like classes and nodata). ``metadata`` adds layer metadata items.
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"--connectivity {connectivity}: expected 4 or 8")
    if int(block_size) < 1:
        raise ConfigError(f"--block-size {block_size}: expected a positive pixel count")
    for name, value in (("--min-area", min_area), ("--simplify", simplify)):
        if value is not None and not value >= 0:
            raise ConfigError(f"{name} {value}: expected a number >= 0")
    if int(workers) < 1:
        raise ConfigError(f"--workers {workers}: expected 1 or more")
    raster = open_class_raster(classes_path, allow_no_crs=allow_no_crs)
    keep = resolve_classes(raster, keep_classes)
    prob_bands = (_probability_bands(raster, probabilities_path, keep)
                  if probabilities_path else ())
    out_path = prepare_output(out_path, overwrite=overwrite)

    pieces = polygonize_raster(raster, keep=keep, block_size=int(block_size),
                               connectivity=connectivity, prob_path=probabilities_path,
                               prob_bands=prob_bands, workers=int(workers))
    found = len(pieces.geoms)
    if min_area:
        pieces = _apply_min_area(pieces, raster.grid, min_area=float(min_area))
    geoms = to_map(pieces.geoms, raster.grid)
    if simplify:
        geoms = simplify_coverage(geoms, tolerance=float(simplify))
    area_m2, perimeter_m = measure(geoms, raster.grid.crs)
    columns = {"class_id": pieces.class_ids.astype(np.int32),
               "class_name": np.array([class_name(raster, int(c)) for c in pieces.class_ids],
                                      object),
               "area_m2": area_m2, "perimeter_m": perimeter_m}
    if probabilities_path:
        with np.errstate(invalid="ignore", divide="ignore"):
            columns["mean_prob"] = pieces.prob_sums / (pieces.pixels * 255.0)
    options = {"block_size": int(block_size), "min_area_m2": min_area, "simplify": simplify,
               "connectivity": connectivity, "classes": list(keep) if keep else "all",
               "probabilities": str(probabilities_path) if probabilities_path else None}
    layer_meta = {"GEOSEG_SOURCE": str(Path(classes_path).resolve()),
                  "GEOSEG_MODEL_NAME": raster.tags.get("GEOSEG_MODEL_NAME", ""),
                  "GEOSEG_MODEL_SHA256": raster.tags.get("GEOSEG_MODEL_SHA256", ""),
                  "GEOSEG_VERSION": __version__, "GEOSEG_OPTIONS": json.dumps(options),
                  CLASSES_TAG: raster.tags.get(CLASSES_TAG, "")}
    layer_meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    write_polygons(out_path, columns, geoms, crs=raster.grid.crs, layer=layer,
                   metadata=layer_meta)
    counts: dict[str, int] = {}
    for name in columns["class_name"]:
        counts[name] = counts.get(name, 0) + 1
    return {"path": str(out_path), "layer": layer, "features": len(geoms),
            "regions_found": found, "per_class": counts, "blocks": len(
                block_windows(raster.grid, block_size=int(block_size))),
            "crs": raster.grid.crs.to_string() if raster.grid.crs else None,
            "options": options}
