"""What prediction decides before reading a pixel (:class:`Plan`), and the model step of
blocks: read each with its halo, run its tiles, accumulate.

A block is read once with its halo (boundless) and sent to the model's device in its own
pixel type; there it is cut into the tiles of the global grid and normalized. Its arrays
are those of the runtime (:mod:`geoseg.arrays`): torch tensors on the model's device, or
numpy arrays in host memory for ONNX Runtime. Its tiles
join a queue that spans consecutive blocks (:class:`TileBatcher`): every forward pass of
a scene holds the same number of tiles (:func:`forward_size`, at most ``--batch-size``),
and each batch's probabilities are weighted into their blocks' integer accumulators (see
``stitch``), which stay on the device. Tiles that hold no valid pixel never reach the
model. What happens to a computed block next (spills, finish, write,
polygons) is the scene's flow (:mod:`geoseg.prediction.flow`), run by the local runner there
or by the Dask runner in ``pipelines/``. Peak memory is set by block, tile and batch size,
not by the scene.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..arrays import is_numpy_namespace, is_torch_array
from ..errors import ModelOutputError
from ..inputs.scene import Scene, read_window, select_bands
from ..outputs.rasters import output_tags
from ..tiling import Block, BlockGrid, Tile, TileGrid, check_tiling
from .options import PredictOptions

if TYPE_CHECKING:
    from ..inputs.fit import Sampler
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
    runtime: str = "torch"

    def tags(self, meta: BundleMeta, model_sha256: str) -> dict:
        """The output rasters' tags: the model and the options that shaped the pixels (one
        place for the in-process and the Dask path, whose files must be identical)."""
        return output_tags(meta, model_sha256, GEOSEG_STITCH=self.stitch,
                           GEOSEG_TILE_SIZE=self.tiles.size, GEOSEG_OVERLAP=self.tiles.overlap,
                           GEOSEG_TTA=self.tta, GEOSEG_PRECISION=self.precision,
                           GEOSEG_RUNTIME=self.runtime,
                           **({"GEOSEG_COMPILE": "inductor"} if self.compile else {}),
                           **({"GEOSEG_RESCALED_FROM": json.dumps(self.rescaled_from)}
                              if self.rescaled_from else {}),
                           **({"GEOSEG_MODEL_TILE": self.model_tile}
                              if self.model_tile else {}))


def make_plan(scene: Scene, meta: BundleMeta, options: PredictOptions, *,
              sample: Sampler | None = None) -> Plan:
    """Tile and block grids for ``scene`` with ``options`` (tile size from the model's
    metadata unless overridden); checks the bands, the pixel size and the radiometry
    against the model (:mod:`geoseg.inputs.fit`; ``sample``: how a scene that is not a
    file gives its decimated sample)."""
    from ..inputs.fit import fit_radiometry, model_zoom, rescale_terms
    from ..model.radiometry import expected_range

    bands = select_bands(scene, options.bands, expected=meta.in_channels, names=meta.bands)
    zoom = model_zoom(scene, meta, resample=options.resample)
    source = fit_radiometry(scene, bands, meta, stretch=options.stretch,
                            input_range=options.input_range, sample=sample)
    expected = expected_range(meta)
    rescale = rescale_terms(source, expected) if source and expected else None
    size = options.tile_size or meta.tile_size
    if meta.fixed_tile and size != meta.tile_size:
        from ..errors import ConfigError

        raise ConfigError(f"--tile-size {size}: the model's network takes tiles of "
                          f"{meta.tile_size} px only (a static input shape)")
    overlap = meta.overlap if options.overlap is None else options.overlap
    check_tiling(size=size, overlap=overlap, multiple=meta.output_stride)
    model_tile = None
    if zoom != 1.0:  # the same grid in scene pixels: tiles of size * zoom (see geoseg.inputs.fit)
        model_tile, scene_size = size, max(2, round(size * zoom))
        size, overlap = scene_size, min(round(overlap * zoom), scene_size // 2)
    tiles = TileGrid.build(height=scene.grid.height, width=scene.grid.width, size=size,
                           overlap=overlap, multiple=1 if model_tile else meta.output_stride)
    blocks = BlockGrid.build(tiles, block_size=options.block_size)
    if "auto" in (options.device, options.precision, options.runtime):
        options = options.resolved(network=meta.network)
    return Plan(scene, bands, tiles, blocks, options.stitch, len(meta.classes),
                options.tta or meta.tta, options.precision, options.compile, rescale,
                source, model_tile, options.runtime)


def read_block(ds: Any, plan: Plan, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """The block's pixels and validity over :meth:`BlockGrid.region` (boundless)."""
    return read_window(ds, plan.blocks.region(block), bands=plan.bands)


@dataclass
class PredictedBlock:
    """A computed block: its int32 accumulator over ``block.extent`` (an array of the
    runtime's kind: a tensor on the model's device, or the host after :meth:`on_host`), the
    input mask over its window, and how many tiles went through the model."""

    block: Block
    acc: Any
    valid: np.ndarray
    tiles_run: int
    started: float = 0.0
    """Wall-clock time (``time.time()``) the block's prediction began."""

    def on_host(self) -> PredictedBlock:
        """The same block with its accumulator in host memory (a Dask task's result: it
        may travel to another worker, and the device's memory is freed at once)."""
        if is_torch_array(self.acc):
            self.acc = self.acc.cpu()
        return self


class _Pending:
    """A block on its way through the model: its accumulator, its normalized pixels on the
    device (kept until its last tile has run) and how many of its tiles are still queued."""

    def __init__(self, block: Block, acc: Any, inputs: Any, ok: Any, all_valid: bool,
                 valid: np.ndarray, queued: int, started: float, *,
                 channels_last: bool = True) -> None:
        self.block, self.acc, self.inputs, self.ok = block, acc, inputs, ok
        self.all_valid, self.valid, self.left, self.started = all_valid, valid, queued, started
        self.tiles_run = queued
        self.finite: Any = None
        self.channels_last = channels_last

    def tile(self, rows: slice, cols: slice) -> Any:
        """A queued tile's normalized pixels, a view on the device: (H, W, C) for torch
        (channels-last), (C, H, W) for numpy (see :func:`normalize_region`)."""
        assert self.inputs is not None, "a block with queued tiles keeps its pixels"
        if self.channels_last:
            return self.inputs[rows, cols]
        return self.inputs[:, rows, cols]

    def mask(self, rows: slice, cols: slice) -> Any:
        """A queued tile's validity (H, W) on the device."""
        assert self.ok is not None, "a block with queued tiles keeps its mask"
        return self.ok[rows, cols]


def forward_size(plan: Plan, batch_size: int) -> int:
    """Tiles in every forward pass of a scene: its tiles split into as few batches of at
    most ``batch_size`` as they fit in, of equal size (12 tiles at batch 8: batches of 6,
    nothing padded; 441: 8). One shape a scene: a tile's probabilities are the same bits
    whichever block, batch or runner it ran in (a CPU convolution may take another path for
    another batch size: the shipped model's probabilities move by 3e-7 between a batch of
    1 and of 8 on two threads), and a compiled network or cuDNN picks its kernels once."""
    tiles = max(1, len(plan.tiles))
    batches = -(-tiles // max(1, batch_size))
    return -(-tiles // batches)


class TileBatcher:
    """The tiles of consecutive blocks of a scene through the model, :func:`forward_size`
    tiles a forward pass.

    :meth:`add` takes a block's pixels and returns the blocks whose every tile has run (in
    the order they came); a batch fills across blocks, so the network sees full batches
    however few tiles a block holds. :meth:`flush` runs the rest, the last batch padded
    with zero tiles to the same size (their output is dropped; ``pad=False``: as it is).
    Tiles that hold no valid pixel never reach the model; the probabilities are weighted
    into each block's integer accumulator on the device (see ``stitch``). Non-finite output
    is checked once a block.
    """

    def __init__(self, bundle: ModelBundle, plan: Plan, *, batch_size: int,
                 progress: Callable[[int], None] | None = None, pad: bool = True) -> None:
        self.bundle, self.plan, self.progress, self.pad = bundle, plan, progress, pad
        self.size = forward_size(plan, batch_size)
        self.xp, self.where = bundle.xp, bundle.array_device
        # torch networks run channels-last; ONNX Runtime takes (N, C, H, W)
        self.channels_last = not is_numpy_namespace(self.xp)
        self.queue: deque[tuple[_Pending, Tile, slice, slice]] = deque()
        self.blocks: deque[_Pending] = deque()

    def add(self, block: Block, pixels: np.ndarray, valid: np.ndarray) -> list[PredictedBlock]:
        """Queue ``block`` (``pixels``/``valid`` over ``plan.blocks.region(block)``: they go to
        the device once) and run every full batch."""
        from ..model.inference import normalize_region, to_device
        from .stitch import new_accumulator

        started = time.time()
        plan, xp, where = self.plan, self.xp, self.where
        region = plan.blocks.region(block)
        todo = []
        for tile in plan.blocks.block_tiles(block):
            rows, cols = tile.read.slices(within=region)
            if valid[rows, cols].any():
                todo.append((tile, rows, cols))
        inputs = ok = None
        if todo:
            px, ok = to_device(pixels, valid, where, xp)
            inputs = normalize_region(px, ok, self.bundle.meta, rescale=plan.rescale,
                                      channels_last=self.channels_last)
            del px
        w_rows, w_cols = block.window.slices(within=region)
        pending = _Pending(block, new_accumulator(block.extent, plan.n_classes, where, xp),
                           inputs, ok, bool(valid.all()), valid[w_rows, w_cols], len(todo),
                           started, channels_last=self.channels_last)
        self.blocks.append(pending)
        self.queue.extend((pending, *item) for item in todo)
        while len(self.queue) >= self.size:
            self._run()
        return self._done()

    def flush(self) -> list[PredictedBlock]:
        """Run the queued tiles (the last batch padded) and return the remaining blocks."""
        while self.queue:
            self._run()
        return self._done()

    def _run(self) -> None:
        from ..model.inference import forward_probabilities, resize_tiles

        plan, xp = self.plan, self.xp
        batch = [self.queue.popleft() for _ in range(min(self.size, len(self.queue)))]
        tiles = [p.tile(rows, cols) for p, _, rows, cols in batch]
        if plan.model_tile:  # each tile resampled to the network's size on its own
            x = xp.concat([resize_tiles((xp.permute_dims(t, (2, 0, 1)) if self.channels_last
                                         else t)[None, ...], plan.model_tile)
                           for t in tiles])
        elif self.channels_last:  # (N, H, W, C) seen as (N, C, H, W): no copy before forward
            x = xp.permute_dims(xp.stack(tiles), (0, 3, 1, 2))
        else:  # (N, C, H, W) in that order, as ONNX Runtime takes it
            x = xp.stack(tiles)
        if self.pad and len(batch) < self.size:  # the last batch: zero tiles, output dropped
            x = xp.concat([x, xp.zeros((self.size - len(batch), *x.shape[1:]), dtype=x.dtype,
                                       device=self.where)])
        probs = forward_probabilities(self.bundle, x, tta=plan.tta,
                                      precision=plan.precision)[:len(batch)]
        start = 0
        while start < len(batch):  # the batch's tiles block by block, in queue order
            pending = batch[start][0]
            end = start
            while end < len(batch) and batch[end][0] is pending:
                end += 1
            self._add(pending, batch[start:end], probs[start:end, ...])
            start = end
        if self.progress is not None:
            self.progress(len(batch))

    def _add(self, pending: _Pending, items: list, probs: Any) -> None:
        from ..model.inference import resize_tiles
        from .stitch import add_tiles, device_weights

        plan, g, xp, block = self.plan, self.plan.tiles, self.xp, pending.block
        tiles = [tile for _, tile, _, _ in items]
        finite = xp.isfinite(xp.sum(probs))  # one pass: NaN or inf anywhere shows
        pending.finite = finite if pending.finite is None else pending.finite & finite
        weights = xp.stack([device_weights(plan.stitch, g, t, self.where, xp) for t in tiles])
        if not pending.all_valid:
            masks = xp.stack([pending.mask(rows, cols) for _, _, rows, cols in items])
            weights = weights * xp.astype(masks, weights.dtype)
        if plan.model_tile:  # back on the scene's pixels a tile at a time: bounded memory
            for i, tile in enumerate(tiles):
                add_tiles(pending.acc, block.extent, [tile],
                          resize_tiles(probs[i:i + 1, ...], g.size), weights[i:i + 1, ...])
        else:
            add_tiles(pending.acc, block.extent, tiles, probs, weights)
        pending.left -= len(items)
        if pending.left == 0:
            pending.inputs = pending.ok = None  # its pixels leave the device

    def _done(self) -> list[PredictedBlock]:
        done = []
        while self.blocks and self.blocks[0].left == 0:
            pending = self.blocks.popleft()
            block = pending.block
            if pending.finite is not None and not bool(pending.finite):
                plan = self.plan
                hint = ("; float16 overflows in some networks"
                        if plan.precision == "float16" else "")
                raise ModelOutputError(
                    f"{plan.scene.path}: the network's output is not finite (NaN or "
                    f"infinity) in the block at row {block.window.row}, col "
                    f"{block.window.col} under {plan.precision}{hint}: predict with "
                    "--precision float32 (or bfloat16 on a GPU that has it)")
            done.append(PredictedBlock(block, pending.acc, pending.valid, pending.tiles_run,
                                       pending.started))
        return done


def predict_block(bundle: ModelBundle, plan: Plan, block: Block, pixels: np.ndarray,
                  valid: np.ndarray, *, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> PredictedBlock:
    """Run every tile of ``block`` that holds valid pixels through the model once: one
    block's :class:`TileBatcher`, in batches of the scene's forward size, the last one as
    it is (a Dask model task: padding each block's last batch cost 32% more model work on
    a 4096^2 scene of 25-tile blocks, README "Byte identities").

    ``pixels``/``valid`` cover ``plan.blocks.region(block)``; they go to the device once, and
    every later step of the block runs there a batch at a time.
    """
    batcher = TileBatcher(bundle, plan, batch_size=batch_size, progress=progress, pad=False)
    done = batcher.add(block, pixels, valid) + batcher.flush()
    assert len(done) == 1
    return done[0]
