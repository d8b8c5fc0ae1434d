"""Weight windows: partition of unity for blend, exact ownership for center."""

import numpy as np
import pytest

from geoseg.errors import ConfigError
from geoseg.prediction.stitch import FIXED_POINT, WEIGHT_WINDOWS, check_stitch, tile_weights
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


def test_finish_takes_the_lowest_class_on_ties_and_rounds_probabilities_exactly():
    import torch

    from geoseg.grid import Window
    from geoseg.prediction.stitch import finish
    from geoseg.tiling import BlockGrid

    grid = TileGrid.build(height=64, width=64, size=64, overlap=0)
    block = BlockGrid.build(grid, block_size=64).block(0, 0)
    rng = np.random.default_rng(0)
    acc = rng.integers(0, 4, (3, 64, 64)).astype(np.int32) * (FIXED_POINT // 4)  # many ties
    valid = np.ones((64, 64), bool)
    valid[0, :5] = False
    strip = np.full((3, 2, 64), FIXED_POINT // 8, np.int32)
    classes, probs = finish(torch.from_numpy(acc), block, [(Window(10, 0, 2, 64), strip)],
                            valid, nodata=255, probabilities=True)
    total = acc.astype(np.int64)
    total[:, 10:12] += strip
    expected = np.argmax(total, axis=0).astype(np.uint8)  # numpy: first maximum
    expected[~valid] = 255
    np.testing.assert_array_equal(classes, expected)
    # round half up of 255 * sum / FIXED_POINT, in integers: (k/4 + 1/8) * 255 -> exact
    exact = np.floor(total * 255 / FIXED_POINT + 0.5).clip(0, 255).astype(np.uint8)
    exact[:, ~valid] = 0
    np.testing.assert_array_equal(probs, exact)


def test_a_batch_adds_the_same_integers_as_tile_by_tile_and_drops_what_is_outside():
    import torch

    from geoseg.grid import Window
    from geoseg.prediction.stitch import add_tiles, device_weights, new_accumulator

    grid = TileGrid.build(height=150, width=120, size=64, overlap=32)
    tiles = list(grid.tiles())
    extent = Window(0, 0, 150, 120)
    logits = torch.randn((len(tiles), 2, 64, 64), generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, dim=1)
    weights = torch.stack([device_weights("blend", grid, t, "cpu") for t in tiles])
    batch = new_accumulator(extent, 2)
    add_tiles(batch, extent, tiles, probs, weights)
    one_by_one = new_accumulator(extent, 2)
    for i in reversed(range(len(tiles))):  # any order: integer sums
        add_tiles(one_by_one, extent, tiles[i:i + 1], probs[i:i + 1], weights[i:i + 1])
    assert torch.equal(batch, one_by_one)
    # weights sum to FIXED_POINT, probabilities to 1: every pixel sums to ~FIXED_POINT
    assert (batch.sum(0) - FIXED_POINT).abs().max() <= len(tiles) * 2


def test_numpy_and_torch_stitch_the_same_integers_classes_and_probabilities():
    """One set of functions over both array kinds (geoseg.arrays): the same probabilities
    give the same accumulator, spill strips, classes and probabilities bit for bit."""
    import array_api_compat.numpy as np_xp
    import array_api_compat.torch as torch_xp
    import torch

    from geoseg.prediction.stitch import (add_tiles, device_weights, finish, new_accumulator,
                                          spills)
    from geoseg.tiling import BlockGrid

    grid = TileGrid.build(height=150, width=120, size=64, overlap=32)
    blocks = BlockGrid.build(grid, block_size=64)
    block = blocks.block(0, 0)
    tiles = list(blocks.block_tiles(block))
    probs = torch.softmax(torch.randn((len(tiles), 3, 64, 64),
                                      generator=torch.Generator().manual_seed(1)), dim=1)
    valid = np.ones((block.window.height, block.window.width), bool)
    valid[:5, :7] = False
    out = {}
    for name, xp, p in (("numpy", np_xp, probs.numpy()), ("torch", torch_xp, probs)):
        weights = xp.stack([device_weights("center", grid, t, "cpu", xp) for t in tiles])
        acc = new_accumulator(block.extent, 3, "cpu", xp)
        add_tiles(acc, block.extent, tiles, p, weights)
        strips = spills(acc, blocks, block)
        out[name] = (np.asarray(acc), strips, *finish(acc, block, [], valid, nodata=255,
                                                      probabilities=True))
    (acc_n, strips_n, classes_n, probs_n), (acc_t, strips_t, classes_t, probs_t) = (
        out["numpy"], out["torch"])
    assert isinstance(classes_n, np.ndarray) and isinstance(classes_t, np.ndarray)
    np.testing.assert_array_equal(acc_n, acc_t)
    assert strips_n.keys() == strips_t.keys() and strips_n
    for key in strips_n:
        np.testing.assert_array_equal(strips_n[key][1], strips_t[key][1])
    np.testing.assert_array_equal(classes_n, classes_t)
    np.testing.assert_array_equal(probs_n, probs_t)
    assert (classes_n[:5, :7] == 255).all() and (probs_n[:, :5, :7] == 0).all()
