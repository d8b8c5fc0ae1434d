"""Joining block pieces of one region across block seams, by pixels, not by geometry.

Every block result carries its pieces (one polygon per connected component of a kept
class inside the block, in global pixel coordinates, numbered 1..n as in the block's
label image) and the label strips along its four edges. Two pieces of neighbouring blocks
are one region when, across the seam between them, a pixel of one faces a pixel of the
other with the same class: at the same position (4-connectivity), or also one position
along (8-connectivity, which covers diagonal and block-corner touches). These pairs are
found with array comparisons of the strips, grouped by connected components of the pair
graph, and each group of two or more pieces is one exact coverage union
(:func:`geoseg.coverage.union_pieces`). A piece in no pair is final as it is.

Output order is canonical: by each region's first pixel in raster order (top row, then
leftmost column), which identifies a region uniquely and does not depend on blocking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .coverage import ragged_rings, union_pieces
from .grid import Window


@dataclass(slots=True)
class Pieces:
    """Polygons with per-polygon pixel statistics; geometries in global pixel coords."""

    class_ids: np.ndarray
    geoms: np.ndarray
    pixels: np.ndarray
    prob_sums: np.ndarray

    @classmethod
    def empty(cls) -> "Pieces":
        return cls(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64),
                   np.zeros(0))

    def take(self, index) -> "Pieces":
        return Pieces(self.class_ids[index], self.geoms[index], self.pixels[index],
                      self.prob_sums[index])

    @classmethod
    def concat(cls, parts) -> "Pieces":
        parts = [p for p in parts if len(p.geoms)] or [cls.empty()]
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("class_ids", "geoms", "pixels", "prob_sums")))


@dataclass(slots=True)
class BlockResult:
    """What one block hands to the merge: small arrays plus its pieces.

    Piece ``i`` is label ``i + 1`` of the block's label image; the strips hold those
    labels (0: no kept pixel) along the block's top and bottom rows, left and right
    columns.
    """

    window: Window
    pieces: Pieces
    first: np.ndarray
    """Per piece: its first pixel in raster order, as ``row * (width + 1) + col``."""
    top: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    bottom: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    left: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    right: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @classmethod
    def empty(cls, window: Window) -> "BlockResult":
        zeros = np.zeros(window.width, np.int32), np.zeros(window.height, np.int32)
        return cls(window, Pieces.empty(), np.zeros(0, np.int64),
                   zeros[0], zeros[0].copy(), zeros[1], zeros[1].copy())


def first_pixels(geoms, width: int) -> np.ndarray:
    """Per geometry: ``row * (width + 1) + col`` of its first pixel in raster order.

    That is its smallest vertex by (y, x): the top-left corner of the leftmost pixel in
    its top row. Unique per region, since regions do not share pixels.
    """
    if len(geoms) == 0:
        return np.zeros(0, np.int64)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    key = coords[:, 1].astype(np.int64) * (width + 1) + coords[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    return np.minimum.reduceat(key, starts)


def block_edges(geoms, window: Window, width: int):
    """First pixels of ``geoms`` (see :func:`first_pixels`) and the block's edge strips.

    Read from the polygons alone: every pixel of a piece in the block's top row has its
    top edge on the piece's boundary, so the boundary segments lying on the block's top
    line are exactly that piece's pixels there (likewise for the other three edges).
    Returns ``first, top, bottom, left, right``; strips hold piece index + 1, 0 for none.
    """
    win = window
    strips = [np.zeros(win.width, np.int32), np.zeros(win.width, np.int32),
              np.zeros(win.height, np.int32), np.zeros(win.height, np.int32)]
    if len(geoms) == 0:
        return (np.zeros(0, np.int64), *strips)
    _, coords, (ring_off, part_off, geom_off) = ragged_rings(geoms)
    part_geom = np.repeat(np.arange(len(geom_off) - 1), np.diff(geom_off))
    ring_geom = part_geom[np.repeat(np.arange(len(part_off) - 1), np.diff(part_off))]
    vertex_geom = np.repeat(ring_geom, np.diff(ring_off))
    x, y = coords[:, 0].astype(np.int64), coords[:, 1].astype(np.int64)
    key = y * (width + 1) + x
    starts = np.flatnonzero(np.r_[True, vertex_geom[1:] != vertex_geom[:-1]])
    first = np.minimum.reduceat(key, starts)
    seg = np.ones(len(coords), bool)
    seg[ring_off[1:] - 1] = False  # no segment from a ring's last vertex
    seg = np.flatnonzero(seg)
    x0, x1, y0, y1, label = x[seg], x[seg + 1], y[seg], y[seg + 1], vertex_geom[seg] + 1
    for strip, along, fixed, a, b, lo, line in (
            (strips[0], y0 == y1, y0, x0, x1, win.col, win.row),
            (strips[1], y0 == y1, y0, x0, x1, win.col, win.row_stop),
            (strips[2], x0 == x1, x0, y0, y1, win.row, win.col),
            (strips[3], x0 == x1, x0, y0, y1, win.row, win.col_stop)):
        on = np.flatnonzero(along & (fixed == line))
        start, stop = np.minimum(a[on], b[on]) - lo, np.maximum(a[on], b[on]) - lo
        count = stop - start
        pos = np.repeat(start - np.cumsum(count) + count, count) + np.arange(count.sum())
        strip[pos] = np.repeat(label[on], count)
    return (first, *strips)


def _facing_pairs(a: np.ndarray, b: np.ndarray, class_of: np.ndarray,
                  connectivity: int) -> np.ndarray:
    """(k, 2) global piece ids facing each other across one seam line, same class."""
    out = []
    shifts = (0,) if connectivity == 4 else (0, 1, -1)
    for s in shifts:
        aa = a if s == 0 else (a[:-1] if s == 1 else a[1:])
        bb = b if s == 0 else (b[1:] if s == 1 else b[:-1])
        ok = (aa >= 0) & (bb >= 0)
        aa, bb = aa[ok], bb[ok]
        same = class_of[aa] == class_of[bb]
        out.append(np.column_stack([aa[same], bb[same]]))
    return np.concatenate(out)


def seam_pairs(results: list[BlockResult], base: np.ndarray, class_of: np.ndarray, *,
               connectivity: int) -> np.ndarray:
    """All (k, 2) pairs of global piece ids joined across internal seams."""
    rows = sorted({r.window.row for r in results})
    cols = sorted({r.window.col for r in results})
    at = {(r.window.row, r.window.col): (r, b) for r, b in zip(results, base)}

    def gid(strip, b):
        return np.where(strip > 0, strip.astype(np.int64) + (b - 1), -1)

    pairs = [np.zeros((0, 2), np.int64)]
    for upper, lower in zip(rows[:-1], rows[1:]):
        a = np.concatenate([gid(at[upper, c][0].bottom, at[upper, c][1]) for c in cols])
        b = np.concatenate([gid(at[lower, c][0].top, at[lower, c][1]) for c in cols])
        pairs.append(_facing_pairs(a, b, class_of, connectivity))
    for west, east in zip(cols[:-1], cols[1:]):
        a = np.concatenate([gid(at[r, west][0].right, at[r, west][1]) for r in rows])
        b = np.concatenate([gid(at[r, east][0].left, at[r, east][1]) for r in rows])
        pairs.append(_facing_pairs(a, b, class_of, connectivity))
    pairs = np.concatenate(pairs)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


CHUNK_VERTICES = 1_000_000
"""Vertices of seam groups unioned per call: bounds the union's temporary arrays."""


def merge_blocks(results: list[BlockResult], *, height: int, width: int, block_size: int,
                 connectivity: int, pool=None) -> Pieces:
    """Every region as one polygon (global pixel coordinates), in canonical order.

    ``results`` are the :func:`~geoseg.vectorize.polygonize_block` results of all blocks
    of a ``block_size`` tiling of the ``height`` x ``width`` raster, in any order.
    Groups are unioned in chunks of about ``CHUNK_VERTICES`` vertices; with ``pool`` (a
    ``concurrent.futures`` executor) the chunks run there in parallel.
    """
    results = sorted(results, key=lambda r: (r.window.row, r.window.col))
    counts = np.array([len(r.first) for r in results], np.int64)
    base = np.cumsum(counts) - counts
    allp = Pieces.concat([r.pieces for r in results])
    first = np.concatenate([r.first for r in results] + [np.zeros(0, np.int64)])
    n = len(first)
    if n == 0:
        return Pieces.empty()
    pairs = seam_pairs(results, base, allp.class_ids, connectivity=connectivity)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(n, n))
    count, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=count)
    out = Pieces(np.zeros(count, np.int64), np.empty(count, object),
                 np.bincount(comp, weights=allp.pixels, minlength=count).astype(np.int64),
                 np.bincount(comp, weights=allp.prob_sums, minlength=count))
    out.class_ids[comp] = allp.class_ids
    key = np.full(count, np.iinfo(np.int64).max)
    np.minimum.at(key, comp, first)
    single = sizes[comp] == 1
    out.geoms[comp[single]] = allp.geoms[single]
    multi = np.flatnonzero(~single)
    if len(multi):
        order = multi[np.argsort(comp[multi], kind="stable")]
        cut = np.flatnonzero(np.diff(comp[order])) + 1
        groups = np.split(allp.geoms[order], cut)
        target = comp[order[np.r_[0, cut]]]
        del allp, order
        sizes = np.array([shapely.get_num_coordinates(g).sum() for g in groups])
        chunk = np.cumsum(sizes) // CHUNK_VERTICES
        if pool is not None:  # at least two chunks per worker, biggest groups first
            parts = max(1, getattr(pool, "_max_workers", 2)) * 2
            chunk = np.argsort(np.argsort(-sizes, kind="stable")) % parts
        kwargs = dict(step=block_size, height=height, width=width)
        tasks = [(np.flatnonzero(chunk == c), [groups[k] for k in np.flatnonzero(chunk == c)])
                 for c in np.unique(chunk)]
        if pool is not None:
            futures = [(idx, pool.submit(union_pieces, grp, **kwargs)) for idx, grp in tasks]
            done = [(idx, f.result()) for idx, f in futures]
        else:
            done = ((idx, union_pieces(grp, **kwargs)) for idx, grp in tasks)
        for idx, geoms in done:
            out.geoms[target[idx]] = geoms
    return out.take(np.argsort(key, kind="stable"))
