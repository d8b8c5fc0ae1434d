"""Finished blocks as part files on shared storage, and reading them back in block order.

When blocks finish in different processes (or on different machines), each saves its
class block, probability block and polygon pieces as small part files in the scene's hidden
parts folder (:class:`~geoseg.names.SceneOutputs`); the assembling steps then stream them in
row-major block order into the same :class:`~geoseg.prediction.flow.SceneWriter` the local runner
writes through, so the published bytes are the same. Every process holds at most one block
(or one block row of pieces): no whole scene is gathered anywhere (DESIGN.md promise 4).

Parts are written to a temporary name and renamed, so a block computed twice (a retried
task) or a killed writer never leaves a torn part. No dask here: the orchestration that runs
these functions as tasks lives in ``pipelines/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import replacing, write_npz
from ..errors import IncompleteRunError
from ..grid import Window
from ..names import SceneOutputs, is_leftover
from ..tiling import Block, BlockGrid
from ..vector.polygonize import load_block, save_block
from ..vector.seams import BlockResult
from .scene_report import BlockDone

if TYPE_CHECKING:
    from .flow import FinishedBlock


def write_part(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` compressed at ``path`` via a temporary name (atomic on one file
    system). The folder must exist: a block of a scene that was given up (its folder
    removed) fails here instead of leaving files behind."""
    return write_npz(path, data=np.ascontiguousarray(array))


def read_part(path: str | os.PathLike) -> np.ndarray:
    """A part written by :func:`write_part` (no pickles are loaded)."""
    with np.load(path, allow_pickle=False) as z:
        return z["data"]


def save_finished(outputs: SceneOutputs, finished: FinishedBlock, spills: dict, *,
                  zarr: bool = False) -> None:
    """Save a :class:`~geoseg.prediction.flow.FinishedBlock`'s classes, probabilities and
    pieces, then its ``done`` record: counts, tiles, and the ``spills`` it sends to later
    blocks (so a rerun can finish those without predicting this block again). The record is
    written last: its presence means every part of the block is whole. With ``zarr`` the
    rasters go straight into their chunks of the staging group (no raster part files)."""
    r, c = finished.block.row, finished.block.col
    if zarr:
        from ..outputs.zarr_rasters import write_block

        write_block(outputs.zarr_staging, finished.classes, finished.block.window,
                    finished.probs)
    else:
        write_part(outputs.part("classes", r, c), finished.classes)
        if finished.probs is not None:
            write_part(outputs.part("probabilities", r, c), finished.probs)
    if finished.pieces is not None:
        save_block(finished.pieces, outputs.part("vector", r, c))
    done = finished.done
    arrays = {"block": np.array([done.row, done.col, done.n_tiles, done.tiles_run], np.int64),
              "counts": done.counts}
    for (sr, sc), (window, strip) in spills.items():
        arrays[f"spill_{sr}_{sc}_window"] = np.array(
            [window.row, window.col, window.height, window.width], np.int64)
        arrays[f"spill_{sr}_{sc}_strip"] = strip
    write_npz(outputs.part("done", r, c), **arrays)


def load_done(outputs: SceneOutputs, row: int, col: int) -> tuple[BlockDone, dict]:
    """A finished block's record from an earlier run: its :class:`BlockDone` (marked
    reused) and the spill strips it sends, keyed by receiving block."""
    path = _existing(outputs.part("done", row, col), row, col)
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    r, c, n_tiles, tiles_run = (int(v) for v in data["block"])
    spills = {}
    for key in data:
        if key.startswith("spill_") and key.endswith("_window"):
            sr, sc = (int(v) for v in key.split("_")[1:3])
            spills[(sr, sc)] = (Window(*(int(v) for v in data[key])),
                                data[f"spill_{sr}_{sc}_strip"])
    return BlockDone(r, c, n_tiles, tiles_run, data["counts"], reused=True), spills


def finished_blocks(outputs: SceneOutputs, blocks: BlockGrid) -> set[tuple[int, int]]:
    """Blocks whose ``done`` record exists in the parts folder."""
    if not outputs.parts.is_dir():
        return set()
    return {(b.row, b.col) for b in blocks.blocks()
            if outputs.part("done", b.row, b.col).is_file()}


def write_identity(outputs: SceneOutputs, identity: dict) -> None:
    """Record what the parts in the folder are computed with."""
    with replacing(outputs.parts_identity) as tmp:
        tmp.write_text(json.dumps(identity, sort_keys=True))


def read_identity(outputs: SceneOutputs) -> dict | None:
    try:
        data = json.loads(outputs.parts_identity.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _existing(path: Path, row: int, col: int) -> Path:
    if not path.is_file():
        raise IncompleteRunError(f"{path}: part of block ({row}, {col}) is missing; the "
                                 "block did not finish; rerun the scene")
    return path


def raster_parts(outputs: SceneOutputs, blocks: BlockGrid, *, probabilities: bool
                 ) -> Iterator[tuple[Block, np.ndarray, np.ndarray | None]]:
    """(block, classes, probabilities or None) of every block, in row-major order."""
    for block in blocks.blocks():
        r, c = block.row, block.col
        classes = read_part(_existing(outputs.part("classes", r, c), r, c))
        probs = (read_part(_existing(outputs.part("probabilities", r, c), r, c))
                 if probabilities else None)
        yield block, classes, probs


def vector_parts(outputs: SceneOutputs, blocks: BlockGrid) -> Iterator[BlockResult]:
    """Every block's polygon pieces, in row-major order (a block row at a time is what
    the seam merge holds)."""
    for block in blocks.blocks():
        r, c = block.row, block.col
        yield load_block(_existing(outputs.part("vector", r, c), r, c))


def remove_leftovers(scene_folder: str | os.PathLike) -> None:
    """Remove hidden staging/temporary files of a scene's outputs (never a final output
    and never the parts folder)."""
    folder = Path(scene_folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if not is_leftover(entry.name):
            continue
        if entry.is_dir():  # a Zarr group's folder
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def clean_scene_folder(scene_folder: str | os.PathLike) -> None:
    """Remove what an interrupted run may have left in ``OUT/<stem>/``: the parts folder and
    hidden staging/temporary files of the outputs (never a final output)."""
    shutil.rmtree(SceneOutputs(Path(scene_folder)).parts, ignore_errors=True)
    remove_leftovers(scene_folder)
