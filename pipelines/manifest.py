"""Per-scene ``manifest.json`` (written last, atomically), built from the scene's report.

The manifest is the last thing written for a scene, via a temporary name, so its presence
means the outputs beside it are whole (the resume rule in :mod:`pipelines.resume` reads it).
"""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

from geoseg import __version__
from geoseg.atomic import replacing
from geoseg.names import SceneOutputs
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.scene_report import SceneReport


def manifest_path(folder: str | os.PathLike) -> Path:
    return SceneOutputs(Path(folder)).manifest


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON at ``path`` via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The scene's manifest, or None when absent or unreadable."""
    try:
        data = json.loads(manifest_path(folder).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def versions() -> dict:
    """Software versions recorded in manifests (looked up once a process: the package
    metadata scan took 1.4 ms, a scene's manifest each)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict:
    from importlib.metadata import version

    import rasterio

    out = {"geoseg": __version__, "python": platform.python_version(),
           "dask": version("dask"),  # not imported for it: 0.08 s of a local run's start
           "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}
    for package in ("torch", "onnxruntime"):  # the runtimes a scene may have run on
        try:
            out[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing version is not worth failing a scene
            pass
    return out


def scene_manifest(report: SceneReport, *, options: PredictOptions,
                   model_path: str | os.PathLike, timings: dict[str, float]) -> dict:
    """The manifest of a completed scene (JSON-ready): its report, the model, the options
    and software that made it."""
    from dataclasses import asdict

    config = asdict(options)
    config["bands"] = list(options.bands) if options.bands else None
    facts = report.manifest_fields()
    return {
        "status": "complete",
        "scene": facts.pop("scene"),
        "outputs": facts.pop("outputs"),
        "model": str(model_path),
        "model_sha256": report.model_sha256,
        "options": options.identity(),
        "config": config,
        "software": versions(),
        **facts,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
