"""The local runner for a batch: every scene in this process
(``geoseg.prediction.flow.run_local``), no cluster to start.

For small batches the seconds a local Dask cluster takes to start and stop are most of the
wall time; the same flow run in-process writes the same bytes (both runners call the same
step functions), the same manifests and summary, and keeps the batch's rules: complete
scenes skipped, a bad scene fails alone, Ctrl-C keeps finished scenes. Torch uses every
core in this process. A scene's tail (its COGs and overviews, preview and vector file) is
published on a thread of its own while the next scene's blocks run, so the model (a GPU)
does not wait for it; its manifest is written once it is published.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import GeosegError
from geoseg.inputs.scene import gdal_env
from geoseg.prediction.options import PredictOptions

from .outcomes import BatchInterrupted, SceneOutcome, announce_unplanned, mark_failed
from .resume import (
    PlannedScene,
    complete_scene,
    plan_scenes,
    prepare_folder,
    remove_scene_leftovers,
)

LOCAL_MAX_PIXELS = 16384 * 16384
"""Batches up to this many scene pixels in all (268 MPix) run in-process by default
(``--runner auto``) when no cluster is asked for. On one machine the in-process runner is
the faster one: torch uses every core (or the GPU) in one process that loads the model once,
while a local cluster starts worker processes, loads the model in each and passes blocks
through part files (4096^2, Unet r18, 2 cores: 38.7 s in-process against 53.9 s on a local
cluster, benchmarks/bench_throughput.py). Above it, a batch goes to a local Dask cluster,
whose part files let an interrupted run resume finished blocks: at a CPU's ~0.5 MPix/s such
a batch runs for minutes to hours, where the cluster's start is under 2% of the time."""


def batch_pixels(scene_paths: Sequence[str | os.PathLike]) -> int:
    """Pixels of the scenes that can be opened (headers only; bad files count 0)."""
    from geoseg.inputs.scene import read_header

    total = 0
    for path in scene_paths:
        try:
            grid = read_header(path).grid
        except (GeosegError, OSError):
            continue
        total += grid.height * grid.width
    return total


def run_batch_local(scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                    model: str | os.PathLike, options: PredictOptions, progress: Any = None,
                    echo: Callable[[str], None] | None = None,
                    on_failure: Callable[[SceneOutcome], None] | None = None,
                    model_sha256: str | None = None,
                    stop: threading.Event | None = None) -> list[SceneOutcome]:
    """:func:`pipelines.run.run_batch` without a cluster: the same planning, outputs,
    manifests and outcomes, scenes one after another in input order."""
    from geoseg.model.meta import file_sha256, read_meta
    from geoseg.model.loading import load_for_prediction
    from geoseg.prediction.flow import run_local

    stop = stop or threading.Event()
    meta = read_meta(model)
    sha = model_sha256 or file_sha256(model)
    options = options.resolved(network=meta.network)
    planned = plan_scenes(scene_paths, out_dir, model_path=Path(model).resolve(), meta=meta,
                          model_sha256=sha, options=options)
    bundle = None
    pending: _Tail | None = None  # the previous scene, publishing while this one runs

    def settle(tail: _Tail | None) -> None:
        if tail is not None:
            _settle(tail, echo=echo, on_failure=on_failure)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-tail") as tails:
        for scene in planned:
            outcome, job = scene.outcome, scene.job
            if job is None:
                announce_unplanned(outcome, echo=echo, on_failure=on_failure)
                continue
            if progress is not None:
                progress.add_total(len(job.flow.plan.tiles))
            started = time.perf_counter()
            try:
                if stop.is_set():
                    raise KeyboardInterrupt
                prepare_folder(job, out_dir=out_dir)
                if bundle is None:
                    bundle = _load(load_for_prediction, model, options, sha)
                with gdal_env():
                    tally, published = run_local(
                        job.flow, bundle, batch_size=options.batch_size,
                        progress=progress.advance if progress else None, stop=stop,
                        tail=tails)
            except KeyboardInterrupt as exc:
                remove_scene_leftovers(job.flow.outputs.folder)
                settle(pending)  # its blocks are all written: it is kept
                for rest in planned:
                    if rest.job is not None and rest.outcome.status == "pending":
                        rest.outcome.status = "interrupted"
                        rest.outcome.error = "interrupted (Ctrl-C); rerun to finish"
                raise BatchInterrupted([s.outcome for s in planned]) from exc
            except (GeosegError, OSError) as exc:  # device errors arrive as DeviceError
                mark_failed(outcome, exc)
                outcome.seconds = round(time.perf_counter() - started, 3)
                remove_scene_leftovers(job.flow.outputs.folder)
                if on_failure:
                    on_failure(outcome)
                continue
            settle(pending)
            pending = _Tail(scene, tally, published, started)
        settle(pending)
    return [s.outcome for s in planned]


@dataclass
class _Tail:
    """A scene whose blocks are written and whose tail (COGs, preview, vector file) is
    publishing on the tail thread while the next scene's blocks run."""

    scene: PlannedScene
    tally: Any
    published: Future
    started: float
    ended: float = 0.0
    """When the tail finished (perf_counter): the scene's wall time ends there."""

    def __post_init__(self) -> None:
        self.published.add_done_callback(lambda _: setattr(self, "ended", time.perf_counter()))


def _settle(tail: _Tail, *, echo: Callable[[str], None] | None,
            on_failure: Callable[[SceneOutcome], None] | None) -> None:
    """Wait for ``tail``'s outputs and complete its scene (manifest last), or fail it."""
    outcome, job = tail.scene.outcome, tail.scene.job
    assert job is not None
    try:
        outputs = tail.published.result()
        now = time.perf_counter()  # the callback may run just after result() returns
        # the scene took from its start to its tail's end, not to this call
        complete_scene(tail.scene, tail.tally, outputs,
                       started=tail.started + now - (tail.ended or now))
    except (GeosegError, OSError) as exc:
        mark_failed(outcome, exc)
        outcome.seconds = round(time.perf_counter() - tail.started, 3)
        remove_scene_leftovers(job.flow.outputs.folder)
        if on_failure:
            on_failure(outcome)
        return
    if echo:
        echo(f"{outcome.scene}: {outcome.tiles} tiles in {outcome.seconds:.1f} s -> "
             f"{outcome.outputs.get('classes')}")


def _load(load: Callable[..., Any], model: str | os.PathLike,
          options: PredictOptions, sha256: str) -> Any:
    """The model, once for the batch; a file changed since planning is refused."""
    from geoseg.errors import BundleError
    from geoseg.model.devices import set_model_threads

    set_model_threads(options.threads, options.runtime)
    bundle = load(model, device=options.device, compile=options.compile,
                  batch_size=options.batch_size, runtime=options.runtime)
    if bundle.sha256 != sha256:
        raise BundleError(f"{model}: changed while the batch was running; rerun with a "
                          "fixed model file")
    return bundle
