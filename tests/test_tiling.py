"""Grid invariants: tile cores partition the scene, blocks partition it, transforms align."""

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings, strategies as st

from geoseg.errors import ConfigError
from geoseg.grid import PixelGrid, Window
from geoseg.tiling import BlockGrid, TileGrid, check_tiling

sizes = st.integers(1, 700)
tilings = st.sampled_from([(32, 0), (64, 0), (64, 32), (96, 32), (128, 64), (256, 64)])


@settings(max_examples=150, deadline=None)
@given(height=sizes, width=sizes, tiling=tilings)
def test_tile_cores_partition_the_scene(height, width, tiling):
    size, overlap = tiling
    grid = TileGrid.build(height=height, width=width, size=size, overlap=overlap)
    owner = np.zeros((height, width), np.int32)
    for tile in grid.tiles():
        core = grid.core(tile)
        assert core.height > 0 and core.width > 0
        # the core lies inside what the tile reads
        assert tile.read.row <= core.row and core.row_stop <= tile.read.row_stop
        assert tile.read.col <= core.col and core.col_stop <= tile.read.col_stop
        rows, cols = core.slices()
        owner[rows, cols] += 1
    assert (owner == 1).all()


@settings(max_examples=150, deadline=None)
@given(height=sizes, width=sizes, tiling=tilings, block=st.integers(1, 900))
def test_blocks_partition_the_scene_and_own_whole_tiles(height, width, tiling, block):
    size, overlap = tiling
    tiles = TileGrid.build(height=height, width=width, size=size, overlap=overlap)
    blocks = BlockGrid.build(tiles, block_size=block)
    covered = np.zeros((height, width), np.int32)
    seen = set()
    for b in blocks.blocks():
        rows, cols = b.window.slices()
        covered[rows, cols] += 1
        for t in blocks.block_tiles(b):
            assert (t.row, t.col) not in seen
            seen.add((t.row, t.col))
        # a block's tiles cover its whole window
        assert b.extent.row == b.window.row and b.extent.col == b.window.col
        assert b.extent.row_stop >= b.window.row_stop
        assert b.extent.col_stop >= b.window.col_stop
        # spills land only in the next blocks and are at most `overlap` wide
        for (r, c), w in blocks.spills(b):
            assert (r - b.row, c - b.col) in {(0, 1), (1, 0), (1, 1)}
            if r > b.row:
                assert w.height <= overlap
            if c > b.col:
                assert w.width <= overlap
    assert (covered == 1).all()
    assert len(seen) == len(tiles)


@settings(max_examples=100, deadline=None)
@given(row=st.integers(0, 50), col=st.integers(0, 50),
       res_x=st.floats(0.1, 100), res_y=st.floats(0.1, 100),
       x0=st.floats(-1e6, 1e6), y0=st.floats(-1e7, 1e7))
def test_tile_transform_maps_pixel_zero_to_its_corner(row, col, res_x, res_y, x0, y0):
    grid = PixelGrid(10_000, 10_000, Affine(res_x, 0, x0, 0, -res_y, y0), None)
    tiles = TileGrid.build(height=10_000, width=10_000, size=256, overlap=64)
    tile = tiles.tile(row, col)
    x, y = grid.window_transform(tile.read) @ (0, 0)
    assert x == pytest.approx(x0 + tile.read.col * res_x, rel=1e-12, abs=1e-6)
    assert y == pytest.approx(y0 - tile.read.row * res_y, rel=1e-12, abs=1e-6)
    # the same pixel through the scene transform
    assert (x, y) == pytest.approx(grid.transform @ (tile.read.col, tile.read.row))


def test_tile_count_matches_the_field_for_the_benchmark_grid():
    tiles = TileGrid.build(height=4096, width=4096, size=256, overlap=64)
    assert len(tiles) == 441


def test_scene_smaller_than_a_tile_is_one_tile():
    tiles = TileGrid.build(height=10, width=7, size=256, overlap=64)
    assert len(tiles) == 1
    assert tiles.core(tiles.tile(0, 0)) == Window(0, 0, 10, 7)


@pytest.mark.parametrize("size, overlap, hint", [
    (250, 64, "224 or 256"), (256, 50, "overlap 32 or 64"), (256, 160, "at most 128"),
    (0, 0, "32"),
])
def test_misaligned_tiling_is_refused_with_the_nearest_valid_values(size, overlap, hint):
    with pytest.raises(ConfigError, match=hint):
        check_tiling(size=size, overlap=overlap)
