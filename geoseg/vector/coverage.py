"""Operations on a polygon coverage (non-overlapping polygons sharing exact edges).

Minimum-area filter, chosen method: polygon-level merge. Regions below the threshold are
visited smallest first (a heap on current area); each is merged into the neighbouring
region that shares the longest edge with it (ties: the larger, then the earlier one),
whose class it takes, and the neighbour's area grows by its area. A small region with no
edge-sharing neighbour (e.g. an island in nodata or in a dropped class) is dropped. This
runs on the merged, seam-free polygons, so unlike a per-block ``sieve`` it does not depend
on block size. Simplification uses ``shapely.coverage_simplify`` over the whole coverage,
so neighbours keep shared edges: no gaps, no overlaps.

Pixel-coordinate helpers for exact unions: polygons from ``rasterio.features.shapes`` in
pixel coordinates have integer vertices and axis-parallel edges. Two pieces of one region
cut by a block seam share part of a seam line but are noded differently there;
:func:`node_seams` puts a vertex at every integer point of edges lying on a seam, which
makes the pieces a proper coverage, so ``shapely.coverage_union_all`` (edge matching, no
overlay) is exact. :func:`remove_collinear` then drops the vertices that became straight
(seam nodes, block corners), giving the same vertices as one whole-raster polygonization.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely


def merge_small(geoms: np.ndarray, areas: np.ndarray, *, min_area: float) -> list[np.ndarray]:
    """Groups of indexes after merging regions below ``min_area`` (same unit as ``areas``).

    Each group's first index is the region that survives (its class and attributes win);
    the rest are absorbed into it. Dropped regions appear in no group.
    """
    n = len(geoms)
    areas = np.asarray(areas, float).copy()
    owner = np.arange(n)
    alive = np.ones(n, bool)
    members = {i: [i] for i in range(n)}
    tree = shapely.STRtree(geoms)

    def root(i: int) -> int:
        while owner[i] != i:
            owner[i] = owner[owner[i]]
            i = owner[i]
        return i

    heap = [(areas[i], i) for i in range(n) if areas[i] < min_area]
    heapq.heapify(heap)
    while heap:
        area, i = heapq.heappop(heap)
        if not alive[i] or owner[i] != i or area != areas[i] or area >= min_area:
            continue
        shared: dict[int, float] = {}
        for m in members[i]:
            hits = tree.query(geoms[m], predicate="touches")
            if len(hits) == 0:
                continue
            lengths = shapely.length(shapely.intersection(geoms[m], geoms[hits]))
            for k, length in zip(hits.tolist(), lengths.tolist(), strict=True):
                r = root(k)
                if r != i and alive[r] and length > 0:
                    shared[r] = shared.get(r, 0.0) + length
        if not shared:
            alive[i] = False
            continue
        best = max(shared, key=lambda r: (shared[r], areas[r], -r))
        owner[i] = best
        members[best].extend(members.pop(i))
        areas[best] += areas[i]
        if areas[best] < min_area:
            heapq.heappush(heap, (areas[best], best))
    return [np.array(members[i]) for i in range(n) if owner[i] == i and alive[i]]


def simplify_coverage(geoms: np.ndarray, *, tolerance: float) -> np.ndarray:
    """Simplify all polygons together, keeping shared edges shared (map units)."""
    if len(geoms) == 0 or tolerance <= 0:
        return geoms
    simplified = np.asarray(shapely.coverage_simplify(geoms, tolerance), object)
    bad = ~shapely.is_valid(simplified)
    if bad.any():
        simplified[bad] = shapely.make_valid(simplified[bad])
    return simplified


def ragged_rings(geoms: np.ndarray) -> tuple[shapely.GeometryType, np.ndarray,
                                            tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ragged MultiPolygon arrays of Polygon/MultiPolygon ``geoms``."""
    kind, coords, offsets = shapely.to_ragged_array(np.asarray(geoms, object))
    if kind == shapely.GeometryType.POLYGON:
        offsets = (*offsets, np.arange(len(offsets[1])))
    return kind, coords, offsets


def from_rings(coords: np.ndarray, ring_offsets: np.ndarray, part_offsets: np.ndarray,
               geom_offsets: np.ndarray) -> np.ndarray:
    out = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, coords,
                                    (ring_offsets, part_offsets, geom_offsets))
    single = shapely.get_num_geometries(out) == 1
    out[single] = shapely.get_geometry(out[single], 0)
    return out


BATCH_VERTICES = 250_000
"""Vertices per vectorized call of :func:`node_seams` / :func:`remove_collinear`: their
numpy temporaries are ~20 arrays of one value per vertex, so a scene-spanning region
(millions of vertices) is done a batch of pieces (or of rings) at a time."""


def _batches(geoms: np.ndarray, limit: int = BATCH_VERTICES) -> list[np.ndarray]:
    """Index arrays over ``geoms``, consecutive, about ``limit`` vertices each."""
    sizes = shapely.get_num_coordinates(np.asarray(geoms, object)).tolist()
    out, start, total = [], 0, 0
    for k, size in enumerate(sizes):  # a geometry over the limit is a batch of its own
        if k > start and total + size > limit:
            out.append(np.arange(start, k))
            start, total = k, 0
        total += size
    if start < len(sizes):
        out.append(np.arange(start, len(sizes)))
    return out


def node_seams(geoms: np.ndarray, *, step: int, height: int, width: int) -> np.ndarray:
    """``geoms`` with a vertex at every integer point of edges on an internal seam.

    Seams are the lines x = k * step (0 < x < width) and y = k * step (0 < y < height).
    Vectorized over the rings of a batch of geometries; vertices must be integers and
    edges axis-parallel.
    """
    geoms = np.asarray(geoms, object)
    if len(geoms) == 0:
        return geoms
    out = np.empty(len(geoms), object)
    for idx in _batches(geoms):
        out[idx] = _node_seams(geoms[idx], step=step, height=height, width=width)
    return out


def _node_seams(geoms: np.ndarray, *, step: int, height: int, width: int) -> np.ndarray:
    if len(geoms) == 0:
        return np.asarray(geoms, object)
    _, coords, (ring_off, part_off, geom_off) = ragged_rings(geoms)
    x, y = coords[:, 0], coords[:, 1]
    last = np.zeros(len(coords), bool)
    last[ring_off[1:] - 1] = True
    nxt = np.minimum(np.arange(len(coords)) + 1, len(coords) - 1)
    dx, dy = x[nxt] - x, y[nxt] - y
    vertical = (dx == 0) & (x % step == 0) & (x > 0) & (x < width)
    horizontal = (dy == 0) & (y % step == 0) & (y > 0) & (y < height)
    length = np.abs(dx) + np.abs(dy)
    extra = np.where((vertical | horizontal) & ~last & (length > 1), length - 1, 0)
    extra = extra.astype(np.int64)
    if not extra.any():
        return np.asarray(geoms, object)
    count = extra + 1
    src = np.repeat(np.arange(len(coords)), count)
    t = np.arange(len(src)) - np.repeat(np.cumsum(count) - count, count)
    unit = np.column_stack([np.sign(dx), np.sign(dy)])
    out = coords[src] + t[:, None] * unit[src]
    ring_len = np.add.reduceat(count, ring_off[:-1])
    return from_rings(out, np.r_[0, np.cumsum(ring_len)], part_off, geom_off)


def remove_collinear(geoms: np.ndarray) -> np.ndarray:
    """Drop vertices whose neighbours are on the same axis-parallel line (ring start too).

    Done a batch of geometries at a time; a geometry larger than a batch is done ring by
    ring batch (each ring as a polygon) and put back together (rings keep their order).
    """
    geoms = np.asarray(geoms, object)
    if len(geoms) == 0:
        return geoms
    out = np.empty(len(geoms), object)
    for idx in _batches(geoms):
        if len(idx) == 1 and shapely.get_num_coordinates(geoms[idx[0]]) > BATCH_VERTICES:
            out[idx[0]] = _remove_collinear_rings(geoms[idx[0]])
        else:
            out[idx] = _remove_collinear(geoms[idx])
    return out


def _remove_collinear_rings(geom: shapely.Geometry) -> shapely.Geometry:
    parts = shapely.get_parts(geom)
    rings, part = shapely.get_rings(parts, return_index=True)
    cleaned = np.empty(len(rings), object)
    as_polygons = shapely.polygons(rings)
    for idx in _batches(as_polygons):
        cleaned[idx] = shapely.get_exterior_ring(_remove_collinear(as_polygons[idx]))
    polys = []
    for k in range(len(parts)):
        own = cleaned[part == k]
        polys.append(shapely.polygons(own[0], holes=own[1:] if len(own) > 1 else None))
    return polys[0] if shapely.get_type_id(geom) == 3 else shapely.multipolygons(polys)


def _remove_collinear(geoms: np.ndarray) -> np.ndarray:
    if len(geoms) == 0:
        return np.asarray(geoms, object)
    _, coords, (ring_off, part_off, geom_off) = ragged_rings(geoms)
    closed = np.diff(ring_off)
    n_open = closed - 1
    ring = np.repeat(np.arange(len(closed)), closed)
    pos = np.arange(len(coords)) - ring_off[:-1][ring]
    keep_open = pos < n_open[ring]
    pts, ring = coords[keep_open], ring[keep_open]
    start = np.r_[0, np.cumsum(n_open)[:-1]][ring]
    i = np.arange(len(pts))
    p = i - start
    prev = np.where(p == 0, i + n_open[ring] - 1, i - 1)
    nxt = np.where(p == n_open[ring] - 1, start, i + 1)
    x, y = pts[:, 0], pts[:, 1]
    straight = (((x[prev] == x) & (x == x[nxt])) | ((y[prev] == y) & (y == y[nxt])))
    pts, ring = pts[~straight], ring[~straight]
    kept = np.bincount(ring, minlength=len(closed))
    first = np.r_[0, np.cumsum(kept)[:-1]]
    out = np.insert(pts, first + kept, pts[first], axis=0)
    return from_rings(out, np.r_[0, np.cumsum(kept + 1)], part_off, geom_off)


def _union_shells(pieces: np.ndarray) -> shapely.Geometry:
    """Coverage union of the pieces' shells, then the pieces' own holes put back.

    A piece's hole lies inside its block and holds no pixel of another piece of the
    group (such a pixel would connect to the piece inside the block), so the shells do
    not overlap, the holes do not touch a seam, and every hole of the union is either a
    new one the union forms or one of the pieces' holes. Holes are what makes the
    coverage union slow (ring nesting), so they are kept out of it. A multi-part piece
    (8-connectivity) may hold one of its own parts in a hole, so its group is unioned
    as it is.
    """
    if (shapely.get_type_id(pieces) != 3).any() or not (
            shapely.get_num_interior_rings(pieces).any()):
        return shapely.coverage_union_all(pieces)
    counts = shapely.get_num_interior_rings(pieces)
    owner = np.repeat(np.arange(len(pieces)), counts)
    holes = shapely.get_interior_ring(pieces[owner],
                                      np.arange(len(owner)) - np.repeat(np.cumsum(counts)
                                                                        - counts, counts))
    shells = shapely.polygons(shapely.get_exterior_ring(pieces))
    del owner
    merged = shapely.coverage_union_all(shells)
    del shells
    if shapely.get_type_id(merged) == 3:
        return _with_holes(merged, holes)
    if shapely.get_type_id(merged) != 6:
        raise shapely.errors.GEOSException("coverage union gave no polygon")
    outer = np.asarray(merged.geoms, object)
    inside = shapely.point_on_surface(shapely.polygons(holes))
    where, part = shapely.STRtree(outer).query(inside, predicate="within")
    owner = np.full(len(holes), -1)
    owner[where] = part
    if (owner < 0).any():
        raise shapely.errors.GEOSException("hole outside the union")
    return shapely.multipolygons([_with_holes(p, holes[owner == k])
                                  for k, p in enumerate(outer)])


def _with_holes(polygon: shapely.Polygon, holes: np.ndarray) -> shapely.Polygon:
    rings = np.array([*polygon.interiors, *holes] + [None], object)[:-1]
    return shapely.polygons(polygon.exterior, holes=rings)


def union_pieces(groups: Sequence[np.ndarray], *, step: int, height: int,
                 width: int) -> np.ndarray:
    """One canonical geometry per group of non-overlapping integer-vertex pieces.

    A ``groups`` list is emptied once its pieces are noded (so that, unless the caller
    holds them elsewhere, the original pieces are freed before the unions run).

    Pieces are noded along the seams, coverage-unioned, cleared of straight vertices and
    normalized. The pieces are a proper coverage (disjoint interiors, identical vertices
    on shared edges), for which the coverage union is exact and valid, so no validity
    check is spent on (possibly scene-sized) results; a group the coverage union refuses
    (not expected) falls back to the overlay union.
    """
    if not groups:
        return np.zeros(0, object)
    sizes = np.array([len(g) for g in groups])
    cat = np.concatenate(groups)
    if isinstance(groups, list):
        groups.clear()  # the caller's list: the original pieces go once noded
    noded = node_seams(cat, step=step, height=height, width=width)
    del cat
    parts: list[Any] = np.split(noded, np.cumsum(sizes)[:-1])  # arrays, None once unioned
    del noded
    merged = np.empty(len(parts), object)
    for k in range(len(parts)):
        pieces = parts[k]
        try:
            merged[k] = _union_shells(pieces)
        except shapely.errors.GEOSException:
            merged[k] = None
        if merged[k] is None or shapely.get_type_id(merged[k]) not in (3, 6):
            merged[k] = shapely.union_all(pieces)  # fallback: overlay union
        parts[k] = None  # a group's noded pieces go once it is unioned
        del pieces
    return shapely.normalize(remove_collinear(merged))
