"""Operations on a polygon coverage (non-overlapping polygons sharing exact edges).

Minimum-area filter, chosen method: polygon-level merge. Regions below the threshold are
visited smallest first (a heap on current area); each is merged into the neighbouring
region that shares the longest edge with it (ties: the larger, then the earlier one),
whose class it takes, and the neighbour's area grows by its area. A small region with no
edge-sharing neighbour (e.g. an island in nodata or in a dropped class) is dropped. This
runs on the merged, seam-free polygons, so unlike a per-block ``sieve`` it does not depend
on block size. Simplification uses ``shapely.coverage_simplify`` over the whole coverage,
so neighbours keep shared edges: no gaps, no overlaps.
"""

from __future__ import annotations

import heapq

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

    def root(i):
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
            for k, length in zip(hits.tolist(), lengths.tolist()):
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
