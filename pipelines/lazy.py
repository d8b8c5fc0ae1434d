"""Lazy prediction of a Dask-backed DataArray: the scene's flow as a Dask graph whose
results are DataArrays (classes; probabilities) chunked on the flow's block grid.

Each block is the same steps as the Dask runner's (:mod:`pipelines.tasks`): its region
(block plus halo) sliced from the input's chunks and padded as a boundless read pads,
``predict_block``, ``spill_strips`` to the blocks that need them, ``finish_block`` with the
spills of ``BlockGrid.sources``; the finished block's classes and probabilities are one chunk
of the outputs. No second stitch is written (no ``map_overlap``), so the values are the
file path's, byte for byte. Nothing runs until the caller computes (``.compute()``,
``.to_zarr()``, ``.rio.to_raster()``), on whatever scheduler it uses: a distributed
``Client`` (the model loads once per worker, in the runner's
:class:`~pipelines.worker.ModelCache`) or dask's threads (once per process).

Extra dimensions (``time``, ...) are predicted one slice at a time and stacked back.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import NODATA_CLASS
from geoseg.errors import ConfigError, InvalidInputError
from geoseg.grid import PixelGrid, Window, intersect, nearest_picks
from geoseg.inputs.scene import Scene, valid_values
from geoseg.prediction.options import PredictOptions

from .tasks import MODEL_LOCK, ModelRef

SPATIAL = ("y", "x")


class RechunkedWarning(UserWarning):
    """The input's chunks cross the block grid: it was rechunked to the block step."""


def predict_lazy(array: Any, model: str | Path, *, options: PredictOptions
                 ) -> tuple[Any, Any]:
    """``(classes, probabilities)`` of a Dask-backed DataArray (``band, y, x`` plus any
    extra dimensions), lazy: uint8 classes (y, x) with 255 on nodata, float32
    probabilities (class, y, x) in 0..1, on the input's coordinates and CRS, chunked on the
    block grid. ``model``: a bundle path every worker can read."""
    import xarray as xr

    from geoseg.model.meta import file_sha256, read_meta

    if not isinstance(model, (str, Path)):
        raise ConfigError("a lazy DataArray is predicted with a model bundle's path (every "
                          "worker loads it once), not a loaded ModelBundle")
    meta = read_meta(model)
    options = options.resolved(network=meta.network)
    ref = ModelRef(str(Path(model).resolve()), file_sha256(model))
    band_dim = _band_dim(array)
    extra = [d for d in array.dims if d not in (band_dim, *SPATIAL)]
    if not extra:
        return _predict_slice(array, ref, meta, options)
    said: list = []
    shape = [array.sizes[d] for d in extra]
    results = [_predict_slice(array.isel(dict(zip(extra, index, strict=True))), ref, meta,
                              options, said=said)
               for index in np.ndindex(*shape)]
    classes = [c for c, _ in results]
    probs = [p for _, p in results]
    coords = {d: array.coords[d] for d in extra if d in array.coords}

    def stack(items: list) -> Any:
        import dask.array as da

        first = items[0]
        data = da.stack([item.data for item in items]).reshape((*shape, *first.shape))
        return xr.DataArray(data, dims=(*extra, *first.dims),
                            coords={**coords, **dict(first.coords)}, name=first.name,
                            attrs=first.attrs)

    return stack(classes), stack(probs)


def _band_dim(array: Any) -> str:
    missing = [d for d in SPATIAL if d not in array.dims]
    if missing:
        raise InvalidInputError(f"a DataArray with dims {tuple(array.dims)}: expected y and "
                                "x dims (as rioxarray, odc-stac and stackstac name them)")
    for name in ("band", "bands", "channel"):
        if name in array.dims:
            return name
    raise InvalidInputError(f"a DataArray with dims {tuple(array.dims)}: expected a band "
                            "dim (band, y, x)")


def _georeferencing(array: Any) -> PixelGrid:
    """The array's grid from rioxarray; a DataArray with no CRS or no x/y coordinates to
    place it is refused in one line."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if array.rio.crs is None:
        raise InvalidInputError("the DataArray has no CRS: open it with rioxarray, "
                                "odc-stac or stackstac, or set one with .rio.write_crs()")
    if not all(d in array.coords for d in SPATIAL):
        raise InvalidInputError("the DataArray has no x/y coordinates to place it: open it "
                                "with rioxarray, odc-stac or stackstac, or set them with "
                                ".rio.write_transform()")
    return PixelGrid(array.sizes["y"], array.sizes["x"], array.rio.transform(),
                     array.rio.crs)


def _predict_slice(array: Any, ref: ModelRef, meta: Any, options: PredictOptions, *,
                   said: list | None = None) -> tuple[Any, Any]:
    import dask.array as da

    from geoseg.prediction.flow import block_steps, plan_flow

    band_dim = _band_dim(array)
    array = array.transpose(band_dim, *SPATIAL)
    grid = _georeferencing(array)
    nodata = array.rio.nodata if array.rio.nodata is not None else array.rio.encoded_nodata
    names = tuple(str(v) for v in array.coords[band_dim].values) \
        if band_dim in array.coords and array.coords[band_dim].dtype.kind in "OUS" else ()
    scene = Scene(path=str(array.name or "DataArray"), grid=grid, count=array.sizes[band_dim],
                  dtype=str(array.dtype), nodata=None if nodata is None else float(nodata),
                  data_bands=tuple(range(1, array.sizes[band_dim] + 1)), descriptions=names)
    data = array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, 1024, 1024))
    flow = plan_flow(scene, ".", meta=meta, model_sha256=ref.sha256,
                     options=replace(options, probabilities=True, vectorize=False,
                                     preview=False),
                     sample=lambda bands: _sample(data, bands, scene.nodata))
    plan = flow.plan
    data = _aligned(data, plan.blocks.step, said if said is not None else [])
    bands = [b - 1 for b in plan.bands]
    run = replace(options, probabilities=True)
    spills: dict = {}
    classes: dict = {}
    probs: dict = {}
    for step in block_steps(flow):
        block = step.block
        region = plan.blocks.region(block)
        inner = intersect(region, grid.window)
        assert inner is not None  # a block's region always holds its own window
        rows, cols = inner.slices()
        pixels = data[bands, rows, cols]
        predicted = _delayed(_predict_block)(
            ref, run, flow, step.key, pixels, region, inner, scene.nodata)
        spills[step.key] = _delayed(_spills)(flow, predicted)
        finished = _delayed(_finish)(
            flow, predicted, [spills[k] for k in step.sources])
        w = block.window
        classes[step.key] = da.from_delayed(finished[0], shape=(w.height, w.width),
                                            dtype=np.uint8)
        probs[step.key] = da.from_delayed(finished[1],
                                          shape=(len(meta.classes), w.height, w.width),
                                          dtype=np.uint8)
    blocks = plan.blocks
    class_grid = [[classes[(r, c)] for c in range(blocks.n_cols)] for r in range(blocks.n_rows)]
    prob_grid = [[probs[(r, c)] for c in range(blocks.n_cols)] for r in range(blocks.n_rows)]
    out_classes = da.block(class_grid)
    out_probs = da.block(prob_grid).astype(np.float32) / 255.0
    return _as_dataarrays(array, out_classes, out_probs, [c.name for c in meta.classes])


def _delayed(function: Any) -> Any:
    import dask

    return dask.delayed(function, pure=False, nout=2 if function is _finish else None)


def _aligned(data: Any, step: int, said: list) -> Any:
    """``data`` whose y/x chunks line up with the block grid (each block reads its region
    from few chunks); otherwise rechunked to the block step, said once per call."""
    def fits(chunks: Sequence[int]) -> bool:
        edges = np.cumsum(chunks)[:-1]
        size = chunks[0]
        regular = all(c == size for c in chunks[:-1])
        return bool(regular and (step % size == 0 or size % step == 0)) or \
            bool(np.all(edges % step == 0))

    # an axis of one block reads whole whatever its chunks
    if all(fits(data.chunks[axis]) or data.shape[axis] <= step for axis in (1, 2)):
        return data
    if not said:
        warnings.warn(f"the DataArray's chunks {data.chunksize[1:]} do not line up with "
                      f"geoseg's blocks of {step} px; rechunked to {step} x {step}",
                      RechunkedWarning, stacklevel=4)
        said.append(True)
    return data.rechunk({0: -1, 1: step, 2: step})


def _sample(data: Any, bands: Sequence[int], nodata: float | None) -> np.ndarray:
    """(C, N) valid values of a decimated read of the lazy array (what
    :func:`geoseg.inputs.fit.sample_values` reads from a file: nearest pixels of a grid of
    at most SAMPLE_SIDE a side)."""
    from geoseg.inputs.fit import SAMPLE_SIDE

    height, width = data.shape[1:]
    scale = max(max(height, width) / SAMPLE_SIDE, 1)
    rows = nearest_picks(height, max(1, round(height / scale)))
    cols = nearest_picks(width, max(1, round(width / scale)))
    values = np.asarray(data[[b - 1 for b in bands]][:, rows][:, :, cols].compute())
    valid = np.ones(values.shape[1:], bool)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~np.any(values == values.dtype.type(nodata), axis=0)
    if values.dtype.kind == "f":
        valid &= ~np.any(np.isnan(values), axis=0)
    return values[:, valid]


_LOCAL_MODELS: dict = {}
_LOCAL_LOCK = threading.Lock()


def _bundle(ref: ModelRef, options: PredictOptions) -> Any:
    """The model, loaded once per process: the distributed worker's cache under a Client,
    a process-wide one under dask's threads."""
    from .worker import ModelCache, model_cache

    threads = options.threads
    try:
        from distributed import get_worker

        worker = get_worker()
        cache = model_cache(worker)
        # a worker's environment says OMP_NUM_THREADS=1 (dask's default): the model
        # takes the worker's threads instead, one block at a time (MODEL_LOCK)
        threads = threads or worker.state.nthreads
    except (ImportError, ValueError):  # not on a distributed worker
        with _LOCAL_LOCK:
            cache = _LOCAL_MODELS.setdefault("cache", ModelCache())
    return cache.get(ref.path, ref.sha256, device=options.device, threads=threads,
                     compile=options.compile, batch_size=options.batch_size,
                     runtime=options.runtime)


def _predict_block(ref: ModelRef, options: PredictOptions, flow: Any,
                   key: tuple[int, int], pixels: np.ndarray, region: Window,
                   inner: Window, nodata: float | None) -> Any:
    """Read (from the input's chunks, padded as a boundless read pads) and predict one
    block: :func:`geoseg.prediction.blocks.read_window`'s pixels and validity, then the
    model step the Dask runner's predict task runs."""
    from geoseg.prediction.blocks import predict_block

    plan = flow.plan
    block = plan.blocks.block(*key)
    full = np.zeros((pixels.shape[0], region.height, region.width), pixels.dtype)
    valid = np.zeros((region.height, region.width), bool)
    rows, cols = inner.slices(within=region)
    full[:, rows, cols] = pixels
    valid[rows, cols] = valid_values(pixels, nodata)
    bundle = _bundle(ref, options)
    with MODEL_LOCK:  # one block through the model at a time, on all its threads
        return predict_block(bundle, plan, block, full, valid,
                             batch_size=options.batch_size).on_host()


def _spills(flow: Any, predicted: Any) -> dict:
    from geoseg.prediction.flow import spill_strips

    return spill_strips(flow, predicted)


def _finish(flow: Any, predicted: Any, sources: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from geoseg.prediction.flow import finish_block

    key = (predicted.block.row, predicted.block.col)
    finished = finish_block(flow, predicted, [s[key] for s in sources if key in s])
    probs = finished.probs
    assert probs is not None
    # as the COG path stores them: 0 where the class raster is nodata
    probs = np.where(finished.classes == NODATA_CLASS, np.uint8(0), probs)
    return finished.classes, probs


def _as_dataarrays(like: Any, classes: Any, probabilities: Any,
                   names: list[str]) -> tuple[Any, Any]:
    import xarray as xr

    coords = {d: like.coords[d] for d in SPATIAL if d in like.coords}
    out_classes = xr.DataArray(classes, dims=SPATIAL, coords=coords, name="classes")
    out_probs = xr.DataArray(probabilities, dims=("class", *SPATIAL),
                             coords={**coords, "class": names}, name="probabilities")
    out_classes = out_classes.rio.write_crs(like.rio.crs).rio.write_nodata(NODATA_CLASS)
    out_probs = out_probs.rio.write_crs(like.rio.crs)
    return out_classes, out_probs
