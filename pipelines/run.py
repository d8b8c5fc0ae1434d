"""The Dask runner's loop: many scenes -> their graphs on a cluster -> outputs, resumable.

The client plans scenes (metadata only, :mod:`pipelines.resume`), submits each scene's
graph (:mod:`pipelines.graph`), tallies finished blocks as they come in (the same
:class:`~geoseg.prediction.scene_report.Tally` the local runner keeps) and writes each scene's
``manifest.json`` last, from the same :class:`~geoseg.prediction.scene_report.SceneReport`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, GeosegError
from geoseg.inputs.sources import folder_names
from geoseg.model.devices import Capabilities
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.scene_report import BlockDone, Tally

from .graph import SceneGraph, is_whole, submit_scene
from .outcomes import (
    BatchInterrupted,
    SceneOutcome,
    align,
    announce_unplanned,
    connection_lost,
    mark_failed,
)
from .resume import (
    PlannedScene,
    complete_scene,
    iter_plans,
    plan_scenes,
    prepare_folder,
    remove_scene_leftovers,
)
from .worker import ModelCache, QuietWarnings


@dataclass
class _Running:
    """Client-side state of a scene being run."""

    planned: PlannedScene
    graph: SceneGraph = field(default_factory=SceneGraph)
    tally: Tally = field(default_factory=Tally)
    started: float = 0.0
    first_block: float = 0.0
    """time.time() its first block began on a worker (0: none yet): the scene's own start,
    not its submission (the next scenes are submitted while earlier ones run)."""
    blocks_left: int = 0
    """Its blocks submitted and not yet finished (the feeder's backpressure count)."""

    def own_start(self) -> float:
        """The scene's start on this process's perf_counter clock."""
        if not self.first_block:
            return self.started
        return time.perf_counter() - max(0.0, time.time() - self.first_block)


WORKER_WAIT = 300
"""Seconds a batch waits for a scheduler's first worker before it says so in one line."""


def model_workers(client: Any) -> list[str] | None:
    """The workers that run the model: those offering a ``GPU`` resource when any does
    (model tasks go only there), else all (None)."""
    workers = client.scheduler_info().get("workers", {})
    gpu = [address for address, w in workers.items() if "GPU" in (w.get("resources") or {})]
    return gpu or None


def worker_capabilities(client: Any) -> list[Capabilities]:
    """What each model worker reports of its devices (probed in the worker's process);
    without a client (a dry run), what this machine has, as the default local cluster's
    workers would report."""
    from geoseg.model.devices import probe_capabilities

    if client is None:
        return [probe_capabilities()]
    if not client.scheduler_info().get("workers"):  # a scheduler whose workers still start
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT)
        except TimeoutError as exc:
            raise ConfigError(f"no worker joined the scheduler within {WORKER_WAIT} s; start "
                              "workers (dask worker ADDRESS) or check the cluster") from exc
    return list(client.run(probe_capabilities, workers=model_workers(client)).values())


def resolve_on_workers(options: PredictOptions, reports: Sequence[Capabilities], *,
                       network: str = "smp") -> PredictOptions:
    """One device and one precision for the whole batch, decided from the model workers'
    reports, never from the client's own devices: ``auto`` is ``cuda`` when every worker
    has CUDA (no scene mixes GPU and CPU blocks), a ``cuda:N`` no worker can address is
    refused, and a precision ``auto`` that the workers would resolve differently (GPUs with
    and without native bfloat16) must be given."""
    from geoseg.model.devices import resolve_device, resolve_precision

    if not reports:
        raise ConfigError("the cluster has no worker to run the model on; start one or "
                          "give a scheduler whose workers are up")
    device = options.device
    if device == "auto":
        device = "cuda" if all(r.cuda for r in reports) else "cpu"
    for report in reports:
        resolve_device(device, report)
    precisions = sorted({resolve_precision(options.precision, device, r) for r in reports})
    if len(precisions) > 1:
        raise ConfigError(f"--precision {options.precision}: the workers' devices resolve it "
                          f"to {' and '.join(precisions)}; one batch runs one precision: "
                          "give --precision")
    runtimes = sorted({options.resolved(device, r, network=network).runtime for r in reports})
    if len(runtimes) > 1:
        raise ConfigError(f"--runtime {options.runtime}: the workers resolve it to "
                          f"{' and '.join(runtimes)} (onnxruntime is installed on some "
                          "only); one batch runs one runtime: give --runtime")
    return options.resolved(device, reports[0], network=network)


def model_resources(client: Any, device: str) -> dict | None:
    """``{"GPU": 1}`` for model tasks when they run on CUDA and some worker offers a GPU
    resource; None otherwise (a constraint no worker satisfies would hang the batch)."""
    if device == "cpu":
        return None
    workers = client.scheduler_info().get("workers", {}).values()
    if workers and not any("GPU" in (w.get("resources") or {}) for w in workers):
        return None
    return {"GPU": 1}


def run_batch(client: Any, scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              model: str | os.PathLike, options: PredictOptions,
              progress: Any = None, echo: Callable[[str], None] | None = None,
              on_failure: Callable[[SceneOutcome], None] | None = None,
              model_sha256: str | None = None,
              stop: threading.Event | None = None) -> list[SceneOutcome]:
    """Predict every scene of ``scene_paths`` into ``out_dir`` on ``client``'s cluster.

    ``model`` is a bundle path on storage the workers share. Scenes whose outputs are
    complete for this model and options are skipped (unless ``options.overwrite``); a scene
    that fails is recorded with one error line and the others go on. ``progress`` is a
    :class:`~pipelines.progress.TileProgress`; ``echo`` prints a line per finished scene,
    ``on_failure(outcome)`` is called as each scene fails. ``model_sha256`` spares hashing
    the model again when the caller has (the CLI, for its summary). ``stop`` (set by the
    CLI's SIGINT handler) interrupts the batch: finished scenes are kept, the others are
    cancelled and removed, and :class:`BatchInterrupted` carries the outcomes.
    Returns one :class:`SceneOutcome` per scene, in input order.
    """
    from geoseg.model.meta import file_sha256, read_meta

    meta = read_meta(model)
    sha = model_sha256 or file_sha256(model)
    options = resolve_on_workers(options, worker_capabilities(client), network=meta.network)
    names = folder_names(scene_paths)
    plans = iter_plans(scene_paths, out_dir, model_path=Path(model).resolve(), meta=meta,
                       model_sha256=sha, options=options, names=names)
    client.register_plugin(ModelCache())
    client.register_plugin(QuietWarnings())
    resources = model_resources(client, options.device)
    running: list[_Running] = []
    stop = stop or threading.Event()
    feeder = _Feeder(client, plans, running, out_dir=out_dir, resources=resources,
                     progress=progress, echo=echo, on_failure=on_failure, stop=stop)
    try:
        feeder.feed()
        _collect(client, feeder, progress=progress, echo=echo, on_failure=on_failure,
                 stop=stop)
        _sweep_failed(running)
    except KeyboardInterrupt as exc:
        _interrupt(client, running)
        for outcome in _unplanned(scene_paths[len(feeder.outcomes):], out_dir, names):
            outcome.status, outcome.error = ("interrupted",
                                             "interrupted (Ctrl-C); rerun to finish")
            feeder.outcomes.append(outcome)
        raise BatchInterrupted(feeder.outcomes) from exc
    if feeder.lost_with is not None:  # the scheduler went away: the rest fail with its line
        for outcome in _unplanned(scene_paths[len(feeder.outcomes):], out_dir, names):
            mark_failed(outcome, feeder.lost_with)
            feeder.outcomes.append(outcome)
            if on_failure:
                on_failure(outcome)
    return feeder.outcomes


def _unplanned(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
               names: dict[str, str]) -> list[SceneOutcome]:
    """Outcomes of scenes the batch never planned (nothing of theirs was written)."""
    return [SceneOutcome(os.fspath(p), folder=str(Path(out_dir) / names[os.fspath(p)]))
            for p in paths]


INTERRUPT_WAIT = 60.0
"""Seconds an interrupted batch waits for the steps running in its own process (one block
each) before it removes its unfinished scenes' files."""

BLOCKS_AHEAD = 4
"""Blocks submitted and not yet finished, per worker thread of the cluster: enough to keep
every worker busy (a scene's next blocks wait on the scheduler while its first ones run),
few enough that the scheduler holds a bounded graph however many scenes a batch has."""


class _Feeder:
    """Submits the planned scenes' graphs in scene order, with backpressure: the next
    scene goes in while fewer than :data:`BLOCKS_AHEAD` blocks a worker thread (and at
    least two scenes) are unfinished, so the scheduler's and the client's state stay flat
    in the batch's size (earlier scenes get higher priority: they finish and are published
    first). A scene goes into ``running`` before its folder is touched, so an interrupt
    cleans it up."""

    def __init__(self, client: Any, plans: Iterator[PlannedScene], running: list[_Running], *,
                 out_dir: str | os.PathLike, resources: dict | None, progress: Any,
                 echo: Callable[[str], None] | None,
                 on_failure: Callable[[SceneOutcome], None] | None,
                 stop: threading.Event) -> None:
        from distributed import as_completed

        self.client, self.running, self.out_dir = client, running, out_dir
        self.resources, self.progress, self.stop = resources, progress, stop
        self.echo, self.on_failure = echo, on_failure
        self.queue = plans
        self.outcomes: list[SceneOutcome] = []  # every scene planned so far, in input order
        self.lost_with: BaseException | None = None  # set when the scheduler is gone
        self.token, self.priority = uuid.uuid4().hex[:8], 0
        self.owner: dict = {}
        self.active: set[int] = set()  # ids of the states whose graphs are in flight
        self.blocks = 0  # their unfinished blocks
        self.completed = as_completed()
        self.threads, self.checked = 1, 0.0

    def limit(self) -> int:
        """Blocks that may be in flight: :data:`BLOCKS_AHEAD` per worker thread (the
        cluster's threads looked up at most every 5 s: an adaptive cluster grows)."""
        now = time.monotonic()
        if now - self.checked > 5:
            self.threads = max(1, sum(self.client.nthreads().values()))
            self.checked = now
        return BLOCKS_AHEAD * self.threads

    def feed(self) -> None:
        """Submit scenes until the limit is reached or none are left."""
        while self.lost_with is None and (len(self.active) < 2 or self.blocks < self.limit()):
            if self.stop.is_set():
                raise KeyboardInterrupt
            scene = next(self.queue, None)  # planned now, not before
            if scene is None:
                return
            self.outcomes.append(scene.outcome)
            self._submit(scene)

    def abandon(self, exc: BaseException) -> None:
        """The scheduler is gone: no more scenes go in; :func:`run_batch` fails the ones
        not planned yet with ``exc``'s line (their folders were never touched)."""
        self.lost_with = exc

    def done(self, state: _Running) -> None:
        """``state`` finished or failed: its unfinished blocks leave the count."""
        if id(state) in self.active:
            self.active.discard(id(state))
            self.blocks -= state.blocks_left
            state.blocks_left = 0

    def finished_block(self, state: _Running) -> None:
        if id(state) in self.active and state.blocks_left:
            state.blocks_left -= 1
            self.blocks -= 1

    def _submit(self, scene: PlannedScene) -> None:
        outcome = scene.outcome
        if scene.job is None:
            announce_unplanned(outcome, echo=self.echo, on_failure=self.on_failure)
            return
        state = _Running(scene, started=time.perf_counter())
        self.running.append(state)
        try:
            reuse = prepare_folder(scene.job, out_dir=self.out_dir)
            whole = is_whole(scene.job, resources=self.resources, finished=reuse)
            if scene.job.flow.zarr and not whole:  # the group the finish tasks write into
                from geoseg.prediction.flow import stage_zarr

                stage_zarr(scene.job.flow, keep=bool(reuse))
        except (GeosegError, OSError) as exc:
            self.running.remove(state)
            remove_scene_leftovers(scene.job.flow.outputs.folder)
            mark_failed(outcome, exc)
            scene.job = None
            if self.on_failure:
                self.on_failure(outcome)
            return
        state.graph, self.priority = submit_scene(
            self.client, scene.job, resources=self.resources, token=self.token,
            priority=self.priority, finished=reuse)
        if self.progress is not None:
            self.progress.add_total(len(scene.job.flow.plan.tiles))
        state.blocks_left = state.graph.blocks
        self.active.add(id(state))
        self.blocks += state.blocks_left
        for future in state.graph.watched:
            self.owner[future.key] = state
        self.completed.update(state.graph.watched)


def _collect(client: Any, feeder: _Feeder, *, progress: Any,
             echo: Callable[[str], None] | None,
             on_failure: Callable[[SceneOutcome], None] | None,
             stop: threading.Event) -> None:
    """Tally finished blocks and publish finished scenes as their futures complete, feeding
    the next scenes in as blocks finish; checks ``stop`` at least every 50 ms (a signal
    handler only sets it, so an interrupt never lands inside dask's own callbacks, where it
    would be swallowed)."""
    completed, owner = feeder.completed, feeder.owner
    while not completed.is_empty():
        if stop.is_set():
            raise KeyboardInterrupt
        if not completed.has_ready():
            stop.wait(0.05)
            continue
        future = next(completed)
        state = owner.pop(future.key, None)
        if state is None or state.planned.outcome.status == "failed":
            continue
        try:
            # A result lost with a worker is recomputed by the scheduler; result() waits.
            value = future.result()
        except Exception as exc:  # noqa: BLE001 - any task error fails its scene alone
            if not connection_lost(exc) and client.status in ("closing", "closed"):
                # the client gave up on a lost scheduler: its futures end cancelled
                exc = ConnectionError(f"scheduler-connection-lost: {exc}")
            _fail(client, state, exc)
            feeder.done(state)
            if connection_lost(exc):
                feeder.abandon(exc)  # the scenes not submitted yet fail with the same line
            feeder.feed()
            if on_failure:
                on_failure(state.planned.outcome)
            continue
        if future is state.graph.final:
            if state.graph.whole:  # the scene's one block, finished with its outputs
                done, value = value
                _tally(state, done, progress)
            feeder.done(state)
            feeder.feed()
            try:
                _complete(state, value)
            except (GeosegError, OSError) as exc:  # the manifest could not be written
                _fail(client, state, exc)
                if on_failure:
                    on_failure(state.planned.outcome)
                continue
            feeder.running.remove(state)  # done: the client keeps only its outcome
            state.planned.job = None
            if echo:
                o = state.planned.outcome
                echo(f"{o.scene}: {o.tiles} tiles in {o.seconds:.1f} s -> "
                     f"{o.outputs.get('classes')}")
        else:
            _tally(state, value, progress)
            feeder.finished_block(state)
            feeder.feed()


def _tally(state: _Running, done: BlockDone, progress: Any) -> None:
    """A finished block of ``state``'s scene: its counts and tiles, its start."""
    state.tally.add(done)
    if done.started and (not state.first_block or done.started < state.first_block):
        state.first_block = done.started
    if progress is not None:
        progress.advance(done.n_tiles)


def _interrupt(client: Any, running: list[_Running]) -> None:
    """Ctrl-C: stop every unfinished scene's tasks and remove what they wrote; finished
    scenes (their manifests written) are kept. Tasks already running in this process (a
    worker in the client's process) end their step first: what they write goes too."""
    from .tasks import wait_for_tasks

    unfinished = []
    for state in running:
        outcome = state.planned.outcome
        if outcome.status in ("done", "failed") or state.planned.job is None:
            continue
        outcome.status, outcome.error = "interrupted", "interrupted (Ctrl-C); rerun to finish"
        try:
            client.cancel([f for f in state.graph.held if f is not None], force=True)
        except Exception:  # noqa: BLE001 - the cluster may be going down already
            pass
        unfinished.append(state.planned.job.flow.outputs.folder)
    wait_for_tasks(timeout=INTERRUPT_WAIT)
    for folder in unfinished:
        remove_scene_leftovers(folder)


def _sweep_failed(running: list[_Running]) -> None:
    """Failed scenes' folders once more at the end of the batch: ``client.cancel`` does not
    stop a task already running, which may write a part file after :func:`_fail` cleaned
    the folder (scenes whose scheduler was lost keep their parts for the rerun); in this
    process's worker, such a task is waited for first."""
    from .tasks import wait_for_tasks

    failed = [state.planned.job.flow.outputs.folder for state in running
              if state.planned.outcome.status == "failed" and state.planned.job is not None
              and not (state.planned.outcome.exception is not None
                       and connection_lost(state.planned.outcome.exception))]
    if failed:
        wait_for_tasks(timeout=INTERRUPT_WAIT)
    for folder in failed:
        remove_scene_leftovers(folder)


def _fail(client: Any, state: _Running, exc: BaseException) -> None:
    from geoseg.prediction.parts import remove_leftovers

    outcome = state.planned.outcome
    mark_failed(outcome, exc)
    outcome.seconds = round(time.perf_counter() - state.own_start(), 3)
    try:
        client.cancel(state.graph.held)
    except Exception:  # noqa: BLE001 - a client without its scheduler cannot cancel
        pass
    state.graph = SceneGraph()
    assert state.planned.job is not None
    if connection_lost(exc):  # keep the finished blocks' parts: a rerun resumes from them
        remove_leftovers(state.planned.job.flow.outputs.folder)
    else:
        remove_scene_leftovers(state.planned.job.flow.outputs.folder)


def _complete(state: _Running, outputs: dict) -> None:
    complete_scene(state.planned, state.tally, outputs, started=state.own_start())
    state.graph = SceneGraph()


def dry_run_table(scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                  model: str | os.PathLike, options: PredictOptions,
                  model_sha256: str | None = None) -> str:
    """What a run would do, per scene (run, skip or fail, tiles, blocks); writes nothing.
    ``auto`` is resolved on this machine, as a run on the default local cluster would."""
    from geoseg.model.meta import file_sha256, read_meta

    meta = read_meta(model)
    options = resolve_on_workers(options, worker_capabilities(None), network=meta.network)
    scenes = plan_scenes(scene_paths, out_dir, model_path=Path(model).resolve(),
                         meta=meta, model_sha256=model_sha256 or file_sha256(model),
                         options=options)
    rows = [("scene", "action", "MPix", "tiles", "blocks", "error")]
    for s in scenes:
        o = s.outcome
        action = "run" if s.job else ("skip" if o.status == "skipped" else "fail")
        blocks = str(len(s.job.flow.plan.blocks)) if s.job else ""
        rows.append((Path(o.scene).name, action, f"{o.megapixels:.2f}", str(o.tiles), blocks,
                     o.error))
    return align(rows)
