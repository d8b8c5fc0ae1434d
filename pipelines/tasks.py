"""The functions Dask runs on workers: the steps of :mod:`geoseg.prediction.flow` as tasks.

Per block: ``predict`` (read + model), ``spills`` (strips for later blocks), ``finish``
(classes, probabilities and polygon pieces, saved as part files); per scene: ``rasters``
(parts -> COGs) and ``polygons`` (pieces -> seam merge -> vector file), then ``outputs``.
A scene of one block on workers without resources (CPU) is one ``scene`` task instead.
Task arguments are small frozen values (a :class:`SceneJob`, block indexes); the only large
values that travel are a block's accumulator (kept on the worker that computed it, where its
finish task is scheduled) and spill strips (at most ``overlap`` pixels wide). The model is
loaded once per worker process by the :class:`~pipelines.worker.ModelCache` plugin.
"""

from __future__ import annotations

import errno
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from geoseg.errors import DeviceError, GeosegError
from geoseg.inputs.scene import gdal_env, open_raster
from geoseg.model.devices import device_error
from geoseg.prediction.flow import SceneFlow, SceneWriter, finish_block, spill_strips
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.scene_report import BlockDone

if TYPE_CHECKING:
    from geoseg.prediction.blocks import PredictedBlock


_T = TypeVar("_T", bound=Callable[..., Any])

MODEL_LOCK = threading.Lock()
"""Held while a block runs through the model: the network already takes every core its
process has (its own threads), so a second block at once only competes with it; the
worker's other threads read, finish and write meanwhile, as the in-process runner's do.
Measured on the 4096^2 bench (2 cores): the lazy path took 1.119x the file path without it.
A GPU worker runs one model task at a time anyway (its ``GPU=1`` resource)."""


def portable_errors(task: _T) -> _T:
    """Raise a task's GeosegError to the client as a fresh copy without its cause chain (a
    torch or CUDA error that :func:`~geoseg.model.devices.device_error` knows, as one).

    Dask pickles a task's exception with its causes (tblib); GDAL's errors behind ours do
    not survive that, and the client would get ``Exception("InvalidInputError(...)")``
    instead of geoseg's one line. The worker's log keeps the full traceback.
    """
    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        error: Exception
        try:
            with _RUNNING:
                return task(*args, **kwargs)
        except GeosegError as exc:
            error = type(exc)(*exc.args)
        except Exception as exc:
            mapped = device_error(exc)  # out of GPU memory, a busy GPU, ...: one line
            job = args[0] if args and isinstance(args[0], SceneJob) else None
            if mapped is not None:
                error = DeviceError(*mapped.args)
            # a full disk shows as ENOSPC, numpy's "N requested and M written", or a GDAL
            # write error: ask the disk instead of parsing messages
            elif job is not None and (getattr(exc, "errno", None) == errno.ENOSPC
                                      or _disk_full(job)):
                error = _no_space(job)
            else:
                raise
        raise error  # outside the except block: no __context__ either

    return run  # type: ignore[return-value]  # same signature as task (functools.wraps)


class _Running:
    """How many of these tasks run in this process now (a worker in the client's process
    shares it with the client): an interrupted batch waits for them before it removes what
    its unfinished scenes wrote, since a thread cannot be killed as a worker process is."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self) -> None:
        with self.idle:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.idle:
            self.count -= 1
            self.idle.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until none runs (at most ``timeout`` seconds); False if some still do."""
        with self.idle:
            return self.idle.wait_for(lambda: self.count == 0, timeout)


_RUNNING = _Running()
wait_for_tasks = _RUNNING.wait


def _disk_full(job: SceneJob) -> bool:
    """True when the disk of the scene's outputs has less room left than the scene needs."""
    from geoseg.outputs.rasters import free_bytes
    from geoseg.prediction.flow import disk_estimate

    try:
        return free_bytes(job.flow.outputs.folder) < disk_estimate(job.flow)
    except OSError:
        return False


def _no_space(job: SceneJob) -> GeosegError:
    """A full disk while a task writes: the same one line as the check before the scene."""
    from geoseg.errors import OutputNotWritableError
    from geoseg.outputs.rasters import no_space_message
    from geoseg.prediction.flow import disk_estimate

    outputs = job.flow.outputs
    return OutputNotWritableError(no_space_message(outputs.folder.parent,
                                                   disk_estimate(job.flow)))


@dataclass(frozen=True)
class ModelRef:
    """Which model a task needs: a path on shared storage and the sha256 it must have."""

    path: str
    sha256: str


@dataclass(frozen=True)
class SceneJob:
    """Everything a scene's tasks need; small enough to send with every task."""

    flow: SceneFlow
    model: ModelRef
    options: PredictOptions


def _predict(job: SceneJob, row: int, col: int, *, thumbnail: Any = None) -> PredictedBlock:
    """Read block ``(row, col)`` with its halo (its preview pixels into ``thumbnail``) and
    run its tiles (``geoseg.prediction.blocks``), one block through the model at a time."""
    from geoseg.prediction.blocks import predict_block, read_block

    from .worker import model_cache

    options, plan = job.options, job.flow.plan
    bundle = model_cache().get(job.model.path, job.model.sha256, device=options.device,
                               threads=options.threads, compile=options.compile,
                               batch_size=options.batch_size, runtime=options.runtime)
    block = plan.blocks.block(row, col)
    with gdal_env(), open_raster(plan.scene.path) as ds:
        pixels, valid = read_block(ds, plan, block)
    if thumbnail is not None:
        thumbnail.add(pixels, valid, block.window, within=plan.blocks.region(block))
    with MODEL_LOCK:
        return predict_block(bundle, plan, block, pixels, valid,
                             batch_size=options.batch_size).on_host()


@portable_errors
def predict_task(job: SceneJob, row: int, col: int) -> PredictedBlock:
    """Read block ``(row, col)`` with its halo and run its tiles."""
    return _predict(job, row, col)


@portable_errors
def scene_task(job: SceneJob) -> tuple[BlockDone, dict]:
    """A scene of one block, whole, in one task (a batch of chips on a CPU cluster): read,
    model, finish, and the outputs written and published as the in-process runner writes
    them, with no spill strips, part files or assembling task (a scene of one block has no
    finished blocks to resume). Returns the block's record and the scene's outputs."""
    flow = job.flow
    with gdal_env(), SceneWriter(flow) as writer:
        predicted = _predict(job, 0, 0, thumbnail=writer.pick_thumbnail())
        finished = finish_block(flow, predicted, [])
        writer.write(finished)
        return finished.done, writer.publish()


@portable_errors
def spills_task(job: SceneJob, predicted: PredictedBlock) -> dict:
    """The strips of a computed block that belong to later blocks."""
    return spill_strips(job.flow, predicted)


@portable_errors
def finish_task(job: SceneJob, predicted: PredictedBlock, *source_spills: dict,
                outgoing: dict) -> BlockDone:
    """Finish a block with the strips of its ``BlockGrid.sources``; save its parts, and in
    its done record the strips it sends on (``outgoing``: its own spills task's result)."""
    from geoseg.prediction.parts import save_finished

    key = (predicted.block.row, predicted.block.col)
    incoming = [spill[key] for spill in source_spills if key in spill]
    finished = finish_block(job.flow, predicted, incoming)
    save_finished(job.flow.outputs, finished, outgoing, zarr=job.flow.zarr)
    return finished.done


@portable_errors
def saved_done_task(job: SceneJob, row: int, col: int) -> BlockDone:
    """A block an earlier, interrupted run finished: its record, read back (no model)."""
    from geoseg.prediction.parts import load_done

    return load_done(job.flow.outputs, row, col)[0]


@portable_errors
def saved_spills_task(job: SceneJob, row: int, col: int) -> dict:
    """The spill strips a block finished by an earlier run sends to later blocks."""
    from geoseg.prediction.parts import load_done

    return load_done(job.flow.outputs, row, col)[1]


@portable_errors
def rasters_task(job: SceneJob, *done: BlockDone) -> dict:
    """Stream the scene's raster parts into classes.tif (+ probabilities.tif) through the
    local runner's writer, one block at a time, and publish them. ``done`` are the finish
    results (dependencies only). A Zarr group needs no assembly: its blocks wrote their
    own chunks; it is published."""
    from geoseg.prediction.flow import publish_zarr
    from geoseg.prediction.parts import raster_parts

    flow = job.flow
    if flow.zarr:
        return {"zarr": str(publish_zarr(flow))}
    with gdal_env(), SceneWriter(flow, polygons=False) as writer:
        for block, classes, probs in raster_parts(flow.outputs, flow.plan.blocks,
                                                  probabilities=flow.probabilities):
            writer.write_rasters(block, classes, probs)
        return writer.publish()


@portable_errors
def polygons_task(job: SceneJob, *done: BlockDone) -> dict:
    """Merge every block's pieces across seams into the vector file, reading the part
    files in row-major block order (one block row in memory at a time)."""
    from geoseg.prediction.parts import vector_parts

    flow = job.flow
    with SceneWriter(flow, rasters=False) as writer:
        for pieces in vector_parts(flow.outputs, flow.plan.blocks):
            writer.add_pieces(pieces)
        return writer.publish()


def outputs_task(*parts: dict) -> dict:
    """The scene's outputs once the rasters and the polygons are published."""
    out: dict = {}
    for part in parts:
        out.update(part)
    return out


def model_loads(dask_worker: Any = None) -> list[str]:
    """sha256 of every bundle this worker loaded, once per load (run with ``client.run``)."""
    from .worker import model_cache

    return list(model_cache(dask_worker).loads)
