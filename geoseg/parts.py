"""Finished blocks as part files on shared storage, assembled into a scene's rasters.

When blocks finish in different processes (or on different machines), each writes its
class block (and probability block) as a small ``.npy`` part file in a hidden folder beside
the scene's outputs; one step then streams the parts in row-major block order into the
staging GeoTIFF of :class:`~geoseg.writers.RasterOutput` and publishes the COG. Every
process holds at most one block: no whole scene is gathered anywhere (DESIGN.md promise 4).
The rasters are written through the same writer, windows and tags as
:func:`geoseg.predict.predict_scene`, so the published bytes are the same.

Parts are written to a temporary name and renamed, so a block computed twice (a retried
task) or a killed writer never leaves a torn part. No dask here: the orchestration that runs
these functions as tasks lives in ``pipelines/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import replacing
from .classes import NODATA_CLASS
from .stitch import finish
from .tiling import Block

PARTS_FOLDER = ".parts"
"""Hidden folder in ``OUT/<scene stem>/`` that holds a scene's parts while it runs."""

OUTPUT_NAMES = ("classes.tif", "probabilities.tif", "polygons.gpkg")


@dataclass(frozen=True, slots=True)
class BlockDone:
    """What a finished block reports: where it is, its tile count and class pixel counts
    (a length-256 int64 histogram of the class values it wrote, nodata included)."""

    row: int
    col: int
    n_tiles: int
    tiles_run: int
    counts: np.ndarray


def parts_folder(scene_folder) -> Path:
    """``OUT/<stem>/.parts``."""
    return Path(scene_folder) / PARTS_FOLDER


def part_path(folder, kind: str, row: int, col: int) -> Path:
    """The part file of block ``(row, col)``: ``kind`` is ``classes`` or ``probabilities``."""
    return Path(folder) / f"{kind}-r{row}-c{col}.npy"


def write_part(path, array: np.ndarray) -> Path:
    """Save ``array`` at ``path`` via a temporary name (atomic on one file system).

    The folder must exist: a block of a scene that was given up (its folder removed) fails
    here instead of leaving files behind.
    """
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return path


def read_part(path) -> np.ndarray:
    """A part written by :func:`write_part` (no pickles are loaded)."""
    return np.load(path, allow_pickle=False)


def finish_to_parts(acc: np.ndarray, block: Block, incoming, valid: np.ndarray, *, folder,
                    probabilities: bool, tiles_run: int) -> BlockDone:
    """:func:`geoseg.stitch.finish` a block and write its classes (+ probabilities) as parts.

    ``incoming`` are the spill strips ``(window, int32 array)`` from the blocks above and to
    the left, in any order (integer sums are order-free).
    """
    classes, probs = finish(acc, block, incoming, valid, nodata=NODATA_CLASS,
                            probabilities=probabilities)
    write_part(part_path(folder, "classes", block.row, block.col), classes)
    if probs is not None:
        write_part(part_path(folder, "probabilities", block.row, block.col), probs)
    counts = np.bincount(classes.ravel(), minlength=256).astype(np.int64)
    return BlockDone(block.row, block.col, block.n_tiles, tiles_run, counts)


def assemble(output, blocks, folder, kind: str) -> Path:
    """Write every block's part into ``output`` (a :class:`~geoseg.writers.RasterOutput`)
    in row-major order, then publish it. ``blocks`` is the scene's ``BlockGrid``."""
    for block in blocks.blocks():
        path = part_path(folder, kind, block.row, block.col)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: part of block ({block.row}, {block.col}) is "
                                    "missing; the block did not finish")
        output.write(read_part(path), block.window)
    return output.publish()


def clean_scene_folder(scene_folder, *, names=OUTPUT_NAMES) -> None:
    """Remove what an interrupted run may have left in ``OUT/<stem>/``: the parts folder and
    hidden staging/temporary files of the outputs (never a final output)."""
    folder = Path(scene_folder)
    shutil.rmtree(parts_folder(folder), ignore_errors=True)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file() and any(entry.name.startswith(f".{name}.") for name in
                                   (*names, "manifest.json")):
            entry.unlink(missing_ok=True)
