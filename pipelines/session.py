"""One `geoseg predict` batch as the user runs it: library logs to OUT/geoseg.log, Ctrl-C
as a stop flag, the cluster, the run loop and the summary file.

The CLI calls :func:`predict_batch` and turns its :class:`BatchResult` into lines and an
exit code; everything with side effects on the process (signal handlers, logging routes)
is set for the batch and restored after it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.names import LOG
from geoseg.prediction.options import PredictOptions

from .cluster import RUNNERS, ClusterChoice, connect
from .logs import library_logs
from .outcomes import (
    BatchInterrupted,
    SceneOutcome,
    announce_unplanned,
    status_counts,
    write_summary,
)
from .progress import TileProgress

if TYPE_CHECKING:
    from geoseg.outputs.index_page import SceneCard


@dataclass
class BatchResult:
    """What a batch did: one outcome per scene; whether Ctrl-C stopped it; where its summary
    and logs are (``summary_error`` says why the summary could not be written)."""

    outcomes: list[SceneOutcome]
    interrupted: bool
    summary: Path
    summary_error: str | None
    log: Path

    @property
    def failed(self) -> list[SceneOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


@contextmanager
def stop_on_sigint() -> Iterator[threading.Event]:
    """While the block runs, the first Ctrl-C (SIGINT) sets the event the batch checks;
    a second one interrupts at once, as usual."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def choose_runner(runner: str, choice: ClusterChoice, paths: Sequence[str | os.PathLike], *,
                  cluster_asked: bool) -> str:
    """Which runner executes the batch (see :data:`RUNNERS`)."""
    from geoseg.errors import ConfigError

    from .local import LOCAL_MAX_PIXELS, batch_pixels

    if runner not in RUNNERS:
        raise ConfigError(f"unknown runner {runner!r}; valid: {', '.join(RUNNERS)}")
    if runner == "local" and (choice.kind != "local" or cluster_asked):
        raise ConfigError("--runner local runs every scene in this process; it takes no "
                          "--scheduler, --cluster or --workers")
    if runner != "auto":
        return runner
    if choice.kind != "local" or cluster_asked:
        return "dask"
    if choice.layout is not None and choice.layout.gpu_workers > 1:
        return "dask"  # one model worker per GPU keeps every GPU busy
    return "local" if batch_pixels(paths) <= LOCAL_MAX_PIXELS else "dask"


def predict_batch(choice: ClusterChoice, paths: Sequence[str | os.PathLike], out: Path, *,
                  model: str, model_sha256: str, options: PredictOptions, summary: Path,
                  verbose: bool, echo: Callable[[str], object],
                  runner: str = "dask") -> BatchResult:
    """Run the batch with ``runner`` (``local`` or ``dask``: see :func:`choose_runner`) and
    write its summary. Raises KeyboardInterrupt only when Ctrl-C came before any scene was
    submitted."""
    from .local import run_batch_local

    start = time.perf_counter()
    interrupted = False
    with library_logs(out / LOG, verbose=verbose) as log, stop_on_sigint() as stop:
        try:
            if runner == "local":
                echo("local runner: every scene in this process, no cluster to start")
                with TileProgress() as progress:
                    outcomes = run_batch_local(
                        paths, out, model=model, options=options, progress=progress,
                        echo=progress.write, model_sha256=model_sha256, stop=stop,
                        on_failure=lambda o: progress.write(f"error: {o.error}", err=True))
            elif (done := already_complete(choice, paths, out, model=model, options=options,
                                           model_sha256=model_sha256)) is not None:
                echo("every scene is complete for this model and options: no cluster "
                     "to start")
                outcomes = done
                with TileProgress() as progress:
                    for outcome in outcomes:
                        announce_unplanned(
                            outcome, echo=progress.write,
                            on_failure=lambda o: progress.write(f"error: {o.error}", err=True))
            else:
                from .run import run_batch  # dask.distributed: only when a cluster runs

                with connect(choice, echo=echo) as client, TileProgress() as progress:
                    outcomes = run_batch(
                        client, paths, out, model=model, options=options,
                        progress=progress, echo=progress.write, model_sha256=model_sha256,
                        stop=stop,
                        on_failure=lambda o: progress.write(f"error: {o.error}", err=True))
        except BatchInterrupted as interruption:
            outcomes, interrupted = interruption.outcomes, True
    error = None
    try:  # the summary first: it is the batch's record
        write_summary(summary, outcomes, model=model, model_sha256=model_sha256,
                      options=options, seconds=time.perf_counter() - start)
    except OSError as exc:
        error = str(exc.strerror or exc)
    write_batch_pages(out, outcomes)
    return BatchResult(outcomes, interrupted, summary, error, log)


def already_complete(choice: ClusterChoice, paths: Sequence[str | os.PathLike], out: Path, *,
                     model: str, options: PredictOptions,
                     model_sha256: str) -> list[SceneOutcome] | None:
    """The outcomes of a batch whose every scene is complete for this model and options
    (a rerun of a finished batch), so no cluster is started for it; None when some scene
    must run. Only for a local cluster (its workers would run on this machine, so this
    machine resolves ``auto`` as they would), and only when every scene's folder holds a
    manifest: a batch with new scenes goes straight to its cluster."""
    from geoseg.inputs.sources import folder_names
    from geoseg.model.meta import read_meta

    from .manifest import manifest_path
    from .resume import plan_scenes
    from .run import resolve_on_workers, worker_capabilities

    if choice.kind != "local" or options.overwrite:
        return None
    names = folder_names(paths)
    if not all(manifest_path(out / names[os.fspath(p)]).is_file() for p in paths):
        return None
    meta = read_meta(model)
    resolved = resolve_on_workers(options, worker_capabilities(None), network=meta.network)
    planned = plan_scenes(paths, out, model_path=Path(model).resolve(), meta=meta,
                          model_sha256=model_sha256, options=resolved)
    if any(scene.job is not None for scene in planned):
        return None
    return [scene.outcome for scene in planned]


def write_batch_pages(out: Path, outcomes: Sequence[SceneOutcome]) -> None:
    """OUT/items.json (STAC ItemCollection) and OUT/index.html; one that cannot be written
    is logged, never the batch's failure (its scenes and summary are done)."""
    import logging

    from geoseg.outputs.index_page import write_index
    from geoseg.outputs.stac_items import write_item_collection

    log = logging.getLogger("geoseg")
    try:
        write_item_collection((scene_folder(out, o) for o in outcomes
                               if o.status in ("done", "skipped")), out)
    except Exception as exc:  # noqa: BLE001 - a catalog page is not worth the batch
        log.warning("%s: items.json not written (%s)", out, exc)
    try:
        write_index(index_cards(out, outcomes), out, counts=status_counts(outcomes))
    except Exception as exc:  # noqa: BLE001 - nor is the index
        log.warning("%s: index.html not written (%s)", out, exc)


def scene_folder(out: Path, outcome: SceneOutcome) -> Path:
    """Where a scene's outputs are: the folder planning chose, else ``OUT/<stem>/``."""
    from geoseg.inputs.sources import scene_dir

    return Path(outcome.folder) if outcome.folder else scene_dir(out, outcome.scene)


def index_cards(out: Path, outcomes: Iterable[SceneOutcome]) -> Iterator[SceneCard]:
    """What OUT/index.html shows of each scene, one at a time: its outcome and, from its
    manifest (read once), its class shares and, for a scene skipped as complete, its
    outputs."""
    from geoseg.outputs.index_page import SceneCard, class_shares

    from .manifest import read_manifest

    for o in outcomes:
        folder = scene_folder(out, o)
        manifest = (read_manifest(folder) or {}) if o.status in ("done", "skipped") else {}
        outputs = dict(o.outputs) or {k: str(folder / v)
                                      for k, v in manifest.get("outputs", {}).items()}
        yield SceneCard(o.scene, o.status, folder if folder.is_dir() else None, o.seconds,
                        o.megapixels, o.error, outputs, class_shares(manifest))
