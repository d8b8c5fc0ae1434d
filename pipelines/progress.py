"""A progress bar over tiles with tiles/s, on stderr (silent when stderr is not a TTY)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class TileProgress:
    """Counts tiles as they finish; the total grows as scenes are planned."""

    def __init__(self, total: int | None = None) -> None:
        self.bar = tqdm(total=total, unit="tile", dynamic_ncols=True, disable=None,
                        smoothing=0.1)

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def add_total(self, n: int) -> None:
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def write(self, text: str, *, err: bool = False) -> None:
        """A line above the bar; ``err`` sends it to stderr."""
        tqdm.write(text, file=sys.stderr if err else sys.stdout)

    def __enter__(self) -> "TileProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
