"""Many scenes -> blocks -> Dask tasks -> outputs on shared storage; resumable.

The graph of one scene (block ``(r, c)`` in row-major order)::

    predict(r, c) --> spills(r, c) ----------------------> finish(r+1, c), (r, c+1), (r+1, c+1)
          '-----------------------------------------------> finish(r, c) -> part files
    finish(all blocks) --> assemble (parts -> classes.tif [+ probabilities.tif], COG)

With --vectorize, after assemble (the class raster is published)::

    assemble --> vector-plan --> polygonize(i) for every block i of classes.tif (its pieces
                                 and edge strips -> a part file)
                                        '--> vector-write (reads the parts a block row at a
                                             time: seam merge -> polygons.gpkg, streamed)

``predict`` holds the block's int32 accumulator on its worker; ``finish`` is scheduled there
(its largest input) and pulls only the neighbours' spill strips. Earlier blocks and scenes
get higher priority, so a block finishes right after it is computed and few accumulators
wait in memory; every block of every scene is a task, so a batch keeps all workers busy and
one large scene spreads over the cluster. The client plans scenes (metadata only), writes
each scene's ``manifest.json`` last, and ``OUT/summary.json`` at the end.
"""

from __future__ import annotations

import dataclasses

import glob
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from geoseg.errors import GeosegError, InputNotFoundError

from .manifest import manifest_path, scene_manifest, scene_state, versions, write_json
from .tasks import ModelRef, SceneJob

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass
class SceneOutcome:
    """One row of the batch summary."""

    scene: str
    status: str = "pending"
    """``done``, ``skipped`` or ``failed``."""
    megapixels: float = 0.0
    seconds: float = 0.0
    error: str = ""
    tiles: int = 0
    outputs: dict = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """The error itself (for --debug); not written to the summary."""


def expand_inputs(items) -> list[Path]:
    """Scene paths from files, folders (their rasters, sorted), glob patterns and text
    files of paths (one a line, ``#`` comments; relative to the text file's folder).
    Duplicates are dropped, order is kept. Missing paths are kept: they fail alone."""
    out: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            out += sorted(p for p in path.iterdir()
                          if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entry = Path(line)
                    out.append(entry if entry.is_absolute() else path.parent / entry)
        elif any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputNotFoundError(f"{text}: the pattern matches no file; check it")
            out += [p for p in matches if p.is_file()]
        else:
            out.append(path)
    seen, unique = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def error_line(exc: BaseException) -> str:
    """One line for the summary: geoseg's own message, or the type and first line."""
    if isinstance(exc, GeosegError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass
class _Scene:
    """Client-side state of a scene being run."""

    outcome: SceneOutcome
    job: SceneJob | None = None
    finishes: list = field(default_factory=list)
    vector: list = field(default_factory=list)
    """Vectorization futures before the final one (plan, polygonize per block)."""
    final: object = None
    tiles_run: int = 0
    blocks_left: int = 0
    counts: object = None
    started: float = 0.0
    plan_seconds: float = 0.0


def plan_scenes(scene_paths, out_dir, *, model_path, meta, model_sha256, options):
    """Check and plan every scene on the client (metadata only, no pixels).

    Returns ``[_Scene]``: planned (``job`` set), ``skipped`` or ``failed`` (one error line).
    """
    from geoseg.predict import make_plan, scene_dir
    from geoseg.scene import open_scene

    identity, stems, scenes = options.identity(), {}, []
    for path in scene_paths:
        outcome = SceneOutcome(str(path))
        state = _Scene(outcome)
        scenes.append(state)
        start = time.perf_counter()
        folder = scene_dir(out_dir, path)
        try:
            if folder.name in stems:
                raise GeosegError(f"{path}: has the same stem as {stems[folder.name]}, so both "
                                  f"would write {folder}; rename one")
            stems[folder.name] = path
            scene = open_scene(path, allow_no_crs=options.allow_no_crs)
            plan = make_plan(scene, meta, options)
            outcome.megapixels = round(scene.grid.height * scene.grid.width / 1e6, 3)
            outcome.tiles = len(plan.tiles)
            status = scene_state(folder, model_sha256=model_sha256, identity=identity)
            if status == "complete" and not options.overwrite:
                outcome.status = "skipped"
                continue
            if status == "different" and not options.overwrite:
                raise GeosegError(f"{folder}: holds outputs of another model or other "
                                  "options (see its manifest.json); pass --overwrite to "
                                  "replace them, or choose another --out")
            if status == "foreign" and not options.overwrite:
                raise GeosegError(f"{folder / 'classes.tif'}: already exists and was not "
                                  "written by geoseg; pass --overwrite to replace it, or "
                                  "choose another --out")
        except (GeosegError, OSError) as exc:
            _mark_failed(outcome, exc)
            continue
        state.job = SceneJob(str(path), str(folder), ModelRef(str(model_path), model_sha256),
                             plan, options)
        state.plan_seconds = time.perf_counter() - start
    return scenes


def _mark_failed(outcome: SceneOutcome, exc: BaseException) -> None:
    outcome.status, outcome.error, outcome.exception = "failed", error_line(exc), exc


def _prepare_folder(job: SceneJob) -> None:
    """Make the scene folder ready for a (re)run: manifest first out, leftovers removed,
    an empty parts folder (tasks of a cancelled scene cannot recreate it)."""
    from geoseg.parts import clean_scene_folder
    from geoseg.writers import prepare_output

    prepare_output(Path(job.folder) / "classes.tif", overwrite=True)
    manifest_path(job.folder).unlink(missing_ok=True)
    clean_scene_folder(job.folder)
    job.parts.mkdir()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_cluster_device(client, device: str) -> str:
    """``auto`` becomes one device for the whole batch: ``cuda`` when every worker has
    CUDA, else ``cpu``, so no scene mixes GPU (autocast) and CPU blocks. Without a client
    (a dry run) this machine answers, as for the default local cluster."""
    if device != "auto":
        return device
    if client is None:
        return "cuda" if _cuda_available() else "cpu"
    found = list(client.run(_cuda_available).values())
    return "cuda" if found and all(found) else "cpu"


def model_resources(client, device: str) -> dict | None:
    """``{"GPU": 1}`` for model tasks when they run on CUDA and some worker offers a GPU
    resource; None otherwise (a constraint no worker satisfies would hang the batch)."""
    if device == "cpu":
        return None
    workers = client.scheduler_info().get("workers", {}).values()
    if workers and not any("GPU" in (w.get("resources") or {}) for w in workers):
        return None
    return {"GPU": 1}


def submit_scene(client, state: _Scene, *, meta, tags: dict, resources, token: str,
                 priority: int) -> int:
    """Submit one scene's graph (see the module docstring); returns the next priority."""
    from . import tasks

    job = state.job
    blocks = job.plan.blocks
    name = f"{Path(job.scene).stem}-{token}"
    spills = {}
    state.finishes = []
    for block in blocks.blocks():
        r, c = block.row, block.col
        result = client.submit(tasks.predict_block_task, job, r, c,
                               key=f"predict-{name}-{r}-{c}",
                               resources=resources, priority=priority)
        spills[(r, c)] = client.submit(tasks.spills_task, job, result,
                                       key=f"spills-{name}-{r}-{c}", priority=priority)
        neighbours = [spills[k] for k in ((r - 1, c - 1), (r - 1, c), (r, c - 1)) if k in spills]
        state.finishes.append(client.submit(tasks.finish_task, job, result, *neighbours,
                                            key=f"finish-{name}-{r}-{c}", priority=priority))
        priority -= 1
    final = client.submit(tasks.assemble_task, job, meta, tags, *state.finishes,
                          key=f"assemble-{name}", priority=priority)
    state.vector = []
    if job.options.vectorize:
        from geoseg.vectorize import block_windows

        vplan = client.submit(tasks.vectorize_plan_task, job, final,
                              key=f"vector-plan-{name}", priority=priority)
        count = len(block_windows(job.plan.scene.grid, block_size=job.options.block_size))
        polys = [client.submit(tasks.polygonize_task, job, vplan, i,
                               key=f"polygonize-{name}-{i}", priority=priority)
                 for i in range(count)]
        state.vector = [vplan, *polys]
        final = client.submit(tasks.vectorize_write_task, vplan, final, *polys,
                              key=f"vector-write-{name}", priority=priority)
    state.final = final
    state.blocks_left = len(blocks)
    return priority - 1


def run_batch(client, scene_paths, out_dir, *, model, options, progress=None,
              echo=None, on_failure=None, model_sha256: str | None = None
              ) -> list[SceneOutcome]:
    """Predict every scene of ``scene_paths`` into ``out_dir`` on ``client``'s cluster.

    ``model`` is a bundle path on storage the workers share. Scenes whose outputs are
    complete for this model and options are skipped (unless ``options.overwrite``); a scene
    that fails is recorded with one error line and the others go on. ``progress`` is a
    :class:`~pipelines.progress.TileProgress`; ``echo`` prints a line per finished scene,
    ``on_failure(outcome)`` is called as each scene fails. ``model_sha256`` spares hashing
    the model again when the caller has (the CLI, for its summary).
    Returns one :class:`SceneOutcome` per scene, in input order.
    """
    import numpy as np
    from distributed import as_completed

    from geoseg.model import file_sha256, read_meta

    meta = read_meta(model)
    sha = model_sha256 or file_sha256(model)
    options = dataclasses.replace(options, device=resolve_cluster_device(client, options.device))
    scenes = plan_scenes(scene_paths, out_dir, model_path=Path(model).resolve(), meta=meta,
                         model_sha256=sha, options=options)
    resources = model_resources(client, options.device)
    token, priority = uuid.uuid4().hex[:8], 0
    owner = {}
    class_names = {c.id: c.name for c in meta.classes}
    for state in scenes:
        if state.job is None:
            if echo and state.outcome.status == "skipped":
                echo(f"{state.outcome.scene}: complete for this model and options, skipped")
            if on_failure and state.outcome.status == "failed":
                on_failure(state.outcome)
            continue
        try:
            _prepare_folder(state.job)
        except (GeosegError, OSError) as exc:
            _mark_failed(state.outcome, exc)
            state.job = None
            if on_failure:
                on_failure(state.outcome)
            continue
        plan = state.job.plan
        tags = plan.tags(meta, sha)
        state.started = time.perf_counter()
        state.counts = np.zeros(256, np.int64)
        priority = submit_scene(client, state, meta=meta, tags=tags, resources=resources,
                                token=token, priority=priority)
        if progress is not None:
            progress.add_total(len(plan.tiles))
        for future in (*state.finishes, state.final):
            owner[future.key] = state
    pending = [f for s in scenes if s.job for f in (*s.finishes, s.final)]
    for future in as_completed(pending):
        state = owner.pop(future.key, None)
        if state is None or state.outcome.status == "failed":
            continue
        try:
            # A result lost with a worker is recomputed by the scheduler; result() waits.
            value = future.result()
        except Exception as exc:  # noqa: BLE001 - any task error fails its scene alone
            _fail(client, state, exc)
            if on_failure:
                on_failure(state.outcome)
            continue
        if future is state.final:
            _complete(state, value, sha=sha, class_names=class_names)
            if echo:
                o = state.outcome
                echo(f"{o.scene}: {o.tiles} tiles in {o.seconds:.1f} s -> "
                     f"{o.outputs.get('classes')}")
        else:
            state.tiles_run += value.tiles_run
            state.counts += value.counts
            if progress is not None:
                progress.advance(value.n_tiles)
    return [s.outcome for s in scenes]


def _fail(client, state: _Scene, exc: BaseException) -> None:
    from geoseg.parts import clean_scene_folder

    _mark_failed(state.outcome, exc)
    state.outcome.seconds = round(time.perf_counter() - state.started, 3)
    client.cancel([*state.finishes, *state.vector, state.final])
    state.finishes, state.vector, state.final = [], [], None
    clean_scene_folder(state.job.folder)


def _complete(state: _Scene, outputs: dict, *, sha: str, class_names: dict) -> None:
    from geoseg.parts import clean_scene_folder

    job, outcome = state.job, state.outcome
    seconds = time.perf_counter() - state.started
    manifest = scene_manifest(scene=job.scene, options=job.options, model_path=job.model.path,
                              model_sha256=sha, plan=job.plan, outputs=outputs,
                              counts=state.counts, class_names=class_names,
                              tiles_run=state.tiles_run,
                              timings={"plan_seconds": state.plan_seconds,
                                       "wall_seconds": seconds})
    clean_scene_folder(job.folder)
    write_json(manifest_path(job.folder), manifest)
    state.finishes, state.vector, state.final = [], [], None
    outcome.status, outcome.seconds, outcome.outputs = "done", round(seconds, 3), outputs


def write_summary(path, outcomes, *, model, model_sha256: str, options,
                  seconds: float) -> Path:
    """``OUT/summary.json``: the batch's scenes, statuses and errors."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    return write_json(path, {
        "model": str(model), "model_sha256": model_sha256,
        "options": options.identity(), "software": versions(),
        "seconds": round(seconds, 3), "counts": counts,
        "scenes": [{f.name: getattr(o, f.name) for f in fields(o) if f.name != "exception"}
                   for o in outcomes]})


def format_table(outcomes) -> str:
    """The end-of-run table: scene, status, megapixels, seconds, error."""
    rows = [("scene", "status", "MPix", "seconds", "error")]
    rows += [(Path(o.scene).name, o.status, f"{o.megapixels:.2f}", f"{o.seconds:.1f}",
              o.error) for o in outcomes]
    return _align(rows)


def _align(rows) -> str:
    """Rows of strings as left-aligned columns; the last column (errors) is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(f"{v:<{w}}" for v, w in zip(r, widths)) + "  "
                      + r[-1]).rstrip() for r in rows)


def dry_run_table(scene_paths, out_dir, *, model, options,
                  model_sha256: str | None = None) -> str:
    """What a run would do, per scene (run, skip or fail, tiles, blocks); writes nothing.
    ``auto`` is resolved on this machine, as a run on the default local cluster would."""
    from geoseg.model import file_sha256, read_meta

    options = dataclasses.replace(options, device=resolve_cluster_device(None, options.device))
    scenes = plan_scenes(scene_paths, out_dir, model_path=Path(model).resolve(),
                         meta=read_meta(model), model_sha256=model_sha256 or file_sha256(model),
                         options=options)
    rows = [("scene", "action", "MPix", "tiles", "blocks", "error")]
    for s in scenes:
        o = s.outcome
        action = "run" if s.job else ("skip" if o.status == "skipped" else "fail")
        blocks = str(len(s.job.plan.blocks)) if s.job else ""
        rows.append((Path(o.scene).name, action, f"{o.megapixels:.2f}", str(o.tiles), blocks,
                     o.error))
    return _align(rows)
