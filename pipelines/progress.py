"""Progress over tiles: a bar with tiles/s on a terminal; without one (logs, CI) a plain
line at least every :data:`INTERVAL` seconds with tiles done, tiles/s and the time left."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from tqdm import tqdm

INTERVAL = 10.0
"""Seconds between progress lines when stderr is not a terminal (``GEOSEG_PROGRESS_SECONDS``
overrides)."""


def _interval(text: str | None) -> float:
    """``GEOSEG_PROGRESS_SECONDS``: a number of seconds, at least 0.1; else the default."""
    try:
        return max(0.1, float(text)) if text else INTERVAL
    except ValueError:
        return INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class TileProgress:
    """Counts tiles as they finish; the total grows as scenes are planned."""

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.bar = tqdm(total=total, unit="tile", dynamic_ncols=True, disable=None,
                        smoothing=0.1)
        self.stream = stream or sys.stderr
        self.interval = interval or _interval(os.environ.get("GEOSEG_PROGRESS_SECONDS"))
        self.total, self.done = total or 0, 0
        self.begun = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.bar.disable:  # no terminal: the bar draws nothing, lines do
            self._thread = threading.Thread(target=self._lines, name="geoseg-progress",
                                            daemon=True)
            self._thread.start()

    def advance(self, n: int) -> None:
        self.done += n
        self.bar.update(n)

    def add_total(self, n: int) -> None:
        self.total += n
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def line(self) -> str:
        """``progress: 120/441 tiles (27%), 8.1 tiles/s, 40s left``."""
        elapsed = max(time.monotonic() - self.begun, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = (f", {_duration((self.total - self.done) / rate)} left"
                if rate > 0 and self.total else "")
        return f"progress: {self.done}/{self.total} tiles{share}, {rate:.1f} tiles/s{left}"

    def _lines(self) -> None:
        while not self._stop.wait(self.interval):
            if self.total:
                print(self.line(), file=self.stream, flush=True)

    def write(self, text: str, *, err: bool = False) -> None:
        """A line above the bar; ``err`` sends it to stderr."""
        tqdm.write(text, file=sys.stderr if err else sys.stdout)

    def __enter__(self) -> "TileProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        self.bar.close()
