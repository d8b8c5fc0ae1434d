"""Finished blocks as part files on shared storage, and reading them back in block order.

When blocks finish in different processes (or on different machines), each saves its
class block, probability block and polygon pieces as small part files in the scene's hidden
parts folder (:class:`~geoseg.names.SceneOutputs`); the assembling steps then stream them in
row-major block order into the same :class:`~geoseg.flow.SceneWriter` the local runner
writes through, so the published bytes are the same. Every process holds at most one block
(or one block row of pieces): no whole scene is gathered anywhere (DESIGN.md promise 4).

Parts are written to a temporary name and renamed, so a block computed twice (a retried
task) or a killed writer never leaves a torn part. No dask here: the orchestration that runs
these functions as tasks lives in ``pipelines/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import replacing
from .errors import IncompleteRunError
from .names import SceneOutputs, is_leftover
from .polygonize import load_block, save_block
from .seams import BlockResult
from .tiling import Block, BlockGrid

if TYPE_CHECKING:
    from .flow import FinishedBlock


def write_part(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` at ``path`` via a temporary name (atomic on one file system).

    The folder must exist: a block of a scene that was given up (its folder removed) fails
    here instead of leaving files behind.
    """
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return path


def read_part(path: str | os.PathLike) -> np.ndarray:
    """A part written by :func:`write_part` (no pickles are loaded)."""
    return np.load(path, allow_pickle=False)


def save_finished(outputs: SceneOutputs, finished: FinishedBlock) -> None:
    """Save a :class:`~geoseg.flow.FinishedBlock`'s classes, probabilities and pieces."""
    r, c = finished.block.row, finished.block.col
    write_part(outputs.part("classes", r, c), finished.classes)
    if finished.probs is not None:
        write_part(outputs.part("probabilities", r, c), finished.probs)
    if finished.pieces is not None:
        save_block(finished.pieces, outputs.part("vector", r, c))


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


def clean_scene_folder(scene_folder: str | os.PathLike) -> None:
    """Remove what an interrupted run may have left in ``OUT/<stem>/``: the parts folder and
    hidden staging/temporary files of the outputs (never a final output)."""
    outputs = SceneOutputs(Path(scene_folder))
    shutil.rmtree(outputs.parts, ignore_errors=True)
    if not outputs.folder.is_dir():
        return
    for entry in outputs.folder.iterdir():
        if entry.is_file() and is_leftover(entry.name):
            entry.unlink(missing_ok=True)
