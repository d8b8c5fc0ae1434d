"""Prediction of one block end to end, and of a whole scene in-process.

A block is read once with its halo (boundless), cut into the tiles of the global grid,
normalized and batched through the network; each tile's probabilities are added into the
block's integer accumulator (see ``stitch``). Tiles that hold no valid pixel never reach the
model. The scene loop streams blocks in row-major order: a block is finished as soon as it
has run, because only the blocks above and to its left spill into it, and the spill strips
it sends on are the only state kept between blocks. Peak memory is set by block, tile and
batch size, not by the scene.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from .classes import NODATA_CLASS
from .config import PredictOptions
from .grid import Window
from .scene import Scene, open_scene, read_window, select_bands
from .stitch import accumulate, finish, new_accumulator, spills, tile_weights
from .tiling import Block, BlockGrid, TileGrid
from .writers import class_output, output_tags, prepare_output, probability_output


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

    def tags(self, meta, model_sha256: str) -> dict:
        """The output rasters' tags: the model and the options that shaped the pixels (one
        place for the in-process and the Dask path, whose files must be identical)."""
        return output_tags(meta, model_sha256, GEOSEG_STITCH=self.stitch,
                           GEOSEG_TILE_SIZE=self.tiles.size, GEOSEG_OVERLAP=self.tiles.overlap,
                           GEOSEG_TTA=self.tta)

    def region(self, block: Block) -> Window:
        """What a block reads: the union of its tiles' read windows (may pass the edge)."""
        g = self.tiles
        first = g.tile(block.tile_rows[0], block.tile_cols[0]).read
        return Window(first.row, first.col,
                      (len(block.tile_rows) - 1) * g.stride + g.size,
                      (len(block.tile_cols) - 1) * g.stride + g.size)


def make_plan(scene: Scene, meta, options: PredictOptions) -> Plan:
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


def read_block(ds, plan: Plan, block: Block):
    """The block's pixels and validity over :meth:`Plan.region` (boundless)."""
    return read_window(ds, plan.region(block), bands=plan.bands)


@dataclass
class BlockResult:
    """A computed block: its accumulator over ``block.extent``, the input mask over its
    window, and how many tiles went through the model."""

    block: Block
    acc: np.ndarray
    valid: np.ndarray
    tiles_run: int


def predict_block(bundle, plan: Plan, block: Block, pixels: np.ndarray, valid: np.ndarray,
                  *, batch_size: int, progress=None) -> BlockResult:
    """Run every tile of ``block`` that holds valid pixels through the model once.

    ``pixels``/``valid`` cover ``plan.region(block)``. The next batch is normalized in a
    background thread while the network computes the current one.
    """
    import torch

    from .model import forward_probabilities, normalize

    g, region = plan.tiles, plan.region(block)
    acc = new_accumulator(block.extent, plan.n_classes)
    todo = []
    for tile in plan.blocks.block_tiles(block):
        rows, cols = tile.read.slices(within=region)
        if valid[rows, cols].any():
            todo.append((tile, rows, cols))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    def prepare(batch):
        # channels-last buffer: the layout the network runs in, so no copy before forward
        x = np.empty((len(batch), g.size, g.size, len(plan.bands)), np.float32)
        for i, (tile, rows, cols) in enumerate(batch):
            normalize(pixels[:, rows, cols], valid[rows, cols], bundle.meta,
                      out=x[i].transpose(2, 0, 1))
        batch_tensor = torch.from_numpy(x).permute(0, 3, 1, 2)
        # page-locked memory lets the copy to the GPU run asynchronously (non_blocking)
        return batch_tensor.pin_memory() if bundle.device.startswith("cuda") else batch_tensor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            x = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(prepare, batches[i + 1])
            probs = forward_probabilities(bundle, x, tta=plan.tta).numpy()
            for (tile, rows, cols), p in zip(batch, probs):
                weights = tile_weights(plan.stitch, g, tile) * valid[rows, cols]
                accumulate(acc, block.extent, tile, p, weights)
            if progress is not None:
                progress(len(batch))
    w_rows, w_cols = block.window.slices(within=region)
    return BlockResult(block, acc, valid[w_rows, w_cols], len(todo))


def scene_dir(out_dir, scene_path) -> Path:
    """``OUT/<scene stem>/``."""
    return Path(out_dir) / Path(scene_path).stem


def predict_scene(scene_path, out_dir, *, model, options: PredictOptions = PredictOptions(),
                  progress=None) -> dict:
    """Predict one scene into ``OUT/<stem>/classes.tif`` (+ ``probabilities.tif``).

    ``model`` is a bundle path or a loaded ``ModelBundle``. Returns a summary (tiles, blocks,
    class pixel counts, seconds). Raises ``GeosegError`` subclasses for bad input, before
    anything is written under a final name.
    """
    start = time.perf_counter()
    with gdal_env():
        return _predict_scene(scene_path, out_dir, model=model, options=options,
                              progress=progress, start=start)


GDAL_CACHE_MB = 64
"""GDAL's block cache during prediction (GDAL's default is 5% of RAM, which would let
memory grow with the scene); an explicit GDAL_CACHEMAX in the environment wins."""


def gdal_env() -> rasterio.Env:
    """The GDAL settings every process that predicts runs under (bounded block cache)."""
    return rasterio.Env(**({} if "GDAL_CACHEMAX" in os.environ
                           else {"GDAL_CACHEMAX": GDAL_CACHE_MB}))


def _predict_scene(scene_path, out_dir, *, model, options, progress, start) -> dict:
    from .model import ModelBundle, load_bundle, resolve_device

    scene = open_scene(scene_path, allow_no_crs=options.allow_no_crs)
    if isinstance(model, ModelBundle):
        bundle = model
    else:
        bundle = load_bundle(model, device=resolve_device(options.device))
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    plan = make_plan(scene, bundle.meta, options)
    folder = scene_dir(out_dir, scene_path)
    classes_path = prepare_output(folder / "classes.tif", overwrite=options.overwrite)
    gpkg = None
    if options.vectorize:
        gpkg = prepare_output(folder / "polygons.gpkg", overwrite=options.overwrite)
    probs_path = None
    if options.probabilities:
        probs_path = prepare_output(folder / "probabilities.tif", overwrite=options.overwrite)
    tags = plan.tags(bundle.meta, bundle.sha256)
    counts = np.zeros(256, np.int64)
    tiles_run = 0
    with class_output(classes_path, scene.grid, bundle.meta, tags) as classes_out, \
            (probability_output(probs_path, scene.grid, bundle.meta, tags) if probs_path
             else nullcontext()) as probs_out, \
            rasterio.open(scene.path) as ds, ThreadPoolExecutor(max_workers=1) as reader:
        blocks = list(plan.blocks.blocks())
        incoming: dict = {}
        next_read = reader.submit(read_block, ds, plan, blocks[0])
        for i, block in enumerate(blocks):
            pixels, valid = next_read.result()
            if i + 1 < len(blocks):
                next_read = reader.submit(read_block, ds, plan, blocks[i + 1])
            result = predict_block(bundle, plan, block, pixels, valid,
                                   batch_size=options.batch_size, progress=progress)
            del pixels, valid
            tiles_run += result.tiles_run
            for key, strip in spills(result.acc, plan.blocks, block).items():
                incoming.setdefault(key, []).append(strip)
            classes, probs = finish(result.acc, block, incoming.pop((block.row, block.col), []),
                                    result.valid, nodata=NODATA_CLASS,
                                    probabilities=probs_out is not None)
            counts += np.bincount(classes.ravel(), minlength=256)
            classes_out.write(classes, block.window)
            if probs_out is not None:
                probs_out.write(probs, block.window)
        classes_out.publish()
        if probs_out is not None:
            probs_out.publish()
    outputs = {"classes": str(classes_path)}
    if probs_path:
        outputs["probabilities"] = str(probs_path)
    if options.vectorize:
        from .vectorize import vectorize_raster

        vectorize_raster(classes_path, gpkg, probabilities_path=probs_path,
                         overwrite=options.overwrite, allow_no_crs=options.allow_no_crs,
                         block_size=options.block_size)
        outputs["polygons"] = str(gpkg)
    names = {c.id: c.name for c in bundle.meta.classes}
    return {
        "scene": str(scene_path), "outputs": outputs,
        "height": scene.grid.height, "width": scene.grid.width,
        "tiles_in_grid": len(plan.tiles), "tiles_run": tiles_run,
        "blocks": len(plan.blocks), "tile_size": plan.tiles.size,
        "overlap": plan.tiles.overlap, "stitch": plan.stitch, "tta": plan.tta,
        "class_pixels": {names[c]: int(counts[c]) for c in names},
        "nodata_pixels": int(counts[NODATA_CLASS]),
        "model_sha256": bundle.sha256, "seconds": round(time.perf_counter() - start, 3),
    }
