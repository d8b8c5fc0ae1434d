"""Per-scene ``manifest.json`` (written last, atomically) and the resume rule; batch summary.

A scene is complete when ``OUT/<stem>/manifest.json`` exists, says so, names the same model
sha256 and the same output-changing options (``PredictOptions.identity()``) as this run, and
every output it lists exists. The manifest is the last thing written for a scene, via a
temporary name, so its presence means the outputs beside it are whole.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from geoseg import __version__
from geoseg.atomic import replacing
from geoseg.classes import NODATA_CLASS

MANIFEST = "manifest.json"


def manifest_path(folder) -> Path:
    return Path(folder) / MANIFEST


def write_json(path, data: dict) -> Path:
    """Write ``data`` as JSON at ``path`` via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(folder) -> dict | None:
    """The scene's manifest, or None when absent or unreadable."""
    try:
        data = json.loads(manifest_path(folder).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def versions() -> dict:
    """Software versions recorded in manifests."""
    import dask
    import rasterio

    out = {"geoseg": __version__, "python": platform.python_version(),
           "dask": dask.__version__, "rasterio": rasterio.__version__,
           "gdal": rasterio.__gdal_version__}
    try:
        from importlib.metadata import version

        out["torch"] = version("torch")
    except Exception:  # noqa: BLE001 - a missing version is not worth failing a scene
        pass
    return out


def scene_state(folder, *, model_sha256: str, identity: dict) -> str:
    """``complete`` (skip), ``absent`` (no manifest: run; leftovers are partial),
    ``different`` (complete for another model or options) or ``foreign`` (a classes.tif
    geoseg did not write); the last two are replaced only with --overwrite."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("status") != "complete":
        return "foreign" if _foreign_classes(Path(folder) / "classes.tif") else "absent"
    # options a manifest predates were at their defaults (None: the model's) when it was written
    options = {**dict.fromkeys(identity), **(manifest.get("options") or {})}
    if manifest.get("model_sha256") != model_sha256 or options != identity:
        return "different"
    outputs = manifest.get("outputs") or {}
    if not outputs or not all(Path(folder, Path(p).name).is_file() for p in outputs.values()):
        return "absent"
    return "complete"


def scene_manifest(*, scene, options, model_path, model_sha256, plan, outputs, counts,
                   class_names, tiles_run, timings) -> dict:
    """The manifest of a completed scene (JSON-ready)."""
    from dataclasses import asdict

    grid = plan.scene.grid
    config = asdict(options)
    config["bands"] = list(options.bands) if options.bands else None
    return {
        "status": "complete",
        "scene": str(scene),
        "outputs": {k: Path(v).name for k, v in outputs.items()},
        "model": str(model_path),
        "model_sha256": model_sha256,
        "options": options.identity(),
        "config": config,
        "software": versions(),
        "height": grid.height, "width": grid.width,
        "crs": grid.crs.to_string() if grid.crs else None,
        "tile_size": plan.tiles.size, "overlap": plan.tiles.overlap, "stitch": plan.stitch,
        "tta": plan.tta, "tiles_in_grid": len(plan.tiles), "tiles_run": int(tiles_run),
        "blocks": len(plan.blocks), "tiles_per_block": plan.blocks.tiles_per_block,
        "class_pixels": {name: int(counts[cid]) for cid, name in class_names.items()},
        "nodata_pixels": int(counts[NODATA_CLASS]),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _foreign_classes(path: Path) -> bool:
    """True when ``path`` exists and is not a class raster written by geoseg (a run killed
    between publishing classes.tif and its manifest leaves one of ours: that is redone)."""
    if not path.exists():
        return False
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return "GEOSEG_MODEL_SHA256" not in ds.tags()
    except rasterio.errors.RasterioError:
        return True
