"""Polygons of a whole raster from its blocks: the plan, the streaming merge into a vector
file (:class:`VectorSink`), and ``geoseg vectorize`` over a class raster on disk.

Blocks are polygonized on their own (:mod:`geoseg.vector.polygonize`), in global pixel
coordinates; the seam merge (:mod:`geoseg.vector.seams`) pairs pieces across block seams pixel by
pixel and unions each group as an exact coverage; the raster's affine transform is applied
once at the end (:func:`geoseg.grid.to_map`), so the result equals one whole-raster
``rasterio.features.shapes`` call (made valid) polygon for polygon, whatever the blocks.

The blocks are a :class:`~geoseg.tiling.BlockGrid`: prediction hands its own finished
blocks to a :class:`VectorSink` as they finish (``geoseg predict --vectorize`` never reads
classes.tif back); ``geoseg vectorize`` reads square blocks of a class raster
(:func:`vectorize_raster`). Geometries are canonical (collinear vertices removed,
``shapely.normalize``) and sorted by (bottom line, first pixel in raster order), so the
output does not depend on block size or worker count.

Memory: without ``min_area`` and ``simplify`` the merge streams, and each block row's final
regions are appended to the staging file at once (:class:`~geoseg.vector.gpkg.LayerWriter`).
Peak memory is then about one block row of pieces plus the regions still open across the
current row seam, not the whole output.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from .. import __version__
from ..classes import CLASSES_TAG
from ..errors import ConfigError, OutputNotWritableError
from ..grid import PixelGrid, Window, to_map
from ..outputs.class_raster import (
    ClassRaster,
    class_name,
    open_class_raster,
    probability_bands,
    resolve_classes,
)
from ..outputs.rasters import prepare_output
from ..tiling import BlockGrid
from .coverage import merge_small, simplify_coverage, union_pieces
from .files import vector_suffix
from .gpkg import LayerWriter, measure
from .polygonize import BlockJob, PieceRules, polygonize_block
from .seams import BlockResult, Pieces, SeamStream, canonical_order


def block_windows(grid: PixelGrid, *, block_size: int) -> list[Window]:
    """Windows of ``block_size`` pixels tiling the grid row by row; edge blocks smaller."""
    blocks = BlockGrid.regular(height=grid.height, width=grid.width, block_size=block_size)
    return [b.window for b in blocks.blocks()]


@dataclass(frozen=True)
class VectorizePlan:
    """A checked vectorize run: the raster's classes and blocks and the output settings.

    Small and picklable: a scheduler sends it to the tasks that polygonize blocks and to
    the one that merges and writes.
    """

    raster: ClassRaster
    out_path: Path
    blocks: BlockGrid
    keep: tuple[int, ...] | None
    connectivity: int
    min_area: float | None
    simplify: float | None
    probabilities_path: str | None
    prob_bands: tuple[tuple[int, int], ...]
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

    @property
    def rules(self) -> PieceRules:
        """How a block's class ids become pieces."""
        return PieceRules(self.raster.grid.width, self.raster.nodata, self.keep,
                          self.connectivity, self.prob_bands)

    @property
    def jobs(self) -> tuple[BlockJob, ...]:
        """One job per block that reads it from the class raster on disk."""
        r = self.raster
        return tuple(BlockJob(r.path, b.window, r.grid.width, r.nodata, self.keep,
                              self.connectivity, self.probabilities_path, self.prob_bands)
                     for b in self.blocks.blocks())


def check_vector_options(*, connectivity: int, min_area: float | None,
                         simplify: float | None) -> None:
    """Refuse connectivity, min-area and simplify values that make no polygons."""
    if connectivity not in (4, 8):
        raise ConfigError(f"--connectivity {connectivity}: expected 4 or 8")
    for name, value in (("--min-area", min_area), ("--simplify", simplify)):
        if value is not None and not value >= 0:
            raise ConfigError(f"{name} {value}: expected a number >= 0")


def make_vector_plan(raster: ClassRaster, out_path: str | os.PathLike, blocks: BlockGrid, *,
                     keep: tuple[int, ...] | None, connectivity: int = 4,
                     min_area: float | None = None, simplify: float | None = None,
                     probabilities_path: str | os.PathLike | None = None,
                     prob_bands: tuple[tuple[int, int], ...] = (),
                     metadata: dict | None = None, layer: str = "polygons") -> VectorizePlan:
    """A plan over checked inputs (no I/O; options checked with
    :func:`check_vector_options` by the caller that took them from a user): the layer
    metadata names the source raster, the model that wrote it and the options that change
    the polygons."""
    prob = str(probabilities_path) if probabilities_path else None
    plan = VectorizePlan(raster, Path(out_path), blocks, keep, connectivity, min_area,
                         simplify, prob, tuple(prob_bands), layer)
    plan.metadata.update({
        "GEOSEG_SOURCE": Path(raster.path).name,
        "GEOSEG_MODEL_NAME": raster.tags.get("GEOSEG_MODEL_NAME", ""),
        "GEOSEG_MODEL_SHA256": raster.tags.get("GEOSEG_MODEL_SHA256", ""),
        "GEOSEG_VERSION": __version__, "GEOSEG_OPTIONS": json.dumps(plan.options),
        CLASSES_TAG: raster.tags.get(CLASSES_TAG, "")})
    plan.metadata.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return plan


def plan_vectorize(classes_path: str | os.PathLike, out_path: str | os.PathLike, *,
                   block_size: int = 1024, min_area: float | None = None,
                   simplify: float | None = None, connectivity: int = 4,
                   keep_classes: Any = None,
                   probabilities_path: str | os.PathLike | None = None,
                   overwrite: bool = False, allow_no_crs: bool = False,
                   metadata: dict | None = None, layer: str = "polygons") -> VectorizePlan:
    """Check the options and the rasters and plan square blocks of ``block_size`` pixels
    (see :func:`vectorize_raster`). Reads metadata only; the output's folder is made ready
    (an existing file is refused unless ``overwrite``)."""
    check_vector_options(connectivity=connectivity, min_area=min_area, simplify=simplify)
    raster = open_class_raster(classes_path, allow_no_crs=allow_no_crs)
    blocks = BlockGrid.regular(height=raster.grid.height, width=raster.grid.width,
                               block_size=block_size)
    keep = resolve_classes(raster, keep_classes)
    prob_bands = (probability_bands(raster, probabilities_path, keep)
                  if probabilities_path else ())
    vector_suffix(out_path)  # the format, from the extension: refused before any work
    out = prepare_output(Path(out_path), overwrite=overwrite)
    if out.is_dir():  # rasters.prepare_output accepts folders (--overwrite): not here
        raise OutputNotWritableError(f"{out}: is a folder; give a .gpkg file name")
    return make_vector_plan(raster, out, blocks, keep=keep, connectivity=connectivity,
                            min_area=min_area, simplify=simplify,
                            probabilities_path=probabilities_path, prob_bands=prob_bands,
                            metadata=metadata, layer=layer)


def _apply_min_area(pieces: Pieces, grid: PixelGrid, *, min_area: float) -> Pieces:
    """Merge regions under ``min_area`` m^2 into neighbours (see :mod:`geoseg.vector.coverage`).

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


class VectorSink:
    """Polygonized blocks in (any order), the vector file out: the merge and write step.

    Use as a context manager; :meth:`add` takes each block's :class:`BlockResult`. Without
    min-area and simplify, regions are appended to the staging file block row by block row
    as they become final; with either, the whole coverage is merged at the end. Leaving the
    block normally publishes the file (an error leaves the old file or none); the summary
    is then in :attr:`summary`. ``pool`` runs large seam unions in parallel.
    """

    def __init__(self, plan: VectorizePlan, *, pool: Executor | None = None) -> None:
        self.plan = plan
        self.stream = SeamStream(blocks=plan.blocks, connectivity=plan.connectivity, pool=pool)
        self.collected: list[Pieces] = []
        self.found = 0
        self.features = 0
        self.per_class: dict[str, int] = {}
        self.summary: dict = {}
        self.writer = LayerWriter(plan.out_path, crs=plan.raster.grid.crs, layer=plan.layer,
                                  metadata=plan.metadata,
                                  multi=plan.connectivity == 8 or not plan.streams)

    def __enter__(self) -> "VectorSink":
        self.writer.__enter__()
        return self

    def add(self, result: BlockResult) -> None:
        chunk = self.stream.add(result)
        if not len(chunk.geoms):
            return
        self.found += len(chunk.geoms)
        if self.plan.streams:
            self._write(chunk)
        else:
            self.collected.append(chunk)

    def _write(self, pieces: Pieces) -> None:
        plan = self.plan
        geoms = to_map(pieces.geoms, plan.raster.grid)
        pieces.geoms = np.zeros(0, object)  # pixel-coordinate copies go at once
        if plan.simplify:
            geoms = simplify_coverage(geoms, tolerance=float(plan.simplify))
        columns = _columns(plan, pieces, geoms)
        self.writer.write(columns, geoms)
        self.features += len(geoms)
        for name in columns["class_name"]:
            self.per_class[name] = self.per_class.get(name, 0) + 1

    def _finish(self) -> None:
        plan, grid = self.plan, self.plan.raster.grid
        self.stream.check_complete()
        if not plan.streams:
            pieces = Pieces.concat(self.collected)
            self.collected = []
            if plan.min_area:
                pieces = _apply_min_area(pieces, grid, min_area=float(plan.min_area))
            # a whole coverage is written at once: MultiPolygon only when one is there
            self.writer.multi = plan.connectivity == 8 or bool(
                np.any(shapely.get_type_id(pieces.geoms) == 6))
            self._write(pieces)
        if self.features == 0:
            self.writer.write(_columns(plan, Pieces.empty(), np.zeros(0, object)),
                              np.zeros(0, object))
        self.summary = {"path": str(plan.out_path), "layer": plan.layer,
                        "features": self.features, "regions_found": self.found,
                        "per_class": self.per_class, "blocks": len(plan.blocks),
                        "crs": grid.crs.to_string() if grid.crs else None,
                        "options": plan.options}

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            try:
                self._finish()
            except BaseException as error:
                self.writer.__exit__(type(error), error, error.__traceback__)
                raise
        self.writer.__exit__(kind, exc, tb)


def write_vectorized(plan: VectorizePlan, results: Iterable[BlockResult], *,
                     pool: Executor | None = None) -> dict:
    """Merge the blocks' results (any order) and write the vector file; a summary dict."""
    with VectorSink(plan, pool=pool) as sink:
        for result in results:
            sink.add(result)
    return sink.summary


def _results(jobs: Iterable[BlockJob], pool: Executor | None,
             ahead: int) -> Iterator[BlockResult]:
    """``polygonize_block`` of each job, in job order, at most ``ahead`` in flight."""
    if pool is None:
        for job in jobs:
            yield polygonize_block(job)
        return
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(polygonize_block, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _pool(workers: int, jobs: int) -> Any:
    if workers > 1 and jobs > 1:
        return ProcessPoolExecutor(max_workers=min(workers, jobs))
    return nullcontext()


def polygonize_raster(raster: ClassRaster, *, keep: tuple[int, ...] | None = None,
                      block_size: int = 1024, connectivity: int = 4,
                      prob_path: str | None = None,
                      prob_bands: tuple[tuple[int, int], ...] = (),
                      workers: int = 1) -> Pieces:
    """Every region of the kept classes as one polygon, in global pixel coordinates.

    ``workers`` > 1 polygonizes blocks in that many processes; the result is the same.
    """
    blocks = BlockGrid.regular(height=raster.grid.height, width=raster.grid.width,
                               block_size=block_size)
    jobs = [BlockJob(raster.path, b.window, raster.grid.width, raster.nodata, keep,
                     connectivity, prob_path, tuple(prob_bands)) for b in blocks.blocks()]
    stream = SeamStream(blocks=blocks, connectivity=connectivity)
    with _pool(int(workers), len(jobs)) as pool:
        stream.pool = pool
        chunks = [stream.add(r) for r in _results(jobs, pool, 2 * int(workers))]
    return Pieces.concat(chunks)


def vectorize_raster(classes_path: str | os.PathLike, out_path: str | os.PathLike, *,
                     block_size: int = 1024, min_area: float | None = None,
                     simplify: float | None = None, connectivity: int = 4,
                     keep_classes: Any = None,
                     probabilities_path: str | os.PathLike | None = None,
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
    jobs = plan.jobs
    with _pool(workers, len(jobs)) as pool:
        return write_vectorized(plan, _results(jobs, pool, 2 * workers), pool=pool)
