"""Weight windows and the block accumulator: tiles' probabilities -> finished class blocks.

Every tile adds ``round(weight * probability * 2**20)`` into an int32 accumulator. Integer
addition is exact and order-free, so a pixel's sum is the same whichever block, worker or
batch its tiles ran in: outputs are byte-identical for any block size (DESIGN.md promise 2).

The accumulator lives where the runtime computes (:mod:`geoseg.arrays`): a torch tensor on
the model's device with torch (a batch's probabilities never leave it), a numpy array with
ONNX Runtime. A batch is weighted and rounded in one operation (:func:`add_tiles`); the
finish (add the neighbours' strips, argmax, probabilities) runs there too, and only uint8
classes (and probabilities) and the int32 spill strips come back to the host. The same
functions run on numpy and on torch (CPU or CUDA) through the array API; integer sums make
the result independent of the order, and softmax is the only step whose bits depend on the
array kind and device. torch is never imported here: the weight windows and the names stay
importable without it, and ONNX Runtime's path runs without it.

Weight windows by name (:data:`WEIGHT_WINDOWS`):

* ``blend``: flat-top window on each side that has a neighbour tile: 0 over the outer
  quarter of the overlap (the pixels with the least context, which disagree most with a
  whole-image prediction), a sin^2 ramp over its middle half, 1 beyond. Facing ramps are
  sin^2 and cos^2 of the same angle, so weights sum to 1 at every pixel (a partition of
  unity): no division by a weight sum. A Hann window over the whole tile would down-weight
  the reliable middle too; a ramp over the whole overlap gives weight to edge pixels (on a
  Unet with a 123 px receptive field, tile 256 / overlap 128: 99.83% agreement with
  whole-image prediction, against 99.99% for this window).
* ``center``: 1 on the tile's core (see ``TileGrid.core``), 0 elsewhere: the overlap is
  context only.

Nodata pixels get weight 0 and the output nodata value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ..arrays import array_namespace, from_host, namespace, to_host
from ..arrays import device as device_of
from ..errors import ConfigError
from ..grid import Window, intersect
from ..tiling import Block, BlockGrid, Tile, TileGrid

FIXED_POINT = 1 << 20
"""Accumulator units per 1.0 of weight x probability (int32 holds a sum of 1.0 easily)."""


def _blend_axis(k: int, n: int, size: int, overlap: int) -> np.ndarray:
    w = np.ones(size, np.float64)
    if overlap:
        quarter = overlap // 4
        span = overlap - 2 * quarter
        ramp = np.zeros(overlap)
        ramp[overlap - quarter:] = 1.0
        ramp[quarter:overlap - quarter] = np.sin(np.pi / 2 * (np.arange(span) + 0.5) / span) ** 2
        if k > 0:
            w[:overlap] = ramp
        if k < n - 1:
            w[size - overlap:] = 1.0 - ramp
    return w


def _center_axis(k: int, n: int, size: int, overlap: int) -> np.ndarray:
    w = np.zeros(size, np.float64)
    start = 0 if k == 0 else overlap // 2
    stop = size if k == n - 1 else size - overlap // 2
    w[start:stop] = 1.0
    return w


WEIGHT_WINDOWS = {"blend": _blend_axis, "center": _center_axis}


def check_stitch(name: str) -> str:
    """Refuse unknown stitch modes with the list of valid ones."""
    if name not in WEIGHT_WINDOWS:
        raise ConfigError(f"unknown stitch mode {name!r}; valid: {', '.join(WEIGHT_WINDOWS)}")
    return name


@lru_cache(maxsize=64)
def _tile_weights(name: str, k_row: int, n_rows: int, k_col: int, n_cols: int, size: int,
                  overlap: int) -> np.ndarray:
    axis = WEIGHT_WINDOWS[name]
    w = np.outer(axis(k_row, n_rows, size, overlap), axis(k_col, n_cols, size, overlap))
    w = (w * FIXED_POINT).astype(np.float32)
    w.setflags(write=False)
    return w


def _window_key(name: str, grid: TileGrid, tile: Tile) -> tuple:
    # Only first/middle/last position matters, so there are at most nine windows per grid.
    def position(k: int, n: int) -> tuple[int, int]:
        return (0 if k == 0 else (2 if k == n - 1 else 1)), min(n, 3)

    return (name, *position(tile.row, grid.n_rows), *position(tile.col, grid.n_cols),
            grid.size, grid.overlap)


def tile_weights(name: str, grid: TileGrid, tile: Tile) -> np.ndarray:
    """(size, size) float32 weights of ``tile`` times :data:`FIXED_POINT` (read-only)."""
    return _tile_weights(*_window_key(name, grid, tile))


@lru_cache(maxsize=64)
def _device_weights(key: tuple, xp: Any, where: str) -> Any:
    return from_host(xp, _tile_weights(*key).copy(), where)


def device_weights(name: str, grid: TileGrid, tile: Tile, device: str,
                   xp: Any = None) -> Any:
    """:func:`tile_weights` as a float32 array of ``xp`` (default: torch) on ``device``
    (cached: one copy per window kind, namespace and device)."""
    return _device_weights(_window_key(name, grid, tile), xp or namespace("torch"), device)


def new_accumulator(extent: Window, n_classes: int, device: str = "cpu",
                    xp: Any = None) -> Any:
    """Zeros (K, H, W) int32 covering a block's extent: an array of ``xp`` (default: torch)
    on ``device``."""
    xp = xp or namespace("torch")
    return xp.zeros((n_classes, extent.height, extent.width), dtype=xp.int32, device=device)


def add_tiles(acc: Any, extent: Window, tiles: Sequence[Tile], probs: Any,
              weights: Any) -> None:
    """Add a batch of tiles: ``probs`` (N, K, size, size) float32, ``weights`` (N, size,
    size) scaled by :data:`FIXED_POINT` and already 0 on invalid pixels, arrays of the
    accumulator's kind on its device. The parts of tiles outside ``extent`` (past the
    scene edge) are dropped."""
    xp = array_namespace(acc)
    contribution = xp.astype(xp.round(probs * weights[:, None, ...]), xp.int32)
    for i, tile in enumerate(tiles):
        part = intersect(tile.read, extent)
        if part is None:
            continue
        t_rows, t_cols = part.slices(within=tile.read)
        a_rows, a_cols = part.slices(within=extent)
        acc[:, a_rows, a_cols] += contribution[i, :, t_rows, t_cols]


def spills(acc: Any, blocks: BlockGrid, block: Block) -> dict:
    """The parts of a finished accumulator that belong to later blocks, keyed by block
    (row, col): ``{(row, col): (window, int32 array)}`` on the host. They are small strips,
    at most ``overlap`` pixels wide."""
    out = {}
    for key, window in blocks.spills(block):
        rows, cols = window.slices(within=block.extent)
        out[key] = (window, to_host(acc[:, rows, cols], copy=True))
    return out


def finish(acc: Any, block: Block, incoming: Iterable[tuple[Window, np.ndarray]],
           valid: np.ndarray, *, nodata: int,
           probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's final classes (uint8, H, W) and optionally probabilities (uint8, K, H, W),
    computed where the accumulator is and returned on the host.

    ``incoming`` are the spill strips other blocks sent into this block's window, ``valid``
    the input mask over the block's window. Ties go to the lowest class id; nodata pixels get
    ``nodata`` (and probability 0). Probabilities are ``round(255 * sum / FIXED_POINT)`` in
    integer arithmetic, so no device rounds them differently.
    """
    xp, where = array_namespace(acc), device_of(acc)
    rows, cols = block.window.slices(within=block.extent)
    total = xp.asarray(acc[:, rows, cols], copy=True)  # acc stays: a retried task reuses it
    for window, strip in incoming:
        s_rows, s_cols = window.slices(within=block.window)
        total[:, s_rows, s_cols] += from_host(xp, strip, where)
    all_valid = bool(valid.all())
    invalid = None if all_valid else ~from_host(xp, np.ascontiguousarray(valid), where)
    classes = _first_argmax(total)
    if invalid is not None:
        classes[invalid] = nodata
    probs = None
    if probabilities:
        scaled = (xp.astype(total, xp.int64) * 255 + FIXED_POINT // 2) // FIXED_POINT
        scaled = xp.astype(xp.clip(scaled, 0, 255), xp.uint8)
        if invalid is not None:
            scaled[:, invalid] = 0
        probs = to_host(scaled)
    return to_host(classes), probs


def _first_argmax(total: Any) -> Any:
    """uint8 index of the largest class sum at each pixel, the lowest class on ties: a pass
    per class (torch.argmax over the first axis is ~25x slower on the CPU)."""
    xp = array_namespace(total)
    best = xp.asarray(total[0], copy=True)
    classes = xp.zeros(best.shape, dtype=xp.uint8, device=device_of(total))
    for k in range(1, total.shape[0]):
        classes[total[k] > best] = k
        best = xp.maximum(best, total[k])
    return classes
