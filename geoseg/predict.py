"""What prediction decides before reading a pixel (:class:`Plan`), and the model step of one
block: read it with its halo, run its tiles, accumulate.

A block is read once with its halo (boundless), cut into the tiles of the global grid,
normalized and batched through the network; each tile's probabilities are added into the
block's integer accumulator (see ``stitch``). Tiles that hold no valid pixel never reach the
model. What happens to a computed block next (spills, finish, write, polygons) is the scene's
flow (:mod:`geoseg.flow`), run by the local runner there or by the Dask runner in
``pipelines/``. Peak memory is set by block, tile and batch size, not by the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import PredictOptions
from .scene import Scene, read_window, select_bands
from .stitch import accumulate, new_accumulator, tile_weights
from .tiling import Block, BlockGrid, TileGrid
from .writers import output_tags

if TYPE_CHECKING:
    from .model.bundle import ModelBundle
    from .model.meta import BundleMeta


@dataclass(frozen=True)
class Plan:
    """Everything about a scene's prediction that is decided before any pixel is read."""

    scene: Scene
    bands: tuple[int, ...]
    tiles: TileGrid
    blocks: BlockGrid
    stitch: str
    n_classes: int
    tta: str = "none"

    def tags(self, meta: BundleMeta, model_sha256: str) -> dict:
        """The output rasters' tags: the model and the options that shaped the pixels (one
        place for the in-process and the Dask path, whose files must be identical)."""
        return output_tags(meta, model_sha256, GEOSEG_STITCH=self.stitch,
                           GEOSEG_TILE_SIZE=self.tiles.size, GEOSEG_OVERLAP=self.tiles.overlap,
                           GEOSEG_TTA=self.tta)


def make_plan(scene: Scene, meta: BundleMeta, options: PredictOptions) -> Plan:
    """Tile and block grids for ``scene`` with ``options`` (tile size from the model's
    metadata unless overridden); checks the bands against the model."""
    bands = select_bands(scene, options.bands, expected=meta.in_channels, names=meta.bands)
    size = options.tile_size or meta.tile_size
    overlap = meta.overlap if options.overlap is None else options.overlap
    tiles = TileGrid.build(height=scene.grid.height, width=scene.grid.width, size=size,
                           overlap=overlap, multiple=meta.output_stride)
    blocks = BlockGrid.build(tiles, block_size=options.block_size)
    return Plan(scene, bands, tiles, blocks, options.stitch, len(meta.classes),
                options.tta or meta.tta)


def read_block(ds: Any, plan: Plan, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """The block's pixels and validity over :meth:`BlockGrid.region` (boundless)."""
    return read_window(ds, plan.blocks.region(block), bands=plan.bands)


@dataclass
class PredictedBlock:
    """A computed block: its accumulator over ``block.extent``, the input mask over its
    window, and how many tiles went through the model."""

    block: Block
    acc: np.ndarray
    valid: np.ndarray
    tiles_run: int


def predict_block(bundle: ModelBundle, plan: Plan, block: Block, pixels: np.ndarray,
                  valid: np.ndarray, *, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> PredictedBlock:
    """Run every tile of ``block`` that holds valid pixels through the model once.

    ``pixels``/``valid`` cover ``plan.blocks.region(block)``. The next batch is normalized in a
    background thread while the network computes the current one.
    """
    import torch

    from .model.inference import forward_probabilities, normalize

    g, region = plan.tiles, plan.blocks.region(block)
    acc = new_accumulator(block.extent, plan.n_classes)
    todo = []
    for tile in plan.blocks.block_tiles(block):
        rows, cols = tile.read.slices(within=region)
        if valid[rows, cols].any():
            todo.append((tile, rows, cols))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    def prepare(batch: list) -> Any:
        # channels-last buffer: the layout the network runs in, so no copy before forward
        x = np.empty((len(batch), g.size, g.size, len(plan.bands)), np.float32)
        for i, (_tile, rows, cols) in enumerate(batch):
            normalize(pixels[:, rows, cols], valid[rows, cols], bundle.meta,
                      out=x[i].transpose(2, 0, 1))
        batch_tensor = torch.from_numpy(x).permute(0, 3, 1, 2)
        # page-locked memory lets the copy to the GPU run asynchronously (non_blocking)
        return batch_tensor.pin_memory() if bundle.device.startswith("cuda") else batch_tensor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            assert pending is not None  # set whenever there is a batch
            x = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(prepare, batches[i + 1])
            probs = forward_probabilities(bundle, x, tta=plan.tta).numpy()
            for (tile, rows, cols), p in zip(batch, probs, strict=True):
                weights = tile_weights(plan.stitch, g, tile) * valid[rows, cols]
                accumulate(acc, block.extent, tile, p, weights)
            if progress is not None:
                progress(len(batch))
    w_rows, w_cols = block.window.slices(within=region)
    return PredictedBlock(block, acc, valid[w_rows, w_cols], len(todo))
