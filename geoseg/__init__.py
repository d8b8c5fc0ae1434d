"""geoseg: segment satellite and aerial scenes of any size into georeferenced classes.

The Python API (see the README's "Python" section)::

    import geoseg
    model = geoseg.load_model("models/buildings.safetensors")
    classes, probabilities = geoseg.predict_array(image, model, transform=t, crs="EPSG:26986")
    geoseg.predict(["a.tif", "b.tif"], "model.safetensors", "out/", tta="flips")
    polygons = geoseg.vectorize("out/a/classes.tif")      # a GeoDataFrame

The library is pure functions and small frozen values; it never imports dask (the Dask
orchestration lives in ``pipelines/``, installed as ``geoseg_pipelines``) and imports torch
only in the model package and the training loop. The API's names are imported on first use,
so ``import geoseg`` stays light.

Layout, in the order of the flow (tests/test_layout.py holds it): the shared values at the
top (errors, config, classes, grid, tiling, names, atomic), then ``model``, ``inputs``,
``outputs``, ``vector``, ``prediction``, ``training`` and ``api``. A module may import
its own stage and the stages before it, never a later one, and no two modules import each
other, lazily or for types only; each package's docstring says what it owns. The shared
modules may import only each other; ``api`` alone may reach into ``pipelines`` (its batch
function runs the CLI's runners).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["BatchFailedError", "GeosegError", "PredictOptions", "__version__", "load_model",
           "predict", "predict_array", "vectorize"]

_HOMES = {"load_model": "api", "predict": "api", "predict_array": "api", "vectorize": "api",
          "BatchFailedError": "api", "GeosegError": "errors",
          "PredictOptions": "prediction.options"}


def __getattr__(name: str) -> Any:
    """The API's names, imported from their modules on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
