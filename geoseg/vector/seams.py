"""Joining block pieces of one region across block seams, by pixels, not by geometry.

Every block result carries its pieces (one polygon per connected component of a kept
class inside the block, in global pixel coordinates, numbered 1..n as in the block's
label image) and the label strips along its four edges. Two pieces of neighbouring blocks
are one region when, across the seam between them, a pixel of one faces a pixel of the
other with the same class: at the same position (4-connectivity), or also one position
along (8-connectivity, which covers diagonal and block-corner touches). These pairs are
found with array comparisons of the strips, grouped by connected components of the pair
graph, and each group of two or more pieces is one exact coverage union
(:func:`geoseg.vector.coverage.union_pieces`). A piece in no pair is final as it is.

The merge streams (:class:`SeamStream`): blocks are taken one block row at a time (rows
in order, blocks of a row in any order); a piece touching no internal seam is final at
once, and a group is final as soon as none of its pieces lies on the bottom line of the
rows merged so far. Per-block data is dropped once its row is merged, so what is held is
one block row plus the groups still open across the current row seam.

Output order is canonical and does not depend on blocking: by each region's bottom line
(one past its last pixel row), then by its first pixel in raster order (top row, then
leftmost column), which identifies a region uniquely. Every region a block row finalizes
has a bottom line greater than that of any region finalized before (a region finalized
earlier ended at least one pixel row above the previous row seam; one finalized now
reaches that seam or lies below it), so the chunks a stream yields, each sorted, are the
global order: streaming and collecting everything give the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from ..errors import IncompleteRunError
from ..grid import Window
from ..tiling import BlockGrid
from .coverage import ragged_rings, union_pieces


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

    def take(self, index: np.ndarray) -> "Pieces":
        return Pieces(self.class_ids[index], self.geoms[index], self.pixels[index],
                      self.prob_sums[index])

    @classmethod
    def concat(cls, parts: Iterable["Pieces"]) -> "Pieces":
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


def block_edges(geoms: np.ndarray, window: Window, width: int) -> tuple[np.ndarray, ...]:
    """First pixels of ``geoms`` and the block's edge strips.

    A geometry's first pixel in raster order, as ``row * (width + 1) + col``, is its
    smallest vertex by (y, x): the top-left corner of the leftmost pixel in its top row;
    unique per region, since regions do not share pixels.

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


def canonical_order(geoms: np.ndarray, width: int) -> np.ndarray:
    """Indexes sorting ``geoms`` by (bottom line, first pixel in raster order)."""
    if len(geoms) == 0:
        return np.zeros(0, np.int64)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    key = coords[:, 1].astype(np.int64) * (width + 1) + coords[:, 0].astype(np.int64)
    first = np.minimum.reduceat(key, starts)
    bottom = np.maximum.reduceat(coords[:, 1], starts)
    return np.lexsort((first, bottom))


def _facing(a: np.ndarray, ca: np.ndarray, b: np.ndarray, cb: np.ndarray,
            connectivity: int) -> np.ndarray:
    """(k, 2) piece ids facing each other across one seam line with the same class.

    ``a``/``b`` are the id strips on both sides (-1: no kept pixel), ``ca``/``cb`` their
    class strips; 8-connectivity also pairs pixels one position along (diagonals).
    """
    out = [np.zeros((0, 2), np.int64)]
    for s in ((0,) if connectivity == 4 else (0, 1, -1)):
        sa = slice(None, -1) if s == 1 else (slice(1, None) if s == -1 else slice(None))
        sb = slice(1, None) if s == 1 else (slice(None, -1) if s == -1 else slice(None))
        aa, bb = a[sa], b[sb]
        ok = (aa >= 0) & (bb >= 0) & (ca[sa] == cb[sb])
        out.append(np.column_stack([aa[ok], bb[ok]]))
    return np.concatenate(out)


CHUNK_VERTICES = 1_000_000
"""Vertices of seam groups unioned per call: bounds the union's temporary arrays."""


class SeamStream:
    """Streaming seam merge: feed :class:`BlockResult` s, get final regions in chunks.

    Blocks may come in any order; a block row is merged once all its blocks are there
    and all rows above it are merged. :meth:`add` returns the regions that became final
    (a :class:`Pieces` sorted canonically, possibly empty); after the last block every
    region has been returned. ``pool`` (a ``concurrent.futures`` executor) runs large
    union batches in parallel.
    """

    def __init__(self, *, blocks: BlockGrid, connectivity: int, pool: Any = None) -> None:
        self.blocks = blocks
        self.height, self.width = blocks.tiles.height, blocks.tiles.width
        self.step = blocks.step
        self.connectivity, self.pool = connectivity, pool
        self.ncols, self.nrows = blocks.n_cols, blocks.n_rows
        self.waiting: dict[int, dict[int, BlockResult]] = {}
        self.row = 0
        self.next_id = 0
        self.bottom = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        # open pieces: on a seam not yet merged, or in a group that is still open
        self.open = Pieces.empty()
        self.open_ids = np.zeros(0, np.int64)
        self.open_label = np.zeros(0, np.int64)

    @property
    def done(self) -> bool:
        return self.row >= self.nrows

    def check_complete(self) -> None:
        """Refuse to end a merge that has not seen every block row."""
        if not self.done:
            raise IncompleteRunError(f"blocks missing: merged {self.row} of {self.nrows} "
                                     "block rows; rerun the scene")

    def add(self, result: BlockResult) -> Pieces:
        b_row, b_col = self.blocks.index_of(result.window)
        self.waiting.setdefault(b_row, {})[b_col] = result
        out = []
        while not self.done and len(self.waiting.get(self.row, ())) == self.ncols:
            out.append(self._merge_row(self.waiting.pop(self.row)))
            self.row += 1
        return Pieces.concat(out) if out else Pieces.empty()

    def _merge_row(self, blocks: dict[int, BlockResult]) -> Pieces:
        r, last_row = self.row, self.row == self.nrows - 1
        ids, classes = {}, {}
        final, keep, keep_ids = [], [], []
        for c in range(self.ncols):
            res = blocks.pop(c)
            n = len(res.first)
            gid = np.r_[-1, np.arange(self.next_id, self.next_id + n)]
            cls = np.r_[-1, res.pieces.class_ids]
            self.next_id += n
            inner = [s for s, on in ((res.top, r > 0), (res.bottom, not last_row),
                                     (res.left, c > 0), (res.right, c < self.ncols - 1))
                     if on]
            on_seam = np.zeros(n + 1, bool)
            for s in inner:
                on_seam[s] = True
            on_seam = on_seam[1:]
            ids[c] = [gid[s] for s in (res.top, res.bottom, res.left, res.right)]
            classes[c] = [cls[s] for s in (res.top, res.bottom, res.left, res.right)]
            lone = np.flatnonzero(~on_seam)
            final.append(res.pieces.take(lone))
            seam = np.flatnonzero(on_seam)
            keep.append(res.pieces.take(seam))
            keep_ids.append(gid[1:][seam])
            del res
        # pairs across this row's vertical seams and the seam above it
        pairs = [_facing(ids[c][3], classes[c][3], ids[c + 1][2], classes[c + 1][2],
                         self.connectivity) for c in range(self.ncols - 1)]
        top = (np.concatenate([ids[c][0] for c in range(self.ncols)]),
               np.concatenate([classes[c][0] for c in range(self.ncols)]))
        if r > 0:
            pairs.append(_facing(*self.bottom, *top, self.connectivity))
        self.bottom = (np.concatenate([ids[c][1] for c in range(self.ncols)]),
                       np.concatenate([classes[c][1] for c in range(self.ncols)]))
        new_ids = np.concatenate(keep_ids + [np.zeros(0, np.int64)])
        node_ids = np.r_[self.open_ids, new_ids]
        label = np.r_[self.open_label, new_ids]
        if len(node_ids):
            final.append(self._groups(keep, node_ids, label, pairs, last_row))
        out = Pieces.concat(final)
        return out.take(canonical_order(out.geoms, self.width))

    def _groups(self, keep: list[Pieces], node_ids: np.ndarray, label: np.ndarray,
                pairs: list[np.ndarray], last_row: bool) -> Pieces:
        """Join the open pieces and this row's seam pieces ``keep`` (the list is emptied:
        pieces are dropped as soon as they are unioned) by ``pairs``; return the groups
        that are now final."""
        from scipy.sparse import coo_matrix  # 0.13 s to import: only where seams are joined
        from scipy.sparse.csgraph import connected_components

        pieces = Pieces.concat([self.open] + keep)
        keep.clear()
        self.open = Pieces.empty()
        n = len(node_ids)
        edges = np.concatenate(pairs + [np.column_stack([node_ids, label])])
        local = np.searchsorted(node_ids, edges)  # node ids are increasing
        graph = coo_matrix((np.ones(len(local), np.int8), (local[:, 0], local[:, 1])),
                           shape=(n, n))
        count, comp = connected_components(graph, directed=False)
        on_bottom = np.zeros(count, bool)
        if not last_row:
            below = self.bottom[0][self.bottom[0] >= 0]
            if len(below):
                on_bottom[comp[np.searchsorted(node_ids, np.unique(below))]] = True
        done = ~on_bottom[comp]
        rep = np.full(count, -1, np.int64)
        np.maximum.at(rep, comp, node_ids)  # any member id works as the group label
        self.open = pieces.take(np.flatnonzero(~done))
        self.open_ids = node_ids[~done]
        self.open_label = rep[comp[~done]]
        idx = np.flatnonzero(done)
        chosen = pieces.take(idx)
        del pieces
        return self._union(chosen, comp[idx])

    def _union(self, pieces: Pieces, comp: np.ndarray) -> Pieces:
        """One region per component label of ``pieces`` (whose geometries are taken:
        ``pieces.geoms`` is left empty, so a group's pieces go once it is unioned)."""
        if len(comp) == 0:
            return Pieces.empty()
        order = np.argsort(comp, kind="stable")
        comp, geoms = comp[order], pieces.geoms[order]
        pieces.geoms = np.zeros(0, object)
        starts = np.r_[0, np.flatnonzero(np.diff(comp)) + 1]
        sizes = np.diff(np.r_[starts, len(comp)])
        out = Pieces(pieces.class_ids[order][starts], geoms[starts].copy(),
                     np.add.reduceat(pieces.pixels[order], starts),
                     np.add.reduceat(pieces.prob_sums[order], starts))
        multi = np.flatnonzero(sizes > 1)
        if len(multi):
            out.geoms[multi] = None
            groups = [geoms[starts[k]:starts[k] + sizes[k]].copy() for k in multi]
            del geoms
            out.geoms[multi] = self._union_groups(groups)
        return out

    def _union_groups(self, groups: list[Any]) -> np.ndarray:  # arrays, None once handed on
        seam_rows, seam_cols = self.blocks.seam_extent
        kwargs = dict(step=self.step, height=seam_rows, width=seam_cols)
        nverts = np.array([shapely.get_num_coordinates(g).sum() for g in groups])
        if self.pool is not None and nverts.sum() > CHUNK_VERTICES // 4 and len(groups) > 1:
            parts = max(1, getattr(self.pool, "_max_workers", 2)) * 2
            chunk = np.argsort(np.argsort(-nverts, kind="stable")) % parts
        else:
            chunk = np.cumsum(nverts) // CHUNK_VERTICES
        tasks = [np.flatnonzero(chunk == c) for c in np.unique(chunk)]
        out = np.empty(len(groups), object)
        if self.pool is not None and len(tasks) > 1:
            futures = [(idx, self.pool.submit(union_pieces, [groups[k] for k in idx],
                                              **kwargs)) for idx in tasks]
            groups.clear()
            for idx, f in futures:
                out[idx] = f.result()
        else:
            for idx in tasks:
                batch = [groups[k] for k in idx]
                for k in idx:
                    groups[k] = None
                out[idx] = union_pieces(batch, **kwargs)  # empties batch
        return out


def stream_regions(results: Iterable[BlockResult], *, blocks: BlockGrid, connectivity: int,
                   pool: Any = None) -> Iterator[Pieces]:
    """Final regions in canonical order, one non-empty chunk per merged block row group.

    ``results`` are the polygonized blocks of ``blocks`` (every one), in any order (rows in
    order keep the memory low: a row is merged as soon as it is complete).
    """
    stream = SeamStream(blocks=blocks, connectivity=connectivity, pool=pool)
    for result in results:
        chunk = stream.add(result)
        if len(chunk.geoms):
            yield chunk
    stream.check_complete()


def merge_blocks(results: list[BlockResult], *, blocks: BlockGrid, connectivity: int,
                 pool: Any = None) -> Pieces:
    """Every region as one polygon (global pixel coordinates), in canonical order.

    The collected form of :func:`stream_regions`.
    """
    return Pieces.concat(list(stream_regions(results, blocks=blocks,
                                             connectivity=connectivity, pool=pool)))
