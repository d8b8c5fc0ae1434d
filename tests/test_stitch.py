"""Weight windows: partition of unity for blend, exact ownership for center."""

import numpy as np
import pytest

from geoseg.errors import ConfigError
from geoseg.stitch import FIXED_POINT, WEIGHT_WINDOWS, check_stitch, tile_weights
from geoseg.tiling import TileGrid


@pytest.mark.parametrize("name", sorted(WEIGHT_WINDOWS))
@pytest.mark.parametrize("height, width, size, overlap",
                         [(300, 200, 64, 32), (1000, 777, 256, 64), (64, 64, 64, 0),
                          (10, 500, 128, 64)])
def test_weights_sum_to_one_at_every_pixel(name, height, width, size, overlap):
    grid = TileGrid.build(height=height, width=width, size=size, overlap=overlap)
    total = np.zeros((grid.n_rows * grid.stride + size, grid.n_cols * grid.stride + size))
    for tile in grid.tiles():
        rows, cols = tile.read.slices()
        total[rows, cols] += tile_weights(name, grid, tile) / FIXED_POINT
    np.testing.assert_allclose(total[:height, :width], 1.0, atol=1e-6)


def test_blend_window_is_near_zero_at_inner_tile_edges_and_one_in_the_middle():
    grid = TileGrid.build(height=1000, width=1000, size=256, overlap=64)
    w = tile_weights("blend", grid, grid.tile(1, 1)) / FIXED_POINT
    assert w[0, 128] < 1e-3 and w[128, 255] < 1e-3
    assert w[64:192, 64:192].min() == pytest.approx(1.0)


def test_center_window_is_the_tile_core():
    grid = TileGrid.build(height=1000, width=1000, size=256, overlap=64)
    tile = grid.tile(1, 2)
    w = tile_weights("center", grid, tile) > 0
    core = grid.core(tile)
    rows, cols = core.slices(within=tile.read)
    expected = np.zeros_like(w)
    expected[rows, cols] = True
    assert (w == expected).all()


def test_unknown_stitch_mode_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: blend, center"):
        check_stitch("average")
