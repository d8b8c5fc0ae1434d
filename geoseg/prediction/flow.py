"""A scene's work as data, its steps as free functions, and the local runner.

:func:`plan_flow` turns a scene and a model's metadata into a :class:`SceneFlow`: the plan
(tile and block grids), the output names, the tags and, with ``vectorize``, the polygon
plan on the *same* block grid. :func:`block_steps` lists its block work as data (each block
with the blocks whose spills it takes, in row-major order); the steps of every block, in
dependency order::

    predict(block)                       read block + halo, run its tiles (geoseg.prediction.blocks)
    spill_strips(predicted)              the strips it owes later blocks (BlockGrid.spills)
    finish_block(predicted, incoming)    add the strips from BlockGrid.sources(block):
                                         classes (+ probabilities), counts, polygon pieces
    SceneWriter.write(finished)          rasters at the block's window; pieces into the
                                         streaming seam merge (VectorSink)
    SceneWriter.publish()                COGs and the vector file under their final names

Two runners execute these same steps: :func:`run_local` in row-major block order in one
process (``predict_scene``), and the Dask runner in ``pipelines/`` (each step a task, the
finished blocks passed through part files). Their outputs are byte-identical by
construction: the same functions make every byte. No dask here.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..classes import NODATA_CLASS, ClassInfo
from ..inputs.scene import Scene, gdal_env, open_raster, open_scene
from ..inputs.sources import scene_dir
from ..names import SceneOutputs
from ..outputs.class_raster import ClassRaster, resolve_classes
from ..outputs.rasters import RasterOutput, class_output, prepare_output, probability_output
from ..outputs.zarr_rasters import ZarrRasters, create_group, publish_group
from ..tiling import Block
from ..vector.layer import VectorizePlan, VectorSink, make_vector_plan
from ..vector.polygonize import polygonize_classes
from ..vector.seams import BlockResult
from .blocks import Plan, PredictedBlock, TileBatcher, make_plan, read_block
from .options import PredictOptions
from .scene_report import BlockDone, SceneReport, Tally
from .stitch import finish, spills

if TYPE_CHECKING:
    from ..grid import Window
    from ..inputs.fit import Sampler
    from ..outputs.preview import Thumbnail
    from ..model.bundle import ModelBundle
    from ..model.meta import BundleMeta


@dataclass(frozen=True)
class SceneFlow:
    """One scene's work, decided before any pixel is read; small and picklable (the Dask
    runner sends it with every task). Holds no model: tasks load it by reference."""

    scene: str
    plan: Plan
    outputs: SceneOutputs
    classes: tuple[ClassInfo, ...]
    tags: dict
    model_sha256: str
    probabilities: bool
    vector: VectorizePlan | None
    preview: bool = False
    creation: tuple[str, ...] = ()
    """COG creation options of the rasters (``--co``)."""
    raster_format: str = "cog"
    """cog: classes.tif (+ probabilities.tif); zarr: both in one group, prediction.zarr."""

    @property
    def zarr(self) -> bool:
        return self.raster_format == "zarr"

    @property
    def output_paths(self) -> dict[str, str]:
        """The final outputs this flow writes, by kind."""
        if self.zarr:
            out = {"zarr": str(self.outputs.zarr)}
        else:
            out = {"classes": str(self.outputs.classes)}
            if self.probabilities:
                out["probabilities"] = str(self.outputs.probabilities)
        if self.vector is not None:
            out["polygons"] = str(self.outputs.polygons)
        if self.preview:
            out["preview"] = str(self.outputs.preview)
        return out


def plan_flow(scene: Scene, out_dir: str | os.PathLike, *, meta: BundleMeta,
              model_sha256: str, options: PredictOptions,
              folder: str | os.PathLike | None = None,
              sample: Sampler | None = None) -> SceneFlow:
    """The flow of ``scene`` into ``folder`` (default ``OUT/<stem>/``; a batch names the
    folders of scenes that share a stem: :func:`geoseg.inputs.sources.folder_names`). Metadata
    only; checks bands and tiling (``sample``: see :func:`~geoseg.prediction.blocks.make_plan`)."""
    plan = make_plan(scene, meta, options, sample=sample)
    outputs = SceneOutputs(Path(folder) if folder else scene_dir(out_dir, scene.path),
                           vector_suffix=f".{options.vector_format}")
    tags = plan.tags(meta, model_sha256)
    vector = None
    if options.vectorize:
        # the class raster this flow writes, described without reading it back
        raster = ClassRaster(str(outputs.classes), scene.grid, NODATA_CLASS, meta.classes,
                             tags)
        prob_bands = tuple((c.id, i + 1) for i, c in enumerate(meta.classes))
        vector = make_vector_plan(
            raster, outputs.polygons, plan.blocks, keep=resolve_classes(raster),
            probabilities_path=outputs.probabilities if options.probabilities else None,
            prob_bands=prob_bands if options.probabilities else ())
    # the preview reads the class COG's overviews; a Zarr group has none
    preview = options.preview and options.raster_format == "cog"
    return SceneFlow(scene.path, plan, outputs, tuple(meta.classes), tags, model_sha256,
                     options.probabilities, vector, preview, options.creation_options,
                     options.raster_format)


def scene_report(flow: SceneFlow, tally: Tally, outputs: dict[str, str], *,
                 seconds: float) -> SceneReport:
    """The report of ``flow`` once every block is in ``tally`` and ``outputs`` exist."""
    plan, grid = flow.plan, flow.plan.scene.grid
    return SceneReport(
        scene=flow.scene, outputs=dict(outputs), height=grid.height, width=grid.width,
        crs=grid.crs.to_string() if grid.crs else None, tiles_in_grid=len(plan.tiles),
        tiles_run=int(tally.tiles_run), blocks=len(plan.blocks),
        tiles_per_block=plan.blocks.tiles_per_block, blocks_reused=tally.blocks_reused,
        tile_size=plan.tiles.size,
        overlap=plan.tiles.overlap, stitch=plan.stitch, tta=plan.tta,
        class_pixels={c.name: int(tally.counts[c.id]) for c in flow.classes},
        nodata_pixels=int(tally.counts[NODATA_CLASS]), model_sha256=flow.model_sha256,
        seconds=round(seconds, 3))


@dataclass(frozen=True, slots=True)
class BlockStep:
    """One block's work: predict it, send its spills on, finish it with the spills of
    ``sources`` (the blocks that spill into it, named by ``BlockGrid.sources``)."""

    block: Block
    sources: tuple[tuple[int, int], ...]

    @property
    def key(self) -> tuple[int, int]:
        return self.block.row, self.block.col


def block_steps(flow: SceneFlow) -> list[BlockStep]:
    """The scene's block work in row-major order, the order both runners follow: every
    block comes after all of its sources."""
    blocks = flow.plan.blocks
    return [BlockStep(block, tuple(blocks.sources(block))) for block in blocks.blocks()]


DISK_FACTOR = 1.0
"""Bytes on disk per output byte per pixel while a scene runs, all copies together: its
part files (compressed), the staging GeoTIFF and the COG with overviews (DEFLATE) usually
total well under one uncompressed copy; one uncompressed copy is the estimate."""


def disk_estimate(flow: SceneFlow) -> int:
    """About how many bytes a scene's run needs on the output disk at its peak."""
    grid = flow.plan.scene.grid
    per_pixel = 1 + (len(flow.classes) if flow.probabilities else 0)
    vector = 0.5 if flow.vector is not None else 0  # pieces + GeoPackage, typically less
    return int(grid.height * grid.width * (per_pixel + vector) * DISK_FACTOR)


def prepare_outputs(flow: SceneFlow, *, overwrite: bool) -> None:
    """Make the scene's folder; refuse existing outputs unless ``overwrite``."""
    for path in flow.output_paths.values():
        prepare_output(Path(path), overwrite=overwrite)


def spill_strips(flow: SceneFlow, predicted: PredictedBlock) -> dict:
    """The strips of a computed block that belong to later blocks, keyed by block
    (row, col) (:meth:`~geoseg.tiling.BlockGrid.spills`)."""
    return spills(predicted.acc, flow.plan.blocks, predicted.block)


@dataclass
class FinishedBlock:
    """A block's final pixels: classes (H, W), probabilities (K, H, W) or None, its polygon
    pieces (with ``vectorize``) and what it reports."""

    block: Block
    classes: np.ndarray
    probs: np.ndarray | None
    pieces: BlockResult | None
    done: BlockDone


def finish_block(flow: SceneFlow, predicted: PredictedBlock, incoming: list) -> FinishedBlock:
    """Add the strips that the blocks of ``BlockGrid.sources`` sent (any order: integer
    sums), take the argmax, count the classes and polygonize the block in memory."""
    block = predicted.block
    classes, probs = finish(predicted.acc, block, incoming, predicted.valid,
                            nodata=NODATA_CLASS, probabilities=flow.probabilities)
    pieces = None
    if flow.vector is not None:
        pieces = polygonize_classes(classes, block.window, flow.vector.rules,
                                    probs=probs if flow.vector.probabilities_path else None)
    counts = np.bincount(classes.ravel(), minlength=256).astype(np.int64)
    done = BlockDone(block.row, block.col, block.n_tiles, predicted.tiles_run, counts,
                     started=predicted.started)
    return FinishedBlock(block, classes, probs, pieces, done)


class SceneWriter:
    """A scene's outputs while its blocks finish; :meth:`publish` makes them final.

    Rasters are written at each block's window into staging files; polygon pieces go into
    the streaming seam merge. ``rasters``/``polygons`` choose which outputs this writer
    owns (the Dask runner assembles them in separate tasks). Leaving without publishing
    removes every staging file.
    """

    def __init__(self, flow: SceneFlow, *, rasters: bool = True,
                 polygons: bool = True) -> None:
        self.flow = flow
        self.want_rasters, self.want_polygons = rasters, polygons and flow.vector is not None
        self.classes: RasterOutput | None = None
        self.probs: RasterOutput | None = None
        self.zarr: ZarrRasters | None = None
        self.vector: VectorSink | None = None
        self.thumbnail: Thumbnail | None = None
        """The preview's picture, picked from the blocks a runner reads (see
        :meth:`pick_thumbnail`); a writer whose blocks were read elsewhere has none."""
        self._stack = ExitStack()

    def pick_thumbnail(self) -> Thumbnail | None:
        """Start picking the preview's picture from the blocks (:meth:`Thumbnail.add` with
        each block's window, any order): for a scene without overviews, which would
        otherwise be decoded whole again for its preview. None when not needed."""
        from ..outputs.preview import Thumbnail, has_overviews

        flow = self.flow
        if not (flow.preview and self.want_rasters and not flow.zarr):
            return None
        if has_overviews(flow.scene, flow.plan.bands[0]):
            return None
        scene = flow.plan.scene
        self.thumbnail = Thumbnail(scene.grid.height, scene.grid.width,
                                   bands=len(flow.plan.bands), dtype=scene.dtype)
        return self.thumbnail

    def __enter__(self) -> "SceneWriter":
        flow, grid = self.flow, self.flow.plan.scene.grid
        stack = self._stack.__enter__()
        if self.want_rasters and flow.zarr:
            stack.callback(_drop_zarr_staging, flow.outputs)  # gone unless published
            self.zarr = ZarrRasters(stage_zarr(flow))
        elif self.want_rasters:
            self.classes = stack.enter_context(
                class_output(flow.outputs.classes, grid, flow.classes, flow.tags,
                             creation=flow.creation))
            if flow.probabilities:
                self.probs = stack.enter_context(
                    probability_output(flow.outputs.probabilities, grid, flow.classes,
                                       flow.tags, creation=flow.creation))
        if self.want_polygons and flow.vector is not None:
            self.vector = stack.enter_context(VectorSink(flow.vector))
        return self

    def write_rasters(self, block: Block, classes: np.ndarray,
                      probs: np.ndarray | None) -> None:
        if self.zarr is not None:
            self.zarr.write(classes, block.window, probs)
        if self.classes is not None:
            self.classes.write(classes, block.window)
        if self.probs is not None and probs is not None:
            self.probs.write(probs, block.window, valid=classes != NODATA_CLASS)

    def add_pieces(self, pieces: BlockResult) -> None:
        if self.vector is not None:
            self.vector.add(pieces)

    def write(self, finished: FinishedBlock) -> None:
        self.write_rasters(finished.block, finished.classes, finished.probs)
        if finished.pieces is not None:
            self.add_pieces(finished.pieces)

    def publish(self) -> dict[str, str]:
        """Publish what this writer owns; returns those outputs by kind."""
        out = {}
        if self.zarr is not None:
            out["zarr"] = str(publish_zarr(self.flow))
        if self.classes is not None:
            out["classes"] = str(self.classes.publish())
            if self.flow.preview:  # classes from the published COG's overviews
                from ..outputs.preview import try_preview

                picked = self.thumbnail
                made = try_preview(self.flow.scene, self.flow.outputs.classes,
                                   self.flow.outputs.preview, bands=self.flow.plan.bands,
                                   infos=self.flow.classes,
                                   pixels=picked.picture if picked and picked.complete else None)
                if made is not None:
                    out["preview"] = str(made)
        if self.probs is not None:
            out["probabilities"] = str(self.probs.publish())
        self._stack.close()  # the vector sink merges its last rows and publishes
        if self.vector is not None:
            out["polygons"] = self.vector.summary["path"]
        return out

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


def stage_zarr(flow: SceneFlow, *, keep: bool = False) -> Path:
    """The scene's Zarr group in its staging folder, empty (``keep``: an interrupted run's,
    with the chunks of its finished blocks, where there is one)."""
    staging = flow.outputs.zarr_staging
    if keep and (staging / "zarr.json").is_file():
        return staging
    return create_group(staging, flow.plan.scene.grid, flow.classes, flow.tags,
                        probabilities=flow.probabilities, chunk=flow.plan.blocks.step)


def publish_zarr(flow: SceneFlow) -> Path:
    """Publish the scene's Zarr group from its staging folder (its blocks all written);
    the parts folder it was built in goes too when nothing else is left in it."""
    path = publish_group(flow.outputs.zarr_staging, flow.outputs.zarr)
    _drop_zarr_staging(flow.outputs)
    return path


def _drop_zarr_staging(outputs: SceneOutputs) -> None:
    """Remove the staging group (if still there) and the parts folder if that left it
    empty (the local runner makes the folder only for the group)."""
    shutil.rmtree(outputs.zarr_staging, ignore_errors=True)
    with suppress(OSError):
        outputs.parts.rmdir()


READ_AHEAD = 4
"""Most blocks read ahead of the model in the local runner (one reader thread each, with
its own dataset: GDAL releases the GIL while it decodes)."""


def reader_threads() -> int:
    """Reader threads for the local runner: the cores left beside the one that feeds the
    model, at most :data:`READ_AHEAD` (one on a 2-core machine, as before)."""
    from ..model.devices import available_cores

    return max(1, min(READ_AHEAD, available_cores() - 1))


def finish_alongside(device: str) -> bool:
    """Whether the local runner finishes blocks on their own thread while the next one
    runs: on CUDA (the thread that feeds the GPU is free while it computes) and on CPUs
    with cores to spare; not on 2 cores, where torch's forward already takes both and the
    finisher would only compete with it (measured: 4% slower on the 1x1-model ceiling)."""
    from ..model.devices import available_cores, device_kind

    return device_kind(device) == "cuda" or available_cores() > 2


def run_local(flow: SceneFlow, bundle: ModelBundle, *, batch_size: int,
              progress: Callable[[int], None] | None = None,
              stop: threading.Event | None = None,
              readers: int | None = None,
              tail: Executor | None = None) -> tuple[Tally, Any]:
    """Run every step of ``flow`` in one process, blocks in row-major order.

    Three kinds of threads keep the model busy: ``readers`` threads (default
    :func:`reader_threads`) read the next blocks, each with its own dataset; this thread
    only feeds the model: the tiles of consecutive blocks go through it in batches of
    ``batch_size`` (:class:`~geoseg.prediction.blocks.TileBatcher`: a batch spans blocks,
    the scene's last one is padded); one finisher thread takes each computed block in order
    and does the host work after the model (spill strips, finish, class counts, polygons,
    staging writes) while the next batches run (where :func:`finish_alongside`; elsewhere
    this thread finishes each block itself). A block is finished as soon as its last tile
    has run (only the blocks above and to its left spill into it), so the spill strips it
    sends on are the only state kept between blocks. ``stop`` (a Ctrl-C flag) is checked
    before every block: the run ends with KeyboardInterrupt and no output. A torch or CUDA
    error (out of GPU memory, ...) ends it as one DeviceError line.

    Returns the tally and the published outputs by kind. With ``tail`` (an executor of one
    thread), the scene's tail (COGs and overviews, preview, vector file) is submitted there
    once its last block is written, and the second value is that future: the caller runs
    the next scene's blocks meanwhile (a batch on a GPU keeps it busy through the tails).
    The staging files stay the tail's to publish or, when it fails, to remove.
    """
    from ..model.devices import device_errors

    incoming: dict[tuple[int, int], list[tuple[Window, np.ndarray]]]
    plan, tally, incoming = flow.plan, Tally(), {}
    steps = block_steps(flow)
    readers = readers or reader_threads()
    overlap = finish_alongside(bundle.device)
    # one dataset per reader, opened and closed here (a rasterio dataset closes its GDAL
    # environment with it, in the thread that opened it); a read takes a free one
    datasets, free = ExitStack(), queue.SimpleQueue[Any]()

    thumbnail: Thumbnail | None = None  # the preview's picture, picked as blocks are read

    def read(block: Block) -> tuple[np.ndarray, np.ndarray]:
        ds = free.get()
        try:
            pixels, valid = read_block(ds, plan, block)
        finally:
            free.put(ds)
        if thumbnail is not None:
            thumbnail.add(pixels, valid, block.window, within=plan.blocks.region(block))
        return pixels, valid

    def finish_and_write(predicted: PredictedBlock) -> None:
        for key, strip in spill_strips(flow, predicted).items():
            incoming.setdefault(key, []).append(strip)
        # every source came earlier in row-major order: its strips are all here
        key = predicted.block.row, predicted.block.col
        finished = finish_block(flow, predicted, incoming.pop(key, []))
        writer.write(finished)
        tally.add(finished.done)

    with datasets:
        for _ in range(min(readers, len(steps))):
            free.put(datasets.enter_context(open_raster(plan.scene.path)))
        with device_errors(), ExitStack() as staging, \
                ThreadPoolExecutor(max_workers=readers) as reader, \
                ThreadPoolExecutor(max_workers=1) as finisher:
            writer = staging.enter_context(SceneWriter(flow))
            thumbnail = writer.pick_thumbnail()
            batcher = TileBatcher(bundle, plan, batch_size=batch_size, progress=progress)
            finishing: Any = None

            def hand_on(computed: list[PredictedBlock]) -> None:
                nonlocal finishing
                for predicted in computed:
                    if not overlap:
                        finish_and_write(predicted)
                        continue
                    if finishing is not None:
                        finishing.result()  # the previous block is written: one in flight
                    finishing = finisher.submit(finish_and_write, predicted)
                computed.clear()

            reads = deque(reader.submit(read, step.block) for step in steps[:readers])
            for i, step in enumerate(steps):
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                pixels, valid = reads.popleft().result()
                if i + readers < len(steps):
                    reads.append(reader.submit(read, steps[i + readers].block))
                hand_on(batcher.add(step.block, pixels, valid))
                del pixels, valid
            hand_on(batcher.flush())
            if finishing is not None:
                finishing.result()
            if tail is not None:  # the staging files go with the tail, which publishes them
                return tally, tail.submit(_publish, writer, staging.pop_all())
            outputs = writer.publish()
    return tally, outputs


def _publish(writer: SceneWriter, staging: ExitStack) -> dict[str, str]:
    with staging, gdal_env():  # leaving without publishing removes the staging files
        return writer.publish()


def predict_scene(scene_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                  model: Any, options: PredictOptions = PredictOptions(),
                  progress: Callable[[int], None] | None = None) -> dict:
    """Predict one scene into ``OUT/<stem>/classes.tif`` (+ ``probabilities.tif``,
    ``polygons.gpkg``) with the local runner.

    ``model`` is a bundle path or a loaded ``ModelBundle``. Returns the scene's summary
    (:meth:`geoseg.prediction.scene_report.SceneReport.summary`). Raises ``GeosegError``
    subclasses for bad input, before anything is written under a final name.
    """
    from ..model.bundle import ModelBundle
    from ..model.devices import set_model_threads
    from ..model.loading import load_for_prediction
    from ..model.meta import read_meta

    start = time.perf_counter()
    with gdal_env():
        scene = open_scene(scene_path, allow_no_crs=options.allow_no_crs)
        if isinstance(model, ModelBundle):
            from ..model.optimize import for_inference

            if options.runtime == "auto":  # a loaded network runs where it was loaded
                options = replace(options, runtime=model.runtime)
            options = options.resolved(model.device, network=model.meta.network)
            set_model_threads(options.threads, options.runtime)
            bundle = for_inference(model, compile=options.compile,
                                   batch_size=options.batch_size, runtime=options.runtime)
        else:
            options = options.resolved(network=read_meta(model).network)
            set_model_threads(options.threads, options.runtime)  # before the model loads
            bundle = load_for_prediction(model, device=options.device,
                                         compile=options.compile,
                                         batch_size=options.batch_size,
                                         runtime=options.runtime)
        flow = plan_flow(scene, out_dir, meta=bundle.meta, model_sha256=bundle.sha256,
                         options=options)
        prepare_outputs(flow, overwrite=options.overwrite)
        tally, outputs = run_local(flow, bundle, batch_size=options.batch_size,
                                   progress=progress)
    return scene_report(flow, tally, outputs,
                        seconds=time.perf_counter() - start).summary()
