"""Resume state: which scenes of a batch to run, skip or refuse, and a folder made ready for
a (re)run.

A scene is complete when ``OUT/<stem>/manifest.json`` exists, says so, names the same model
sha256 and the same output-changing options (``PredictOptions.identity()``) as this run, and
every output it lists exists. Scenes are checked and planned on the client from metadata
only (no pixels), into the :class:`~geoseg.prediction.flow.SceneFlow` their tasks run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import GeosegError
from geoseg.names import SceneOutputs
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.scene_report import Tally

from .manifest import manifest_path, read_manifest, scene_manifest, write_json
from .outcomes import SceneOutcome, mark_failed
from .tasks import ModelRef, SceneJob

if TYPE_CHECKING:
    from geoseg.model.meta import BundleMeta


@dataclass
class PlannedScene:
    """A scene after planning: ``job`` is set when it is to run; otherwise its outcome says
    ``skipped`` or ``failed`` (one error line)."""

    outcome: SceneOutcome
    job: SceneJob | None = None
    plan_seconds: float = 0.0


def plan_scenes(scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                model_path: str | os.PathLike, meta: BundleMeta, model_sha256: str,
                options: PredictOptions) -> list[PlannedScene]:
    """Check and plan every scene on the client (metadata only, no pixels)."""
    return list(iter_plans(scene_paths, out_dir, model_path=model_path, meta=meta,
                           model_sha256=model_sha256, options=options))


def iter_plans(scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
               model_path: str | os.PathLike, meta: BundleMeta, model_sha256: str,
               options: PredictOptions,
               names: dict[str, str] | None = None) -> Iterator[PlannedScene]:
    """:func:`plan_scenes` one scene at a time, in input order (the Dask runner plans a
    scene when it is about to submit it: the client holds no plan of the scenes still to
    come). ``names``: the scenes' folder names (:func:`~geoseg.inputs.sources.folder_names`
    of every path), when the caller has them."""
    from geoseg.inputs.scene import open_scene
    from geoseg.inputs.sources import folder_names
    from geoseg.prediction.flow import plan_flow

    identity = options.identity()
    names = names or folder_names(scene_paths)  # scenes sharing a file name: distinct folders
    for scene_path in scene_paths:
        path = os.fspath(scene_path)
        folder = Path(out_dir) / names[path]
        planned = PlannedScene(SceneOutcome(path, folder=str(folder)))
        outcome = planned.outcome
        start = time.perf_counter()
        try:
            scene = open_scene(path, allow_no_crs=options.allow_no_crs)
            flow = plan_flow(scene, out_dir, meta=meta, model_sha256=model_sha256,
                             options=options, folder=folder)
            outcome.megapixels = round(scene.grid.height * scene.grid.width / 1e6, 3)
            outcome.tiles = len(flow.plan.tiles)
            status = scene_state(folder, model_sha256=model_sha256, identity=identity)
            if status == "complete" and not options.overwrite:
                outcome.status = "skipped"
                yield planned
                continue
            if status == "different" and not options.overwrite:
                raise GeosegError(f"{folder}: holds outputs of "
                                  f"{what_differs(folder, model_sha256, identity)}; pass "
                                  "--overwrite to replace them, or choose another --out")
            if status == "foreign" and not options.overwrite:
                raise GeosegError(f"{SceneOutputs(folder).classes}: already exists and was "
                                  "not written by geoseg; pass --overwrite to replace it, or "
                                  "choose another --out")
        except (GeosegError, OSError) as exc:
            mark_failed(outcome, exc)
            yield planned
            continue
        planned.job = SceneJob(flow, ModelRef(str(model_path), model_sha256), options)
        planned.plan_seconds = time.perf_counter() - start
        yield planned


def parts_identity(job: SceneJob) -> dict:
    """What a scene's part files depend on: parts written under another identity are never
    reused."""
    from geoseg import __version__

    plan = job.flow.plan
    return {"geoseg": __version__, "model_sha256": job.model.sha256,
            "options": job.options.identity(), "height": plan.scene.grid.height,
            "width": plan.scene.grid.width, "tile_size": plan.tiles.size,
            "overlap": plan.tiles.overlap, "tiles_per_block": plan.blocks.tiles_per_block}


def prepare_folder(job: SceneJob, *, out_dir: str | os.PathLike) -> frozenset[tuple[int, int]]:
    """Make the scene folder ready for a (re)run and return the blocks whose parts an
    interrupted earlier run of the same identity left complete (they are reused).

    The manifest goes first; staging leftovers are removed; parts of another identity are
    removed. The disk must have room for the scene (:func:`geoseg.prediction.flow.disk_estimate`).
    """
    from geoseg.outputs.rasters import check_free_space, prepare_output
    from geoseg.prediction.flow import disk_estimate
    from geoseg.prediction.parts import (
        clean_scene_folder,
        finished_blocks,
        read_identity,
        remove_leftovers,
        write_identity,
    )

    outputs = job.flow.outputs
    prepare_output(outputs.classes, overwrite=True)
    outputs.manifest.unlink(missing_ok=True)
    identity = parts_identity(job)
    if outputs.parts.is_dir() and read_identity(outputs) == identity:
        remove_leftovers(outputs.folder)
        reuse = frozenset(finished_blocks(outputs, job.flow.plan.blocks))
    else:
        clean_scene_folder(outputs.folder)
        reuse = frozenset()
    check_free_space(Path(out_dir), outputs.folder, needed=disk_estimate(job.flow))
    outputs.parts.mkdir(exist_ok=True)
    write_identity(outputs, identity)
    return reuse


def complete_scene(planned: PlannedScene, tally: Tally, outputs: dict, *,
                   started: float) -> None:
    """A scene's outputs are published: its parts go, its manifest (from the scene report)
    is written last, and its outcome says done. The same for both runners."""
    from geoseg.prediction.flow import scene_report
    from geoseg.prediction.parts import clean_scene_folder

    job, outcome = planned.job, planned.outcome
    assert job is not None
    seconds = time.perf_counter() - started
    report = scene_report(job.flow, tally, outputs, seconds=seconds)
    manifest = scene_manifest(report, options=job.options, model_path=job.model.path,
                              timings={"plan_seconds": planned.plan_seconds,
                                       "wall_seconds": seconds})
    clean_scene_folder(job.flow.outputs.folder)
    write_scene_item(job, outputs)
    write_json(manifest_path(job.flow.outputs.folder), manifest)
    outcome.status, outcome.seconds, outcome.outputs = "done", round(seconds, 3), outputs


def write_scene_item(job: SceneJob, outputs: dict) -> None:
    """``item.json`` beside a scene's outputs (before its manifest: the manifest comes
    last); a scene made from a STAC item links back to it."""
    from geoseg import __version__
    from geoseg.classes import NODATA_CLASS
    from geoseg.inputs.scene import read_header
    from geoseg.inputs.stac import STAC_DATETIME_TAG, STAC_TAG
    from geoseg.outputs.stac_items import scene_item, write_item

    flow = job.flow
    tags: dict = {}
    if flow.scene.lower().endswith(".vrt"):  # a STAC item's VRT names the item (geoseg.inputs.stac)
        tags = read_header(flow.scene).tags
    stamp = tags.get(STAC_DATETIME_TAG)
    item = scene_item(stem=flow.outputs.folder.name, grid=flow.plan.scene.grid,
                      outputs=outputs, classes=flow.classes, nodata=NODATA_CLASS,
                      model_path=job.model.path, model_sha256=job.model.sha256,
                      source=tags.get(STAC_TAG) or None, version=__version__,
                      when=datetime.fromisoformat(stamp) if stamp else None)
    write_item(item, flow.outputs.folder)


def remove_scene_leftovers(folder: Path) -> None:
    """Parts, staging files and, when nothing else is left, the scene's folder (the run
    made it; an unfinished or failed scene leaves nothing behind)."""
    from geoseg.prediction.parts import clean_scene_folder

    clean_scene_folder(folder)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def scene_state(folder: str | os.PathLike, *, model_sha256: str, identity: dict) -> str:
    """``complete`` (skip), ``absent`` (no manifest: run; leftovers are partial),
    ``different`` (complete for another model or options) or ``foreign`` (a classes.tif
    geoseg did not write); the last two are replaced only with --overwrite."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("status") != "complete":
        return "foreign" if _foreign_classes(SceneOutputs(Path(folder)).classes) else "absent"
    options = manifest_options(manifest, identity)
    if manifest.get("model_sha256") != model_sha256 or options != identity:
        return "different"
    outputs = manifest.get("outputs") or {}
    if not outputs or not all(Path(folder, Path(p).name).is_file() for p in outputs.values()):
        return "absent"
    return "complete"


def manifest_options(manifest: dict, identity: dict) -> dict:
    """The options a manifest was written with, in ``identity``'s keys: options it predates
    were at the library's defaults then (options added later default to what geoseg did
    before them), so outputs of an older geoseg are not redone for nothing."""
    from geoseg.prediction.options import PredictOptions

    defaults = {**PredictOptions().identity(), "runtime": "torch"}  # torch, before runtimes
    return {**{k: defaults.get(k) for k in identity}, **(manifest.get("options") or {})}


def what_differs(folder: str | os.PathLike, model_sha256: str, identity: dict) -> str:
    """What a complete scene's manifest says was made differently: ``another model (sha256
    1a2b3c4d...)`` and/or ``other options: tta none (now flips), ...``."""
    manifest = read_manifest(folder) or {}
    parts = []
    if manifest.get("model_sha256") != model_sha256:
        parts.append(f"another model (sha256 {str(manifest.get('model_sha256'))[:12]}, now "
                     f"{model_sha256[:12]})")
    options = manifest_options(manifest, identity)
    changed = [f"{key} {_shown(options.get(key))} (now {_shown(value)})"
               for key, value in identity.items() if options.get(key) != value]
    if changed:
        parts.append("other options: " + ", ".join(changed))
    return " and ".join(parts) or "another run"


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _foreign_classes(path: Path) -> bool:
    """True when ``path`` exists and is not a class raster written by geoseg (a run killed
    between publishing classes.tif and its manifest leaves one of ours: that is redone)."""
    if not path.exists():
        return False
    import rasterio

    from geoseg.inputs.scene import open_raster

    try:
        with open_raster(path) as ds:
            return "GEOSEG_MODEL_SHA256" not in ds.tags()
    except rasterio.errors.RasterioError:
        return True
