"""Every file name a run writes: final outputs, staging and temporary names, part files.

One place, so the writers, the resume rule, the clean-up of interrupted runs and the tests
agree on what a name means. Final outputs sit in ``OUT/<scene stem>/``; everything written
on the way there is hidden (a leading dot) and carries the process id, so two processes
never share a temporary file and a clean-up can tell leftovers from outputs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

CLASSES = "classes.tif"
PROBABILITIES = "probabilities.tif"
POLYGONS = "polygons.gpkg"
PREVIEW = "preview.png"
ZARR = "prediction.zarr"
"""Classes and probabilities as one Zarr v3 group (``--raster-format zarr``)."""
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOG = "geoseg.log"
"""Library logs and warnings of a run, in OUT (pipelines.logs)."""
PARTS_FOLDER = ".parts"
"""Hidden folder in ``OUT/<scene stem>/`` holding a scene's part files while it runs."""

POLYGON_NAMES = tuple(f"polygons{suffix}" for suffix in (
    ".gpkg", ".fgb", ".parquet", ".geojson", ".shp", ".shx", ".dbf", ".prj", ".cpg"))
"""polygons.<ext> in every vector format (geoseg.vector.files), a shapefile's sidecars too."""
CLASS_SIDECARS = (f"{CLASSES}.aux.xml", "classes.qml")
"""Beside classes.tif: category names and attribute table (GDAL PAM), QGIS style."""
OUTPUT_NAMES = (CLASSES, PROBABILITIES, ZARR, *POLYGON_NAMES, *CLASS_SIDECARS, PREVIEW)
PART_KINDS = ("classes", "probabilities", "vector", "done")
"""Part files of a finished block (compressed ``.npz``): its classes, probabilities, polygon
pieces, and last its ``done`` record (counts, tiles run, the spill strips it sends)."""
PARTS_IDENTITY = "identity.json"
"""What the parts in a parts folder were computed with; parts of another run are not
reused."""


@dataclass(frozen=True, slots=True)
class SceneOutputs:
    """The files of one scene's run, all under ``folder``."""

    folder: Path
    vector_suffix: str = ".gpkg"
    """The polygons' format (``--vector-format``): their file is ``polygons<suffix>``."""

    @property
    def classes(self) -> Path:
        return self.folder / CLASSES

    @property
    def probabilities(self) -> Path:
        return self.folder / PROBABILITIES

    @property
    def polygons(self) -> Path:
        return self.folder / f"polygons{self.vector_suffix}"

    @property
    def zarr(self) -> Path:
        return self.folder / ZARR

    @property
    def zarr_staging(self) -> Path:
        """Where the Zarr group is built: in the parts folder, so the chunks of an
        interrupted run's finished blocks stay with their done records."""
        return self.parts / ZARR

    @property
    def preview(self) -> Path:
        return self.folder / PREVIEW

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def parts(self) -> Path:
        return self.folder / PARTS_FOLDER

    @property
    def parts_identity(self) -> Path:
        return self.parts / PARTS_IDENTITY

    def part(self, kind: str, row: int, col: int) -> Path:
        """Part file of block ``(row, col)``; ``kind`` is one of :data:`PART_KINDS`."""
        return self.parts / f"{kind}-r{row}-c{col}.npz"


def staging_path(path: Path, *, suffix: str) -> Path:
    """Where a writer builds ``path`` before publishing it: ``.<name>.partial-<pid><suffix>``
    (GDAL and pyogrio choose drivers by the extension)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}{suffix}")


def temporary_path(path: Path, *, suffix: str = "") -> Path:
    """A single-shot write's temporary name, unique per process and thread."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}{suffix}")


def probe_path(folder: Path, name: str) -> Path:
    """An empty file touched to check that ``folder`` is writable."""
    return folder / f".{name}.probe-{os.getpid()}"


def is_leftover(name: str) -> bool:
    """True for the hidden staging and temporary files of a scene's outputs (never a final
    output): what an interrupted run may leave behind."""
    return any(name.startswith(f".{final}.") for final in (*OUTPUT_NAMES, MANIFEST))
