"""The global tile grid over a scene, and blocks that are unions of whole tiles.

Pure index math in pixels, no I/O. Tiles sit on one grid for the whole scene: tile
``(row, col)`` reads ``size x size`` pixels starting at ``(row * stride, col * stride)``,
``stride = size - overlap``. Tiles of the last row/column may reach past the scene; that part
is read boundless and masked. A block is a rectangle of ``tiles_per_block`` tiles per side;
its output window starts at its first tile's origin and ends where the next block starts
(the last block ends at the scene edge), so block windows partition the scene and every
tile belongs to exactly one block whatever the block size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .grid import Window, intersect

OUTPUT_STRIDE = 32
"""Most smp encoders downsample by 32: tile size and stride must be multiples of it."""


def _nearest_multiples(value: int, multiple: int) -> str:
    low = max(multiple, value // multiple * multiple)
    high = low + multiple if low <= value else low
    return f"{low} or {high}" if low != value else str(low)


def check_tiling(*, size: int, overlap: int, multiple: int = OUTPUT_STRIDE) -> None:
    """Refuse tile sizes and overlaps that break pooling alignment or blending.

    ``size`` and ``stride = size - overlap`` must be positive multiples of ``multiple`` (the
    network's output stride) and the overlap at most half a tile, so that at most two tiles
    overlap along each axis.
    """
    if size <= 0 or size % multiple:
        raise ConfigError(
            f"tile size {size} is not a positive multiple of the network's output stride "
            f"{multiple}: use {_nearest_multiples(max(size, 1), multiple)}"
        )
    if overlap * 2 > size:  # first: the nearest multiples would be too large as well
        raise ConfigError(
            f"overlap {overlap} is more than half the tile size {size}: use at most "
            f"{size // 2 // multiple * multiple}, or a larger tile"
        )
    if overlap < 0 or overlap % multiple:
        lower = overlap // multiple * multiple
        raise ConfigError(
            f"overlap {overlap} makes the stride {size - overlap}, not a multiple of "
            f"{multiple}: use overlap {max(lower, 0)} or {max(lower, 0) + multiple}"
        )


def tile_count(length: int, *, size: int, stride: int) -> int:
    """Tiles needed along one axis of ``length`` pixels (at least 1)."""
    if length <= size:
        return 1
    return math.ceil((length - size) / stride) + 1


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of the global grid: its index and the window it reads (may pass the edge)."""

    row: int
    col: int
    read: Window


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Tiles of ``size`` pixels overlapping by ``overlap`` pixels over a height x width scene."""

    height: int
    width: int
    size: int
    overlap: int

    @classmethod
    def build(cls, *, height: int, width: int, size: int, overlap: int,
              multiple: int = OUTPUT_STRIDE) -> "TileGrid":
        """A validated grid (see :func:`check_tiling`)."""
        check_tiling(size=size, overlap=overlap, multiple=multiple)
        if height <= 0 or width <= 0:
            raise ConfigError(f"scene is empty ({height} x {width} pixels)")
        return cls(height, width, size, overlap)

    @property
    def stride(self) -> int:
        """Pixels between the origins of neighbouring tiles."""
        return self.size - self.overlap

    @property
    def n_rows(self) -> int:
        return tile_count(self.height, size=self.size, stride=self.stride)

    @property
    def n_cols(self) -> int:
        return tile_count(self.width, size=self.size, stride=self.stride)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def tile(self, row: int, col: int) -> Tile:
        """Tile ``(row, col)`` of the grid."""
        return Tile(row, col, Window(row * self.stride, col * self.stride, self.size, self.size))

    def tiles(self) -> Iterator[Tile]:
        """All tiles in row-major order."""
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield self.tile(row, col)

    def core(self, tile: Tile) -> Window:
        """The pixels a tile owns in center-crop mode (cores partition the scene).

        Tile k owns ``[k*stride + overlap/2, (k+1)*stride + overlap/2)`` along each axis; the
        first tile owns from 0 and the last to the scene edge.
        """
        half = self.overlap // 2

        def span(k: int, n: int, length: int) -> tuple[int, int]:
            start = 0 if k == 0 else k * self.stride + half
            stop = length if k == n - 1 else (k + 1) * self.stride + half
            return start, min(stop, length)

        r0, r1 = span(tile.row, self.n_rows, self.height)
        c0, c1 = span(tile.col, self.n_cols, self.width)
        return Window(r0, c0, r1 - r0, c1 - c0)


@dataclass(frozen=True, slots=True)
class Block:
    """A rectangle of whole tiles: the unit of parallel work.

    ``window`` is the output it finishes; ``extent`` is what its tiles cover inside the scene
    (its window plus at most ``overlap`` pixels spilling into the next blocks).
    """

    row: int
    col: int
    tile_rows: range
    tile_cols: range
    window: Window
    extent: Window

    @property
    def n_tiles(self) -> int:
        return len(self.tile_rows) * len(self.tile_cols)


@dataclass(frozen=True, slots=True)
class BlockGrid:
    """Blocks of ``tiles_per_block`` x ``tiles_per_block`` tiles over a :class:`TileGrid`."""

    tiles: TileGrid
    tiles_per_block: int

    @classmethod
    def build(cls, tiles: TileGrid, *, block_size: int) -> "BlockGrid":
        """Blocks of about ``block_size`` pixels, rounded to whole tile strides (>= 1)."""
        if block_size <= 0:
            raise ConfigError(f"block size {block_size} must be a positive number of pixels")
        return cls(tiles, max(1, round(block_size / tiles.stride)))

    @classmethod
    def regular(cls, *, height: int, width: int, block_size: int) -> "BlockGrid":
        """Square blocks of exactly ``block_size`` pixels (edge blocks smaller), for work
        without a model's tiles (vectorizing a class raster): tiles of that size, no
        overlap, one tile per block."""
        if int(block_size) < 1:
            raise ConfigError(f"--block-size {block_size}: expected a positive pixel count")
        if height <= 0 or width <= 0:
            raise ConfigError(f"raster is empty ({height} x {width} pixels)")
        size = int(block_size)
        return cls(TileGrid(height, width, size, 0), 1)

    @property
    def step(self) -> int:
        """Pixels between the starts of neighbouring blocks; every block but the last of a
        row or column is this many pixels wide, so internal seams lie at its multiples."""
        return self.tiles_per_block * self.tiles.stride

    @property
    def seam_extent(self) -> tuple[int, int]:
        """(rows, cols) one past the last internal seam line: seams lie at ``k * step`` for
        ``0 < k * step < extent`` along each axis (the last block may be wider than
        ``step``, so its far edge, the scene's, is no seam)."""
        return (self.n_rows - 1) * self.step + 1, (self.n_cols - 1) * self.step + 1

    def index_of(self, window: Window) -> tuple[int, int]:
        """(block row, block col) of the block whose window starts where ``window`` does."""
        return window.row // self.step, window.col // self.step

    @property
    def n_rows(self) -> int:
        return math.ceil(self.tiles.n_rows / self.tiles_per_block)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.tiles.n_cols / self.tiles_per_block)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def _span(self, k: int, n_blocks: int, n_tiles: int,
              length: int) -> tuple[range, int, int, int]:
        m, g = self.tiles_per_block, self.tiles
        tiles = range(k * m, min((k + 1) * m, n_tiles))
        start = k * m * g.stride
        stop = length if k == n_blocks - 1 else (k + 1) * m * g.stride
        extent_stop = min(tiles[-1] * g.stride + g.size, length)
        return tiles, start, stop, extent_stop

    def block(self, row: int, col: int) -> Block:
        """Block ``(row, col)``."""
        g = self.tiles
        trows, r0, r1, re = self._span(row, self.n_rows, g.n_rows, g.height)
        tcols, c0, c1, ce = self._span(col, self.n_cols, g.n_cols, g.width)
        return Block(row, col, trows, tcols, Window(r0, c0, r1 - r0, c1 - c0),
                     Window(r0, c0, re - r0, ce - c0))

    def blocks(self) -> Iterator[Block]:
        """All blocks in row-major order."""
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield self.block(row, col)

    def region(self, block: Block) -> Window:
        """What a block reads: the union of its tiles' read windows (may pass the edge)."""
        g = self.tiles
        first = g.tile(block.tile_rows[0], block.tile_cols[0]).read
        return Window(first.row, first.col,
                      (len(block.tile_rows) - 1) * g.stride + g.size,
                      (len(block.tile_cols) - 1) * g.stride + g.size)

    def block_tiles(self, block: Block) -> Iterator[Tile]:
        """The tiles of a block in row-major order."""
        for row in block.tile_rows:
            for col in block.tile_cols:
                yield self.tiles.tile(row, col)

    def sources(self, block: Block) -> list[tuple[int, int]]:
        """The blocks whose extents spill into ``block``'s window (the inverse of
        :meth:`spills`): some of the blocks above, to the left and above-left."""
        out = []
        for d_row, d_col in ((-1, -1), (-1, 0), (0, -1)):
            r, c = block.row + d_row, block.col + d_col
            if r < 0 or c < 0:
                continue
            if any(key == (block.row, block.col) for key, _ in self.spills(self.block(r, c))):
                out.append((r, c))
        return out

    def spills(self, block: Block) -> list[tuple[tuple[int, int], Window]]:
        """Where a block's extent reaches into later blocks: ((block row, col), window).

        Only the next block down, right and down-right can receive a spill, because the
        overlap is at most one stride.
        """
        out: list[tuple[tuple[int, int], Window]] = []
        for d_row in (0, 1):
            for d_col in (0, 1):
                if (d_row, d_col) == (0, 0):
                    continue
                r, c = block.row + d_row, block.col + d_col
                if r >= self.n_rows or c >= self.n_cols:
                    continue
                part = intersect(block.extent, self.block(r, c).window)
                if part is not None:
                    out.append(((r, c), part))
        return out


def split_blocks(*, height: int, width: int, block_size: int, fraction: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A (height, width) bool mask choosing about ``fraction`` of the square blocks of
    ``block_size`` pixels (at least one, and at least one left out, when there are two
    or more blocks): the validation side of a train/validation split by blocks."""
    rows = -(-height // block_size)
    cols = -(-width // block_size)
    n = rows * cols
    n_val = min(max(1, round(n * fraction)), n - 1) if n > 1 else 0
    chosen = np.zeros(n, bool)
    chosen[rng.permutation(n)[:n_val]] = True
    mask = np.kron(chosen.reshape(rows, cols), np.ones((block_size, block_size), bool))
    return mask[:height, :width]
