"""Polygons from one finished block of classes: its pieces and the edge strips the seam merge
needs, in global pixel coordinates; part files of block results.

One ``rasterio.features.shapes`` call over the block (nodata and dropped classes masked) gives
one polygon ("piece") per connected component inside the block, with integer vertices, so a
piece's area is its pixel count. The block comes from memory where prediction finished it
(:func:`polygonize_classes`) or from a class raster on disk (:class:`BlockJob`, for
``geoseg vectorize``); the pieces are the same either way. Piece ids along the four edges
are read off the polygons' boundary segments (:func:`~geoseg.vector.seams.block_edges`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.features import shapes

from ..atomic import write_npz
from ..errors import InvalidInputError
from ..grid import Window
from ..inputs.scene import open_raster, read_band
from .coverage import from_rings, ragged_rings, remove_collinear
from .seams import BlockResult, Pieces, block_edges


@dataclass(frozen=True, slots=True)
class PieceRules:
    """What turns class ids into pieces: which values count, and how pixels connect.

    ``width`` is the whole raster's (first-pixel keys are global); ``prob_bands`` maps a
    class id to its 1-based band of the probability block, for ``mean_prob``.
    """

    width: int
    nodata: int | None
    keep: tuple[int, ...] | None
    connectivity: int
    prob_bands: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BlockJob:
    """One block of a class raster on disk (and its probability raster), small enough to
    send to a worker process."""

    path: str
    window: Window
    width: int
    nodata: int | None
    keep: tuple[int, ...] | None
    connectivity: int
    prob_path: str | None = None
    prob_bands: tuple[tuple[int, int], ...] = ()
    """(class id, 1-based band) pairs of the probability raster."""

    @property
    def rules(self) -> PieceRules:
        return PieceRules(self.width, self.nodata, self.keep, self.connectivity,
                          self.prob_bands)


def _polygons(features: Iterable[tuple[dict[str, Any], Any]]) -> tuple[np.ndarray, np.ndarray]:
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
    """Read one block of a class raster (and its probabilities) and polygonize it."""
    win = job.window
    with open_raster(job.path) as ds:
        data = read_band(ds, 1, win)
    probs = None
    if job.prob_path:
        with open_raster(job.prob_path) as ds:
            probs = _read_probability_bands(ds, win, data, job)
    return polygonize_classes(data, win, job.rules, probs=probs)


def _read_probability_bands(ds: Any, win: Window, data: np.ndarray, job: BlockJob) -> dict:
    """The probability bands of the classes present in the block, by band number."""
    bands = dict(job.prob_bands)
    present = np.unique(data)
    if job.keep is not None:
        present = present[np.isin(present, job.keep)]
    out = {}
    for cid in present.tolist():
        if job.nodata is not None and cid == job.nodata:
            continue
        band = bands.get(cid, cid + 1)
        if band > ds.count:
            raise InvalidInputError(f"{job.prob_path}: has {ds.count} bands, none for "
                                    f"class {cid}; give the probabilities.tif written "
                                    "with this class raster")
        out[band] = read_band(ds, band, win)
    return out


def polygonize_classes(data: np.ndarray, window: Window, rules: PieceRules, *,
                       probs: Any = None) -> BlockResult:
    """Pieces of one block of class ids ``data`` (H, W) at ``window`` of the raster, and its
    edge strips. ``probs`` gives a block's probability band by 1-based band number
    (``probs[band - 1]`` of a (K, H, W) array, or a dict of bands) for per-piece sums.
    """
    mask = None if rules.nodata is None else data != rules.nodata
    if rules.keep is not None:
        keep = np.isin(data, rules.keep)
        mask = keep if mask is None else mask & keep
    offset = rasterio.Affine.translation(window.col, window.row)
    class_ids, geoms = _polygons(shapes(data, mask=mask, connectivity=rules.connectivity,
                                        transform=offset))
    if len(geoms) == 0:
        return BlockResult.empty(window)
    if rules.connectivity == 8:  # diagonal touches give self-touching rings: make them valid
        bad = np.flatnonzero(~shapely.is_valid(geoms))
        if len(bad):
            geoms[bad] = remove_collinear(shapely.make_valid(geoms[bad]))
    geoms = shapely.normalize(geoms)
    pixels = np.rint(shapely.area(geoms)).astype(np.int64)
    first, *strips = block_edges(geoms, window, rules.width)
    prob_sums = (_probability_sums(data, window, rules, mask, class_ids, first, probs)
                 if probs is not None else np.zeros(len(geoms)))
    return BlockResult(window, Pieces(class_ids, geoms, pixels, prob_sums), first, *strips)


def _band(probs: Any, band: int) -> np.ndarray:
    return probs[band] if isinstance(probs, dict) else probs[band - 1]


def _probability_sums(data: np.ndarray, win: Window, rules: PieceRules, mask: Any,
                      class_ids: np.ndarray, first: np.ndarray, probs: Any) -> np.ndarray:
    """Per piece: sum over its pixels of its class's probability band (0..255).

    A piece is a connected component of its class among the kept pixels (what ``shapes``
    polygonized), so the block's pixels are labelled again with ``scipy.ndimage.label``
    at the same connectivity and each piece takes its component's sum, found through its
    first pixel (no geometry is burned back into pixels)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if rules.connectivity == 4 else 2)
    row, col = np.divmod(first, rules.width + 1)
    row, col = row - win.row, col - win.col
    bands = dict(rules.prob_bands)
    sums = np.zeros(len(class_ids))
    for cid in np.unique(class_ids).tolist():
        prob = _band(probs, bands.get(cid, cid + 1))
        region = data == cid if mask is None else (data == cid) & mask
        components, _ = ndimage.label(region, structure=structure)
        per_component = np.bincount(components.ravel(), weights=prob.ravel())
        own = np.flatnonzero(class_ids == cid)
        sums[own] = per_component[components[row[own], col[own]]]
    return sums


def save_block(result: BlockResult, path: str | os.PathLike) -> Path:
    """Write a block's result as a compressed ``.npz`` of plain arrays (no pickle),
    atomically.

    Lets a scheduler keep block results on shared storage instead of in memory, so the
    merge reads them back one block row at a time (:func:`load_block`).
    """
    path = Path(path)
    p = result.pieces
    coords, offsets = np.zeros((0, 2)), (np.zeros(1, np.int64),) * 3
    if len(p.geoms):
        _, coords, offsets = ragged_rings(p.geoms)
    w = result.window
    return write_npz(
        path, window=np.array([w.row, w.col, w.height, w.width], np.int64), coords=coords,
        ring_off=offsets[0], part_off=offsets[1], geom_off=offsets[2], class_ids=p.class_ids,
        pixels=p.pixels, prob_sums=p.prob_sums, first=result.first, top=result.top,
        bottom=result.bottom, left=result.left, right=result.right)


def load_block(path: str | os.PathLike) -> BlockResult:
    """The :class:`BlockResult` that :func:`save_block` wrote (same geometries, exactly)."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    geoms = (from_rings(a["coords"], a["ring_off"], a["part_off"], a["geom_off"])
             if len(a["class_ids"]) else np.zeros(0, object))
    return BlockResult(Window(*a["window"].tolist()),
                       Pieces(a["class_ids"], np.asarray(geoms, object), a["pixels"],
                              a["prob_sums"]),
                       a["first"], a["top"], a["bottom"], a["left"], a["right"])
