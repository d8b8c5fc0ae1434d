"""Polygons from a class raster, block by block, merged exactly across block seams.

Each block (a :class:`~geoseg.grid.Window`) is read on its own and polygonized with one
``rasterio.features.shapes`` call (nodata and dropped classes masked) in *global pixel
coordinates*, so every vertex is an integer: one polygon ("piece") per connected
component inside the block, pixel count = area. The block returns its pieces and the
piece ids along its four edges (:class:`~geoseg.seams.BlockResult`, strips read off the
polygons' boundary segments). The seam merge (:func:`~geoseg.seams.merge_blocks`) pairs
pieces across seams by comparing those strips pixel by pixel (no geometry tests), groups
the pairs, and unions each group as an exact coverage. The raster's affine transform is
applied once at the end, with rasterio's arithmetic, so the result equals one
whole-raster ``shapes`` call (made valid) polygon for polygon. No array larger than a
block is ever held.

Blocks run in ``workers`` processes when asked. A scheduler (e.g. Dask) runs the same
three steps itself: :func:`plan_vectorize` (checks, classes, the :class:`BlockJob` s),
:func:`polygonize_block` per job, and :func:`write_vectorized` on the results (in any
order). Geometries are canonical (collinear vertices removed, ``shapely.normalize``) and
sorted by (bottom line, first pixel in raster order) (see :mod:`geoseg.seams`), so the
output does not depend on block size or worker count.

Memory: without ``min_area`` and ``simplify`` nothing needs the whole coverage, so the
merge streams (:class:`~geoseg.seams.SeamStream`) and each block row's final regions are
appended to the staging GeoPackage at once (:class:`~geoseg.gpkg.LayerWriter`); blocks are
polygonized at most a few ahead of the merge. Peak memory is then about one block row of
pieces plus the regions still open across the current row seam, not the whole output.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import shapes

from . import __version__
from .atomic import replacing
from .classes import CLASSES_TAG
from .class_raster import (CLASS_DTYPES, ClassRaster, class_name, open_class_raster,
                           probability_bands, resolve_classes)
from .coverage import (from_rings, merge_small, ragged_rings, remove_collinear,
                       simplify_coverage, union_pieces)
from .errors import ConfigError, InvalidInputError, OutputNotWritableError
from .gpkg import LayerWriter, measure
from .grid import PixelGrid, Window
from .seams import (BlockResult, Pieces, block_edges, canonical_order, merge_blocks,
                    stream_regions)
from .writers import prepare_output

__all__ = ["CLASS_DTYPES", "BlockJob", "BlockResult", "ClassRaster", "Pieces",
           "VectorizePlan", "block_windows", "class_name", "load_block", "merge_blocks",
           "open_class_raster", "plan_vectorize", "polygonize_block", "polygonize_raster",
           "resolve_classes", "save_block", "stream_regions", "to_map", "vectorize_raster",
           "write_vectorized"]

@dataclass(frozen=True, slots=True)
class BlockJob:
    """Everything one block needs, small enough to send to a worker process."""

    path: str
    window: Window
    width: int
    nodata: int | None
    keep: tuple[int, ...] | None
    connectivity: int
    prob_path: str | None = None
    prob_bands: tuple[tuple[int, int], ...] = ()
    """(class id, 1-based band) pairs of the probability raster."""


def block_windows(grid: PixelGrid, *, block_size: int) -> list[Window]:
    """Windows of ``block_size`` pixels tiling the grid row by row; edge blocks smaller."""
    return [Window(row, col, min(block_size, grid.height - row),
                   min(block_size, grid.width - col))
            for row in range(0, grid.height, block_size)
            for col in range(0, grid.width, block_size)]


def _polygons(features) -> tuple[np.ndarray, np.ndarray]:
    """``shapes`` features as (class ids, polygons)."""
    values, ring_sizes, ring_counts, points = [], [], [], []
    for geom, value in features:
        rings = geom["coordinates"]
        values.append(int(value))
        ring_counts.append(len(rings))
        for ring in rings:
            ring_sizes.append(len(ring))
            points.extend(ring)
    if not values:
        return np.zeros(0, np.int64), np.zeros(0, object)
    polys = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, np.array(points, float).reshape(-1, 2),
        (np.r_[0, np.cumsum(ring_sizes)], np.r_[0, np.cumsum(ring_counts)]))
    return np.array(values, np.int64), np.asarray(polys, object)


def polygonize_block(job: BlockJob) -> BlockResult:
    """Pieces of one block (global pixel coordinates) and its edge label strips.

    One ``shapes`` call over the block (nodata and dropped classes masked) gives one
    polygon per connected component, as the whole-raster call does; pixel counts are the
    polygons' areas (exact: integer vertices), edge strips come from the polygons'
    boundary segments on the block edges (:func:`~geoseg.seams.block_edges`).
    """
    win = job.window
    with rasterio.open(job.path) as ds:
        data = ds.read(1, window=win.to_rasterio())
    mask = None if job.nodata is None else data != job.nodata
    if job.keep is not None:
        keep = np.isin(data, job.keep)
        mask = keep if mask is None else mask & keep
    offset = rasterio.Affine.translation(win.col, win.row)
    class_ids, geoms = _polygons(shapes(data, mask=mask, connectivity=job.connectivity,
                                        transform=offset))
    if len(geoms) == 0:
        return BlockResult.empty(win)
    if job.connectivity == 8:  # diagonal touches give self-touching rings: make them valid
        bad = np.flatnonzero(~shapely.is_valid(geoms))
        if len(bad):
            geoms[bad] = remove_collinear(shapely.make_valid(geoms[bad]))
    geoms = shapely.normalize(geoms)
    pixels = np.rint(shapely.area(geoms)).astype(np.int64)
    first, *strips = block_edges(geoms, win, job.width)
    prob_sums = (_probability_sums(job, data, mask, class_ids, first) if job.prob_path
                 else np.zeros(len(geoms)))
    return BlockResult(win, Pieces(class_ids, geoms, pixels, prob_sums), first, *strips)


def _probability_sums(job: BlockJob, data, mask, class_ids, first) -> np.ndarray:
    """Per piece: sum over its pixels of its class's probability band (0..255).

    A piece is a connected component of its class among the kept pixels (what ``shapes``
    polygonized), so the block's pixels are labelled again with ``scipy.ndimage.label``
    at the same connectivity and each piece takes its component's sum, found through its
    first pixel (no geometry is burned back into pixels)."""
    from scipy import ndimage

    win = job.window
    structure = ndimage.generate_binary_structure(2, 1 if job.connectivity == 4 else 2)
    row, col = np.divmod(first, job.width + 1)
    row, col = row - win.row, col - win.col
    bands = dict(job.prob_bands)
    sums = np.zeros(len(class_ids))
    with rasterio.open(job.prob_path) as ds:
        for cid in np.unique(class_ids).tolist():
            band = bands.get(cid, cid + 1)
            if band > ds.count:
                raise InvalidInputError(f"{job.prob_path}: has {ds.count} bands, none for "
                                        f"class {cid}; give the probabilities.tif written "
                                        "with this class raster")
            prob = ds.read(band, window=win.to_rasterio())
            region = data == cid if mask is None else (data == cid) & mask
            components, _ = ndimage.label(region, structure=structure)
            per_component = np.bincount(components.ravel(), weights=prob.ravel())
            own = np.flatnonzero(class_ids == cid)
            sums[own] = per_component[components[row[own], col[own]]]
    return sums


def save_block(result: BlockResult, path) -> Path:
    """Write a block's result as an ``.npz`` of plain arrays (no pickle), atomically.

    Lets a scheduler keep block results on shared storage instead of in memory, so the
    merge reads them back one block row at a time (:func:`load_block`).
    """
    path = Path(path)
    p = result.pieces
    coords, offsets = np.zeros((0, 2)), (np.zeros(1, np.int64),) * 3
    if len(p.geoms):
        _, coords, offsets = ragged_rings(p.geoms)
    w = result.window
    with replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, window=np.array([w.row, w.col, w.height, w.width], np.int64),
                 coords=coords, ring_off=offsets[0], part_off=offsets[1], geom_off=offsets[2],
                 class_ids=p.class_ids, pixels=p.pixels, prob_sums=p.prob_sums,
                 first=result.first, top=result.top, bottom=result.bottom, left=result.left,
                 right=result.right)
    return path


def load_block(path) -> BlockResult:
    """The :class:`BlockResult` that :func:`save_block` wrote (same geometries, exactly)."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    geoms = (from_rings(a["coords"], a["ring_off"], a["part_off"], a["geom_off"])
             if len(a["class_ids"]) else np.zeros(0, object))
    return BlockResult(Window(*a["window"].tolist()),
                       Pieces(a["class_ids"], np.asarray(geoms, object), a["pixels"],
                              a["prob_sums"]),
                       a["first"], a["top"], a["bottom"], a["left"], a["right"])


def _block_jobs(raster: ClassRaster, *, keep, block_size, connectivity, prob_path,
                prob_bands) -> list[BlockJob]:
    grid = raster.grid
    return [BlockJob(raster.path, w, grid.width, raster.nodata, keep,
                     connectivity, str(prob_path) if prob_path else None, tuple(prob_bands))
            for w in block_windows(grid, block_size=block_size)]


def _results(jobs, pool, ahead: int):
    """``polygonize_block`` of each job, in job order, at most ``ahead`` in flight."""
    if pool is None:
        for job in jobs:
            yield polygonize_block(job)
        return
    pending = deque()
    for job in jobs:
        pending.append(pool.submit(polygonize_block, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _pool(workers: int, jobs: int):
    if workers > 1 and jobs > 1:
        return ProcessPoolExecutor(max_workers=min(workers, jobs))
    return nullcontext()


def iter_regions(raster: ClassRaster, *, keep=None, block_size: int = 1024,
                 connectivity: int = 4, prob_path=None, prob_bands=(), workers: int = 1):
    """Regions (global pixel coordinates) in canonical order, a chunk per block row."""
    jobs = _block_jobs(raster, keep=keep, block_size=block_size, connectivity=connectivity,
                       prob_path=prob_path, prob_bands=prob_bands)
    grid = raster.grid
    with _pool(workers, len(jobs)) as pool:
        yield from stream_regions(_results(jobs, pool, 2 * workers), height=grid.height,
                                  width=grid.width, block_size=block_size,
                                  connectivity=connectivity, pool=pool)


def polygonize_raster(raster: ClassRaster, *, keep=None, block_size: int = 1024,
                      connectivity: int = 4, prob_path=None, prob_bands=(),
                      workers: int = 1) -> Pieces:
    """Every region of the kept classes as one polygon, in global pixel coordinates.

    ``workers`` > 1 polygonizes blocks in that many processes; the result is the same.
    """
    return Pieces.concat(list(iter_regions(
        raster, keep=keep, block_size=block_size, connectivity=connectivity,
        prob_path=prob_path, prob_bands=prob_bands, workers=workers)))


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
    multi = [k for k, g in enumerate(groups) if len(g) > 1]
    if multi:
        out.geoms[multi] = union_pieces([pieces.geoms[groups[k]] for k in multi], step=1,
                                        height=grid.height, width=grid.width)
    return out.take(canonical_order(out.geoms, grid.width))


@dataclass(frozen=True)
class VectorizePlan:
    """A checked vectorize run: the class raster, its block jobs and the output settings.

    Small and picklable: a scheduler sends it to the tasks of :func:`polygonize_block`
    (one per ``jobs`` item) and :func:`write_vectorized`.
    """

    raster: ClassRaster
    out_path: Path
    jobs: tuple[BlockJob, ...]
    keep: tuple[int, ...] | None
    block_size: int
    connectivity: int
    min_area: float | None
    simplify: float | None
    probabilities_path: str | None
    layer: str
    metadata: dict = field(default_factory=dict)

    @property
    def options(self) -> dict:
        # only what changes the polygons: block size and absolute paths would make the
        # file's bytes depend on how and where it was made
        return {"min_area_m2": self.min_area, "simplify": self.simplify,
                "connectivity": self.connectivity,
                "classes": list(self.keep) if self.keep else "all",
                "probabilities": Path(self.probabilities_path).name
                if self.probabilities_path else None}

    @property
    def streams(self) -> bool:
        """True when regions go to the file as they become final (no min-area/simplify)."""
        return not self.min_area and not self.simplify


def plan_vectorize(classes_path, out_path, *, block_size: int = 1024,
                   min_area: float | None = None, simplify: float | None = None,
                   connectivity: int = 4, keep_classes=None, probabilities_path=None,
                   overwrite: bool = False, allow_no_crs: bool = False,
                   metadata: dict | None = None, layer: str = "polygons") -> VectorizePlan:
    """Check the options and the rasters and plan the blocks (see :func:`vectorize_raster`).

    Reads metadata only; the output's folder is made ready (an existing file is refused
    unless ``overwrite``).
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"--connectivity {connectivity}: expected 4 or 8")
    if int(block_size) < 1:
        raise ConfigError(f"--block-size {block_size}: expected a positive pixel count")
    for name, value in (("--min-area", min_area), ("--simplify", simplify)):
        if value is not None and not value >= 0:
            raise ConfigError(f"{name} {value}: expected a number >= 0")
    raster = open_class_raster(classes_path, allow_no_crs=allow_no_crs)
    keep = resolve_classes(raster, keep_classes)
    prob_bands = (probability_bands(raster, probabilities_path, keep)
                  if probabilities_path else ())
    out_path = prepare_output(out_path, overwrite=overwrite)
    if out_path.is_dir():  # writers.prepare_output accepts folders (--overwrite): not here
        raise OutputNotWritableError(f"{out_path}: is a folder; give a .gpkg file name")
    prob = str(probabilities_path) if probabilities_path else None
    jobs = _block_jobs(raster, keep=keep, block_size=int(block_size),
                       connectivity=connectivity, prob_path=prob, prob_bands=prob_bands)
    layer_meta = {"GEOSEG_SOURCE": Path(classes_path).name,
                  "GEOSEG_MODEL_NAME": raster.tags.get("GEOSEG_MODEL_NAME", ""),
                  "GEOSEG_MODEL_SHA256": raster.tags.get("GEOSEG_MODEL_SHA256", ""),
                  "GEOSEG_VERSION": __version__, "GEOSEG_OPTIONS": "",
                  CLASSES_TAG: raster.tags.get(CLASSES_TAG, "")}
    plan = VectorizePlan(raster, Path(out_path), tuple(jobs), keep, int(block_size),
                         connectivity, min_area, simplify, prob, layer)
    layer_meta["GEOSEG_OPTIONS"] = json.dumps(plan.options)
    layer_meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    plan.metadata.update(layer_meta)
    return plan


def _columns(plan: VectorizePlan, pieces: Pieces, geoms: np.ndarray) -> dict:
    area_m2, perimeter_m = measure(geoms, plan.raster.grid.crs)
    columns = {"class_id": pieces.class_ids.astype(np.int32),
               "class_name": np.array([class_name(plan.raster, int(c))
                                       for c in pieces.class_ids], object),
               "area_m2": area_m2, "perimeter_m": perimeter_m}
    if plan.probabilities_path:
        with np.errstate(invalid="ignore", divide="ignore"):
            columns["mean_prob"] = pieces.prob_sums / (pieces.pixels * 255.0)
    return columns


def write_vectorized(plan: VectorizePlan, results, *, pool=None) -> dict:
    """Merge the blocks' results (any order) and write the GeoPackage; a summary dict.

    Without min-area and simplify, regions are appended to the staging file block row by
    block row as they become final; with either, the whole coverage is merged first.
    ``pool`` (a ``concurrent.futures`` executor) runs large seam unions in parallel.
    """
    grid = plan.raster.grid
    chunks = stream_regions(results, height=grid.height, width=grid.width,
                            block_size=plan.block_size, connectivity=plan.connectivity,
                            pool=pool)
    found, counts = 0, {}
    if not plan.streams:
        pieces = Pieces.concat(list(chunks))
        found = len(pieces.geoms)
        if plan.min_area:
            pieces = _apply_min_area(pieces, grid, min_area=float(plan.min_area))
        chunks = iter([pieces])
    writer = LayerWriter(plan.out_path, crs=grid.crs, layer=plan.layer,
                         metadata=plan.metadata,
                         multi=plan.connectivity == 8 or not plan.streams and bool(
                             np.any(shapely.get_type_id(pieces.geoms) == 6)))
    features = 0
    with writer:
        for pieces in chunks:
            if plan.streams:
                found += len(pieces.geoms)
            geoms = to_map(pieces.geoms, grid)
            pieces.geoms = np.zeros(0, object)  # pixel-coordinate copies go at once
            if plan.simplify:
                geoms = simplify_coverage(geoms, tolerance=float(plan.simplify))
            columns = _columns(plan, pieces, geoms)
            writer.write(columns, geoms)
            features += len(geoms)
            for name in columns["class_name"]:
                counts[name] = counts.get(name, 0) + 1
            del pieces, geoms, columns
        if features == 0:
            writer.write(_columns(plan, Pieces.empty(), np.zeros(0, object)),
                         np.zeros(0, object))
    return {"path": str(plan.out_path), "layer": plan.layer, "features": features,
            "regions_found": found, "per_class": counts, "blocks": len(plan.jobs),
            "crs": grid.crs.to_string() if grid.crs else None, "options": plan.options}


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
    background-like classes and nodata). ``metadata`` adds layer metadata items. The
    layer's geometry type is MultiPolygon with ``connectivity=8`` (a region may then be
    several parts touching at corners), Polygon otherwise.
    """
    if int(workers) < 1:
        raise ConfigError(f"--workers {workers}: expected 1 or more")
    plan = plan_vectorize(classes_path, out_path, block_size=block_size, min_area=min_area,
                          simplify=simplify, connectivity=connectivity,
                          keep_classes=keep_classes, probabilities_path=probabilities_path,
                          overwrite=overwrite, allow_no_crs=allow_no_crs,
                          metadata=metadata, layer=layer)
    workers = int(workers)
    with _pool(workers, len(plan.jobs)) as pool:
        return write_vectorized(plan, _results(plan.jobs, pool, 2 * workers), pool=pool)
