"""The one report of a predicted scene: what the in-process summary and manifest.json say.

Both runners tally the same per-block facts (:class:`BlockDone`: tiles run, class pixel
counts) into a :class:`Tally` and turn it into a :class:`SceneReport` with
:func:`geoseg.prediction.flow.scene_report`, so the library's summary and the Dask batch's
manifest cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class BlockDone:
    """What a finished block reports: where it is, its tile counts and a length-256 int64
    histogram of the class values it wrote (nodata included)."""

    row: int
    col: int
    n_tiles: int
    tiles_run: int
    counts: np.ndarray
    reused: bool = False
    """True for a block finished by an earlier, interrupted run (its parts reused)."""
    started: float = 0.0
    """Wall-clock time (``time.time()``) its prediction began; 0 for a reused block. A
    batch on a cluster times a scene from its first block's start."""


@dataclass
class Tally:
    """Running sums over a scene's finished blocks (any order: sums are order-free)."""

    tiles_run: int = 0
    blocks_done: int = 0
    blocks_reused: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))

    def add(self, done: BlockDone) -> None:
        self.tiles_run += done.tiles_run
        self.blocks_done += 1
        self.blocks_reused += int(done.reused)
        self.counts += done.counts


@dataclass(frozen=True)
class SceneReport:
    """A predicted scene: its grid, tiling, tiles run, class pixels and outputs."""

    scene: str
    outputs: dict[str, str]
    height: int
    width: int
    crs: str | None
    tiles_in_grid: int
    tiles_run: int
    blocks: int
    tiles_per_block: int
    blocks_reused: int
    tile_size: int
    overlap: int
    stitch: str
    tta: str
    class_pixels: dict[str, int]
    nodata_pixels: int
    model_sha256: str
    seconds: float

    def summary(self) -> dict:
        """The in-process summary (``predict_scene``'s return value)."""
        return {"scene": self.scene, "outputs": dict(self.outputs), "height": self.height,
                "width": self.width, "tiles_in_grid": self.tiles_in_grid,
                "tiles_run": self.tiles_run, "blocks": self.blocks,
                "tile_size": self.tile_size, "overlap": self.overlap, "stitch": self.stitch,
                "tta": self.tta, "class_pixels": dict(self.class_pixels),
                "nodata_pixels": self.nodata_pixels, "model_sha256": self.model_sha256,
                "seconds": self.seconds}

    def manifest_fields(self) -> dict:
        """The scene's facts as manifest.json records them (output names, not paths)."""
        from pathlib import Path

        return {"scene": self.scene,
                "outputs": {k: Path(v).name for k, v in self.outputs.items()},
                "height": self.height, "width": self.width, "crs": self.crs,
                "tile_size": self.tile_size, "overlap": self.overlap, "stitch": self.stitch,
                "tta": self.tta, "tiles_in_grid": self.tiles_in_grid,
                "tiles_run": self.tiles_run, "blocks": self.blocks,
                "tiles_per_block": self.tiles_per_block,
                "blocks_reused": self.blocks_reused,
                "class_pixels": dict(self.class_pixels), "nodata_pixels": self.nodata_pixels}
