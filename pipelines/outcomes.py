"""What a batch tells the user: one outcome per scene, the summary file and the table."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.prediction.options import PredictOptions

from .manifest import versions


@dataclass(slots=True)
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
    folder: str = ""
    """The scene's output folder (``OUT/<name>/``, see geoseg.inputs.sources.folder_names)."""
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """The error itself (for --debug); not written to the summary."""


def connection_lost(exc: BaseException) -> bool:
    """True when a scene failed because the client lost its scheduler (not the scene's
    fault: its finished blocks are kept for a rerun)."""
    return ("scheduler-connection-lost" in str(exc)
            or type(exc).__name__ in ("CommClosedError", "StreamClosedError"))


def error_line(exc: BaseException) -> str:
    """One line for the summary: geoseg's own message, or the type and first line."""
    if isinstance(exc, GeosegError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if connection_lost(exc):
        return ("lost the connection to the Dask scheduler before the scene finished; its "
                "finished blocks are kept: rerun the same command to resume")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def announce_unplanned(outcome: SceneOutcome, *, echo: Callable[[str], None] | None,
                       on_failure: Callable[[SceneOutcome], None] | None) -> None:
    """Tell about a scene that planning skipped (complete) or refused (one error line)."""
    if echo and outcome.status == "skipped":
        echo(f"{outcome.scene}: complete for this model and options, skipped")
    if on_failure and outcome.status == "failed":
        on_failure(outcome)


def mark_failed(outcome: SceneOutcome, exc: BaseException) -> None:
    """Record a scene's failure as one line (the exception is kept for --debug)."""
    outcome.status, outcome.error, outcome.exception = "failed", error_line(exc), exc


def write_summary(path: str | os.PathLike, outcomes: list[SceneOutcome], *,
                  model: str | os.PathLike, model_sha256: str, options: PredictOptions,
                  seconds: float) -> Path:
    """``OUT/summary.json``: the batch's scenes, statuses and errors, a scene a line,
    written as it goes (a batch of 10,000 scenes builds no list of their rows, nor one
    string of the whole file)."""
    import json

    from geoseg.atomic import replacing

    counts = {s: n for s, n in status_counts(outcomes).items()
              if s in ("done", "skipped", "failed")}
    head = json.dumps({"model": str(model), "model_sha256": model_sha256,
                       "options": options.identity(), "software": versions(),
                       "seconds": round(seconds, 3), "counts": counts, "scenes": []},
                      indent=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(head[:head.rindex("[") + 1])  # ... "scenes": [
        for i, o in enumerate(outcomes):
            row = {k.name: getattr(o, k.name) for k in fields(o) if k.name != "exception"}
            f.write(("," if i else "") + "\n    " + json.dumps(row))
        f.write("\n  ]\n}\n")
    return path


def status_counts(outcomes: Iterable[SceneOutcome]) -> dict[str, int]:
    """Scenes by status: ``done``, ``skipped`` and ``failed`` always, others as they occur
    (``interrupted``, ``pending``)."""
    counts = dict.fromkeys(("done", "skipped", "failed"), 0)
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


TABLE_HEAD = ("scene", "status", "MPix", "seconds", "error")


def table_lines(outcomes: Sequence[SceneOutcome]) -> Iterator[str]:
    """The end-of-run table (scene, status, megapixels, seconds, error), a line at a time:
    the column widths come from a first pass, so a batch of 10,000 scenes never holds its
    rows or the table whole."""
    widths = [len(h) for h in TABLE_HEAD[:-1]]
    for o in outcomes:
        widths = [max(w, len(v)) for w, v in zip(widths, _row(o)[:-1], strict=False)]
    yield _aligned(TABLE_HEAD, widths)
    for o in outcomes:
        yield _aligned(_row(o), widths)


def _row(o: SceneOutcome) -> tuple[str, ...]:
    return (_shown_name(o), o.status, f"{o.megapixels:.2f}", f"{o.seconds:.1f}", o.error)


def _shown_name(o: SceneOutcome) -> str:
    """The scene's file name, with its output folder where that is not its stem (scenes
    sharing a file name: ``tile.tif (north_tile)``)."""
    from geoseg.inputs.sources import source_stem

    name = Path(o.scene).name
    folder = Path(o.folder).name if o.folder else ""
    return f"{name} ({folder})" if folder and folder != source_stem(o.scene) else name


def align(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows of strings as left-aligned columns; the last column (errors) is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(_aligned(r, widths) for r in rows)


def _aligned(row: Sequence[str], widths: Sequence[int]) -> str:
    """One row, its columns padded to ``widths`` (the last column is not)."""
    return ("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False)) + "  "
            + row[-1]).rstrip()


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch, with every scene's outcome (finished scenes ``done``, the
    others ``interrupted`` and cleaned up)."""

    def __init__(self, outcomes: list[SceneOutcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes
