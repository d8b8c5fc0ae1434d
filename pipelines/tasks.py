"""The functions Dask runs on workers: one block, its spills, its finish, a scene's assembly,
and vectorization (a plan, one polygonize task per block, one merge/write per scene).

Task arguments are small frozen values (a :class:`SceneJob`, block indexes); the only large
values that travel are a block's accumulator (kept on the worker that computed it, where its
finish task is scheduled) and spill strips (at most ``overlap`` pixels wide). The model is
loaded once per worker process and cached by the bundle file's sha256 (:func:`worker_bundle`),
never pickled into a task.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from geoseg.config import PredictOptions
# the bounded GDAL block cache of in-process prediction: memory must not grow with the
# scene on a worker either
from geoseg.predict import Plan, gdal_env

_BUNDLES: dict = {}
_BUNDLES_LOCK = threading.Lock()
_LOADS: list = []


@dataclass(frozen=True)
class ModelRef:
    """Which model a task needs: a path on shared storage and the sha256 it must have."""

    path: str
    sha256: str


@dataclass(frozen=True)
class SceneJob:
    """Everything a scene's tasks need; small enough to send with every task."""

    scene: str
    folder: str
    model: ModelRef
    plan: Plan
    options: PredictOptions

    @property
    def parts(self) -> Path:
        from geoseg.parts import parts_folder

        return parts_folder(self.folder)


def worker_bundle(model: ModelRef, *, device: str, threads: int | None):
    """The loaded bundle for ``model`` in this process (loaded on first use, then cached by
    sha256; a file whose hash changed since planning is refused)."""
    with _BUNDLES_LOCK:
        key = (model.sha256, device)
        bundle = _BUNDLES.get(key)
        if bundle is None:
            import torch

            from geoseg.errors import BundleError
            from geoseg.model import load_bundle, resolve_device

            if threads:
                torch.set_num_threads(threads)
            bundle = load_bundle(model.path, device=resolve_device(device))
            if bundle.sha256 != model.sha256:
                raise BundleError(f"{model.path}: changed while the batch was running "
                                  f"(sha256 {bundle.sha256[:12]}, expected "
                                  f"{model.sha256[:12]}); rerun with a fixed model file")
            _BUNDLES[key] = bundle
            _LOADS.append(model.sha256)
        return bundle


def model_loads() -> list[str]:
    """sha256 of every bundle this process loaded, once per load (for tests and
    diagnostics: a model loaded once per process appears once)."""
    return list(_LOADS)


def predict_block_task(job: SceneJob, row: int, col: int):
    """Read block ``(row, col)`` with its halo and run its tiles: a ``BlockResult``."""
    import rasterio

    from geoseg.predict import predict_block, read_block

    options = job.options
    bundle = worker_bundle(job.model, device=options.device, threads=options.threads)
    block = job.plan.blocks.block(row, col)
    with gdal_env(), rasterio.open(job.plan.scene.path) as ds:
        pixels, valid = read_block(ds, job.plan, block)
    return predict_block(bundle, job.plan, block, pixels, valid,
                         batch_size=options.batch_size)


def spills_task(job: SceneJob, result) -> dict:
    """The strips of a computed block that belong to later blocks (see ``stitch.spills``)."""
    from geoseg.stitch import spills

    return spills(result.acc, job.plan.blocks, result.block)


def finish_task(job: SceneJob, result, *neighbour_spills: dict):
    """Finish a block with the strips its upper/left neighbours sent; write its parts."""
    from geoseg.parts import finish_to_parts

    key = (result.block.row, result.block.col)
    incoming = [spill[key] for spill in neighbour_spills if key in spill]
    return finish_to_parts(result.acc, result.block, incoming, result.valid,
                           folder=job.parts, probabilities=job.options.probabilities,
                           tiles_run=result.tiles_run)


def assemble_task(job: SceneJob, meta, tags: dict, *done) -> dict:
    """Stream the scene's parts into ``classes.tif`` (+ ``probabilities.tif``), one block at
    a time, and publish them. ``meta`` is the model's, read once on the client; ``done``
    are the finish results (dependencies only)."""
    from geoseg.parts import assemble
    from geoseg.writers import class_output, probability_output

    grid, folder = job.plan.scene.grid, Path(job.folder)
    outputs = {}
    with gdal_env(), class_output(folder / "classes.tif", grid, meta, tags) as out:
        outputs["classes"] = str(assemble(out, job.plan.blocks, job.parts, "classes"))
    if job.options.probabilities:
        with gdal_env(), probability_output(folder / "probabilities.tif", grid, meta, tags) as out:
            outputs["probabilities"] = str(assemble(out, job.plan.blocks, job.parts,
                                                    "probabilities"))
    return outputs


def vectorize_plan_task(job: SceneJob, outputs: dict):
    """Check the published class raster and plan its polygonization
    (``geoseg.vectorize.plan_vectorize``), with the same block size and options as the
    in-process path, so the result equals it. ``outputs`` is the assemble result."""
    from geoseg.vectorize import plan_vectorize

    return plan_vectorize(outputs["classes"], Path(job.folder) / "polygons.gpkg",
                          probabilities_path=outputs.get("probabilities"), overwrite=True,
                          allow_no_crs=job.options.allow_no_crs,
                          block_size=job.options.block_size)


def polygonize_task(job: SceneJob, plan, index: int) -> str:
    """Polygonize block ``index`` of the plan and save its ``BlockResult`` as a part file
    (``geoseg.vectorize.save_block``) in the scene's parts folder; returns its path. Block
    results wait on shared storage, not in worker memory, until the merge reads them."""
    from geoseg.vectorize import polygonize_block, save_block

    w = plan.jobs[index].window
    return str(save_block(polygonize_block(plan.jobs[index]),
                          job.parts / f"vector-r{w.row}-c{w.col}.npz"))


def vectorize_write_task(plan, outputs: dict, *parts: str) -> dict:
    """Merge the blocks' pieces across seams and write ``polygons.gpkg``
    (``geoseg.vectorize.write_vectorized``), reading the part files in row-major block order
    (``parts`` follow ``plan.jobs``), so one block row is in memory at a time; returns the
    scene's outputs."""
    from geoseg.vectorize import load_block, write_vectorized

    write_vectorized(plan, (load_block(p) for p in parts))
    return {**outputs, "polygons": str(plan.out_path)}
