"""What prediction decides before reading a pixel (:class:`Plan`), and the model step of one
block: read it with its halo, run its tiles, accumulate.

A block is read once with its halo (boundless) and sent to the model's device in its own
pixel type; there it is cut into the tiles of the global grid, normalized, batched through
the network, and each batch's probabilities are weighted into the block's integer
accumulator (see ``stitch``), which stays on the device. Tiles that hold no valid pixel
never reach the model. What happens to a computed block next (spills, finish, write,
polygons) is the scene's flow (:mod:`geoseg.prediction.flow`), run by the local runner there
or by the Dask runner in ``pipelines/``. Peak memory is set by block, tile and batch size,
not by the scene.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelOutputError
from ..inputs.scene import Scene, read_window, select_bands
from ..outputs.rasters import output_tags
from ..tiling import Block, BlockGrid, TileGrid, check_tiling
from .options import PredictOptions

if TYPE_CHECKING:
    import torch

    from ..model.bundle import ModelBundle
    from ..model.meta import BundleMeta


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
    precision: str = "float32"
    compile: bool = False
    rescale: tuple[tuple[float, ...], ...] | None = None
    """Per band (gain, offset, low, high) applied to raw values before normalization
    (``--stretch``/``--input-range``, see :mod:`geoseg.inputs.fit`); None: as they are."""
    rescaled_from: tuple[tuple[float, float], ...] | None = None
    model_tile: int | None = None
    """The network's tile side when the scene is predicted at the model's GSD: each tile of
    ``tiles`` (scene pixels) is resampled to it and its probabilities back (see
    :mod:`geoseg.inputs.fit`); None: tiles go to the network as they are."""

    def tags(self, meta: BundleMeta, model_sha256: str) -> dict:
        """The output rasters' tags: the model and the options that shaped the pixels (one
        place for the in-process and the Dask path, whose files must be identical)."""
        return output_tags(meta, model_sha256, GEOSEG_STITCH=self.stitch,
                           GEOSEG_TILE_SIZE=self.tiles.size, GEOSEG_OVERLAP=self.tiles.overlap,
                           GEOSEG_TTA=self.tta, GEOSEG_PRECISION=self.precision,
                           **({"GEOSEG_COMPILE": "inductor"} if self.compile else {}),
                           **({"GEOSEG_RESCALED_FROM": json.dumps(self.rescaled_from)}
                              if self.rescaled_from else {}),
                           **({"GEOSEG_MODEL_TILE": self.model_tile}
                              if self.model_tile else {}))


def make_plan(scene: Scene, meta: BundleMeta, options: PredictOptions) -> Plan:
    """Tile and block grids for ``scene`` with ``options`` (tile size from the model's
    metadata unless overridden); checks the bands, the pixel size and the radiometry
    against the model (:mod:`geoseg.inputs.fit`)."""
    from ..inputs.fit import fit_radiometry, model_zoom, rescale_terms
    from ..model.radiometry import expected_range

    bands = select_bands(scene, options.bands, expected=meta.in_channels, names=meta.bands)
    zoom = model_zoom(scene, meta, resample=options.resample)
    source = fit_radiometry(scene, bands, meta, stretch=options.stretch,
                            input_range=options.input_range)
    expected = expected_range(meta)
    rescale = rescale_terms(source, expected) if source and expected else None
    size = options.tile_size or meta.tile_size
    overlap = meta.overlap if options.overlap is None else options.overlap
    check_tiling(size=size, overlap=overlap, multiple=meta.output_stride)
    model_tile = None
    if zoom != 1.0:  # the same grid in scene pixels: tiles of size * zoom (see geoseg.inputs.fit)
        model_tile, scene_size = size, max(2, round(size * zoom))
        size, overlap = scene_size, min(round(overlap * zoom), scene_size // 2)
    tiles = TileGrid.build(height=scene.grid.height, width=scene.grid.width, size=size,
                           overlap=overlap, multiple=1 if model_tile else meta.output_stride)
    blocks = BlockGrid.build(tiles, block_size=options.block_size)
    if "auto" in (options.device, options.precision):
        options = options.resolved()
    return Plan(scene, bands, tiles, blocks, options.stitch, len(meta.classes),
                options.tta or meta.tta, options.precision, options.compile, rescale,
                source, model_tile)


def read_block(ds: Any, plan: Plan, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """The block's pixels and validity over :meth:`BlockGrid.region` (boundless)."""
    return read_window(ds, plan.blocks.region(block), bands=plan.bands)


@dataclass
class PredictedBlock:
    """A computed block: its int32 accumulator over ``block.extent`` (a tensor on the model's
    device, or the host after :meth:`on_host`), the input mask over its window, and how many
    tiles went through the model."""

    block: Block
    acc: torch.Tensor
    valid: np.ndarray
    tiles_run: int
    started: float = 0.0
    """Wall-clock time (``time.time()``) the block's prediction began."""

    def on_host(self) -> PredictedBlock:
        """The same block with its accumulator in host memory (a Dask task's result: it
        may travel to another worker, and the device's memory is freed at once)."""
        self.acc = self.acc.cpu()
        return self


def predict_block(bundle: ModelBundle, plan: Plan, block: Block, pixels: np.ndarray,
                  valid: np.ndarray, *, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> PredictedBlock:
    """Run every tile of ``block`` that holds valid pixels through the model once.

    ``pixels``/``valid`` cover ``plan.blocks.region(block)``; they go to the device once, and
    every later step of the block runs there a batch at a time.
    """
    import torch

    from ..model.inference import forward_probabilities, normalize_region, resize_tiles, to_device
    from .stitch import add_tiles, device_weights, new_accumulator

    started = time.time()
    g, region, device = plan.tiles, plan.blocks.region(block), bundle.device
    acc = new_accumulator(block.extent, plan.n_classes, device)
    todo = []
    for tile in plan.blocks.block_tiles(block):
        rows, cols = tile.read.slices(within=region)
        if valid[rows, cols].any():
            todo.append((tile, rows, cols))
    if todo:
        px, ok = to_device(pixels, valid, device)
        inputs = normalize_region(px, ok, bundle.meta, rescale=plan.rescale)  # (H, W, C)
        all_valid = bool(valid.all())
        del px
        finite = torch.ones((), dtype=torch.bool, device=device)  # checked once a block
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        tiles = [tile for tile, _, _ in batch]
        mask = None if all_valid else torch.stack([ok[rows, cols] for _, rows, cols in batch])
        if plan.model_tile:  # each tile resampled to the network's size on its own
            x = torch.cat([resize_tiles(inputs[rows, cols].permute(2, 0, 1)[None],
                                        plan.model_tile) for _, rows, cols in batch])
        else:  # (N, H, W, C) viewed as (N, C, H, W): channels-last, no copy before forward
            x = torch.stack([inputs[rows, cols] for _, rows, cols in batch]).permute(0, 3, 1, 2)
        probs = forward_probabilities(bundle, x, tta=plan.tta, precision=plan.precision)
        finite &= torch.isfinite(probs.sum())  # one pass: NaN or inf anywhere shows
        weights = torch.stack([device_weights(plan.stitch, g, t, device) for t in tiles])
        if mask is not None:
            weights = weights * mask
        if plan.model_tile:  # back on the scene's pixels a tile at a time: bounded memory
            for i, tile in enumerate(tiles):
                add_tiles(acc, block.extent, [tile], resize_tiles(probs[i:i + 1], g.size),
                          weights[i:i + 1])
        else:
            add_tiles(acc, block.extent, tiles, probs, weights)
        if progress is not None:
            progress(len(batch))
    if todo and not bool(finite):
        raise ModelOutputError(
            f"{plan.scene.path}: the network's output is not finite (NaN or infinity) in the "
            f"block at row {block.window.row}, col {block.window.col} under {plan.precision}"
            f"{'; float16 overflows in some networks' if plan.precision == 'float16' else ''}"
            ": predict with --precision float32 (or bfloat16 on a GPU that has it)")
    w_rows, w_cols = block.window.slices(within=region)
    return PredictedBlock(block, acc, valid[w_rows, w_cols], len(todo), started)
