"""The Python API: what a notebook or a script calls, the same work as the ``geoseg``
commands.

* :func:`load_model`: a bundle ready to predict, on a device.
* :func:`predict`: a batch of scenes into an output folder, as ``geoseg predict`` runs it
  (same runner choice, resume, outputs, summary).
* :func:`predict_array`: an in-memory image (numpy, or an xarray DataArray with rioxarray
  georeferencing) -> classes and probabilities in memory.
* :func:`vectorize`: a class raster -> polygons, as a GeoDataFrame or a vector file.

Options are :class:`~geoseg.prediction.options.PredictOptions` fields by name (``tta="flips"``,
``stretch=(2, 98)``, ``probabilities=True``, ...). Errors are ``GeosegError`` subclasses
with the one-line messages the commands print. :func:`predict` is the library's one
entry into ``pipelines/`` (the batch, its runners and cluster), imported when it is called;
the rest of the library never imports it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, GeosegError
from .prediction.options import PredictOptions, options_from

if TYPE_CHECKING:
    import geopandas as gpd
    from affine import Affine

    from .model.bundle import ModelBundle

class BatchFailedError(GeosegError, RuntimeError):
    """Scenes of a :func:`predict` batch failed (the others were kept); ``outcomes`` holds
    every scene's result."""

    def __init__(self, message: str, outcomes: list[dict]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def load_model(path: str | os.PathLike, *, device: str = "auto",
               runtime: str = "auto") -> ModelBundle:
    """The bundle at ``path`` on ``device`` (``auto``: CUDA when present) and ``runtime``
    (``auto``: decided as ``geoseg predict`` decides it), in the inference form prediction
    runs; pass it to :func:`predict_array` to load it once for many arrays."""
    from .model.meta import read_meta
    from .model.loading import load_for_prediction
    from .prediction.options import PredictOptions

    options = PredictOptions(device=device, runtime=runtime).resolved(
        network=read_meta(path).network)
    return load_for_prediction(path, device=options.device, runtime=options.runtime)


def predict(scenes: str | os.PathLike | Sequence[str | os.PathLike],
            model: str | os.PathLike, out: str | os.PathLike, *, runner: str = "auto",
            workers: int | None = None, scheduler: str | None = None,
            cluster: str | None = None, assets: Sequence[str] | None = None,
            mosaic: bool = False, crs: str | None = None, resolution: float | None = None,
            warp_resampling: str = "bilinear", errors: str = "raise", verbose: bool = False,
            **options: Any) -> list[dict]:
    """Predict ``scenes`` (paths, folders, globs, ``.txt`` lists, URLs, STAC documents)
    with the bundle file ``model`` into ``out/<scene>/``, as ``geoseg predict`` does: small
    batches in this process, larger ones (or ``workers``/``scheduler``/``cluster``) on
    Dask; complete scenes are skipped on a rerun. Returns one dict per scene (``scene``,
    ``status``: done/skipped/failed, ``outputs``, ``seconds``, ``error``...). A failed
    scene does not stop the others; with ``errors="raise"`` (default) a
    :class:`BatchFailedError` follows at the end, ``errors="keep"`` only reports it."""
    from geoseg_pipelines.batch import batch_inputs, mosaic_warp, run_predict

    if errors not in ("raise", "keep"):
        raise ConfigError(f"errors={errors!r}: expected 'raise' or 'keep'")
    if isinstance(scenes, (str, os.PathLike)):
        scenes = [scenes]
    opts = options_from(options, PredictOptions())
    warp = mosaic_warp(mosaic, crs, resolution, warp_resampling)
    out = Path(out)
    inputs = batch_inputs(list(scenes), out, model=model, options=opts, scheduler=scheduler,
                          cluster=cluster, workers=workers, assets=assets, mosaic=mosaic,
                          warp=warp)
    result = run_predict(inputs, out, options=opts, runner=runner, verbose=verbose,
                         echo=print if verbose else (lambda line: None))
    outcomes = [{"scene": o.scene, "status": o.status, "outputs": dict(o.outputs),
                 "megapixels": o.megapixels, "seconds": o.seconds, "tiles": o.tiles,
                 "error": o.error} for o in result.outcomes]
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed and errors == "raise":
        raise BatchFailedError(f"{len(failed)} of {len(outcomes)} scene(s) failed; first: "
                               f"{failed[0]['error']}", outcomes)
    return outcomes


def predict_array(array: Any, model: str | os.PathLike | ModelBundle, *,
                  transform: Affine | None = None, crs: Any = None,
                  nodata: float | None = None, **options: Any) -> tuple[Any, Any]:
    """Classes and probabilities of an image in memory: ``(classes, probabilities)``.

    ``array``: (bands, height, width) or (height, width) numpy array, or an xarray
    DataArray (``band, y, x``) whose georeferencing rioxarray knows. ``transform``/``crs``
    place it on the ground (needed for the model's pixel size and radiometry checks;
    without a CRS the array is predicted at its own pixel size); ``nodata`` marks pixels
    that are not data. Returns uint8 classes (height, width; 255 where the input is
    nodata) and float32 probabilities (classes, height, width) in 0..1 as numpy, or as
    DataArrays on the input's coordinates (probabilities with a ``class`` coordinate of
    class names) when given a DataArray. The same tiling, stitching and checks as
    ``geoseg predict``: the pixels are those it writes for the same image as a GeoTIFF.

    A Dask-backed DataArray (``rioxarray.open_rasterio(..., chunks=...)``, odc-stac,
    stackstac; extra dims such as ``time`` one slice at a time) is not computed: the
    results are lazy DataArrays chunked on the block grid, computed by the same block steps
    when the caller computes them (:mod:`pipelines.lazy`; ``model`` a bundle path then).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from .model.meta import read_meta
    from .names import CLASSES, PROBABILITIES
    from .prediction.flow import predict_scene

    if _is_dataarray(array) and array.chunks is not None:  # Dask-backed: a lazy graph
        from geoseg_pipelines.lazy import predict_lazy

        array = _with_georeferencing(array, transform, crs, nodata)
        return predict_lazy(array, model, options=options_from(options, PredictOptions()))
    data, transform, crs, nodata = _pixels_and_georeferencing(array, transform, crs, nodata)
    opts = options_from({**options, "probabilities": True, "vectorize": False,
                         "allow_no_crs": crs is None}, PredictOptions())
    with tempfile.TemporaryDirectory(prefix="geoseg-array-") as tmp, \
            warnings.catch_warnings():  # an array without georeferencing, as given
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        scene = Path(tmp) / "array.tif"
        with rasterio.open(scene, "w", driver="GTiff", height=data.shape[1],
                           width=data.shape[2], count=data.shape[0], dtype=data.dtype,
                           crs=crs, transform=transform, nodata=nodata) as ds:
            ds.write(data)
        predict_scene(scene, Path(tmp) / "out", model=model, options=opts)
        folder = Path(tmp) / "out" / "array"
        with rasterio.open(folder / CLASSES) as ds:
            classes = ds.read(1)
        with rasterio.open(folder / PROBABILITIES) as ds:
            probabilities = ds.read().astype(np.float32) / 255.0
    if not _is_dataarray(array):
        return classes, probabilities
    meta = model.meta if hasattr(model, "meta") else read_meta(model)
    return _as_dataarrays(array, classes, probabilities, [c.name for c in meta.classes])


def vectorize(classes: str | os.PathLike, out: str | os.PathLike | None = None,
              **options: Any) -> gpd.GeoDataFrame | dict:
    """Polygons of a class raster (``classes.tif``): a GeoDataFrame when ``out`` is None,
    else written to ``out`` (its extension picks the format, as ``geoseg vectorize -o``)
    and the summary returned. Options are :func:`geoseg.vector.layer.vectorize_raster`'s
    (``min_area``, ``simplify``, ``connectivity``, ``keep_classes``,
    ``probabilities_path``, ``block_size``, ``workers``, ...)."""
    from .names import POLYGONS
    from .vector.layer import vectorize_raster

    if out is not None:
        return vectorize_raster(classes, out, **options)
    import geopandas as gpd

    with tempfile.TemporaryDirectory(prefix="geoseg-vectorize-") as tmp:
        path = Path(tmp) / POLYGONS
        vectorize_raster(classes, path, **options)
        return gpd.read_file(path, engine="pyogrio")


def _is_dataarray(array: Any) -> bool:
    return type(array).__name__ == "DataArray" and hasattr(array, "dims")


def _pixels_and_georeferencing(array: Any, transform: Any, crs: Any, nodata: Any
                               ) -> tuple[np.ndarray, Any, Any, Any]:
    """(bands, height, width) pixels and their transform, CRS and nodata: given, or from a
    DataArray's rioxarray accessor."""
    from affine import Affine

    if _is_dataarray(array):
        rio = getattr(array, "rio", None) if _has_rioxarray() else None
        if rio is not None:
            transform = transform if transform is not None else rio.transform()
            crs = crs if crs is not None else rio.crs
            nodata = nodata if nodata is not None else rio.nodata
        data = np.asarray(array.values)
    elif isinstance(array, np.ndarray):
        data = array
    else:
        raise ConfigError(f"predict_array takes a numpy array or an xarray DataArray, not "
                          f"{type(array).__name__}")
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3 or min(data.shape) == 0:
        raise ConfigError(f"an array of shape {data.shape}: expected (bands, height, width) "
                          "or (height, width)")
    return np.ascontiguousarray(data), transform or Affine.identity(), crs, nodata


def _with_georeferencing(array: Any, transform: Any, crs: Any, nodata: Any) -> Any:
    """``array`` with the given transform, CRS and nodata written on it (rioxarray)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if crs is not None:
        array = array.rio.write_crs(crs)
    if transform is not None:
        array = array.rio.write_transform(transform)
    if nodata is not None:
        array = array.rio.write_nodata(nodata)
    return array


def _has_rioxarray() -> bool:
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
    except ImportError:
        return False
    return True


def _as_dataarrays(like: Any, classes: np.ndarray, probabilities: np.ndarray,
                   names: list[str]) -> tuple[Any, Any]:
    import xarray as xr

    y, x = like.dims[-2:]
    coords = {name: like.coords[name] for name in (y, x) if name in like.coords}
    out_classes = xr.DataArray(classes, dims=(y, x), coords=coords, name="classes",
                               attrs={"_FillValue": 255})
    out_probs = xr.DataArray(probabilities, dims=("class", y, x),
                             coords={**coords, "class": names}, name="probabilities")
    if _has_rioxarray() and like.rio.crs is not None:
        out_classes = out_classes.rio.write_crs(like.rio.crs).rio.write_nodata(255)
        out_probs = out_probs.rio.write_crs(like.rio.crs)
    return out_classes, out_probs
