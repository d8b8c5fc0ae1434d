"""Class and probability rasters: written block by block, published as a COG atomically.

Blocks go into a tiled GeoTIFF under a hidden temporary name beside the final file; when
every block is in, GDAL's COG driver copies it (the COG layout, overviews before the full
resolution, can only be made by a copy) (overviews: MODE for classes, AVERAGE for
probabilities) to a second temporary name, which is renamed over the final name. A crash
leaves the old output or none, never a partial file (DESIGN.md promise 6). Tags hold no
timestamps or block sizes, so the bytes depend only on the pixels and the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil

from .. import __version__
from ..atomic import replacing
from ..classes import CLASSES_TAG, NODATA_CLASS, ClassInfo, classes_to_json
from ..errors import OutputExistsError, OutputNotWritableError
from ..grid import PixelGrid, Window
from ..names import probe_path, staging_path

if TYPE_CHECKING:
    from ..model.meta import BundleMeta

_STAGING = dict(driver="GTiff", tiled=True, blockxsize=512, blockysize=512,
                compress="zstd", zstd_level=1, num_threads="ALL_CPUS", BIGTIFF="IF_SAFER")
"""The staging file is read once, by the COG copy: the fastest compression that keeps it
small (ZSTD level 1, on every core; 8192^2 classes: 0.10 s and 3.4 MB against DEFLATE's
0.82 s and 2.7 MB)."""
_COG = dict(driver="COG", compress="DEFLATE", blocksize=512, overviews="AUTO",
            num_threads="ALL_CPUS", BIGTIFF="IF_SAFER")
"""The published file: DEFLATE (every GIS reads it), overviews, compressed on every core
(8192^2 classes with MODE overviews: 1.5 s against 2.8 s on one core)."""


COG_OPTIONS = ("BLOCKSIZE", "COMPRESS", "LEVEL", "PREDICTOR", "NUM_THREADS", "BIGTIFF",
               "OVERVIEWS", "OVERVIEW_COUNT", "OVERVIEW_COMPRESS", "OVERVIEW_LEVEL",
               "OVERVIEW_PREDICTOR", "GEOTIFF_VERSION", "SPARSE_OK", "STATISTICS")
"""GDAL COG driver creation options ``--co`` may set (GDAL 3.10 documentation). Left out:
those that move the rasters off the scene's grid (TARGET_SRS, TILING_SCHEME, RES, EXTENT,
ZOOM_LEVEL...), add bands (ADD_ALPHA) or choose the overview resampling (MODE for classes,
AVERAGE for probabilities, fixed)."""
LOSSLESS = ("NONE", "DEFLATE", "LZW", "ZSTD", "LZMA", "PACKBITS")
"""Compressions that keep class ids exact (JPEG, WEBP, LERC... would change them)."""


def check_creation_options(options: Iterable[str]) -> tuple[str, ...]:
    """``NAME=VALUE`` strings -> the same with names upper-case; unknown or grid-changing
    names, lossy compressions and missing values refused in one line."""
    from ..errors import ConfigError

    out = []
    for item in options:
        name, sep, value = str(item).partition("=")
        name, value = name.strip().upper(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"--co {item!r}: expected NAME=VALUE, e.g. COMPRESS=ZSTD")
        if name not in COG_OPTIONS:
            raise ConfigError(f"--co {name}: not a creation option geoseg passes to GDAL's "
                              f"COG driver; valid: {', '.join(COG_OPTIONS)}")
        if name in ("COMPRESS", "OVERVIEW_COMPRESS") and value.upper() not in LOSSLESS:
            raise ConfigError(f"--co {name}={value}: lossy or unknown; class ids must stay "
                              f"exact: use one of {', '.join(LOSSLESS)}")
        out.append(f"{name}={value}")
    return tuple(out)


def prepare_folder(folder: Path) -> Path:
    """Make an output folder (``--out``) and check that files can be written in it; one
    line naming it when not, before anything is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = probe_path(folder, "geoseg")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(f"{folder}: cannot write outputs there "
                                     f"({exc.strerror or exc}); nothing was written; choose "
                                     "another --out") from exc
    return folder


def check_free_space(out_dir: Path, folder: Path, *, needed: int) -> None:
    """Refuse a scene the disk holding ``folder`` has no room for (``needed`` bytes, an
    estimate), in one line naming ``out_dir`` (the user's --out)."""
    free = free_bytes(folder)
    if free < needed:
        raise OutputNotWritableError(no_space_message(out_dir, needed, free=free))


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or would: its nearest existing parent)."""
    import shutil

    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def no_space_message(out_dir: Path, needed: int, *, free: int | None = None) -> str:
    """``OUT: no space left on device (scene needs about N MB)``, the one line for a full
    disk, found before a scene starts or while it writes."""
    have = f", {free / 1e6:.0f} MB free" if free is not None else ""
    return (f"{out_dir}: no space left on device (scene needs about "
            f"{max(1, round(needed / 1e6))} MB{have}); free some space or choose another --out")


def prepare_output(path: Path, *, overwrite: bool) -> Path:
    """Make the output's folder; refuse an existing output without ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = probe_path(path.parent, path.name)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(f"{path.parent}: cannot write outputs there "
                                     f"({exc.strerror or exc}); choose another --out") from exc
    return path


class RasterOutput:
    """A raster being written block by block; :meth:`publish` makes it final.

    Use as a context manager: leaving without publish removes the staging file.
    """

    def __init__(self, path: str | os.PathLike, grid: PixelGrid, *, count: int,
                 nodata: float | None, tags: dict, colormap: dict | None = None,
                 band_names: Iterable[str] = (), resampling: str = "NEAREST",
                 scale: float | None = None, masked: bool = False,
                 classes: tuple[ClassInfo, ...] = (), creation: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.cog = {**_COG, **{k.lower(): v for k, _, v in
                               (item.partition("=") for item in creation)}}
        self.staging = staging_path(self.path, suffix=".tif")
        self.resampling = resampling
        self.masked, self.classes = masked, classes
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            self._ds = rasterio.open(self.staging, "w", height=grid.height, width=grid.width,
                                     count=count, dtype="uint8", crs=grid.crs,
                                     transform=grid.transform, nodata=nodata, **_STAGING)
        self._ds.update_tags(**tags)
        for i, name in enumerate(band_names, start=1):
            self._ds.set_band_description(i, name)
        if colormap:
            self._ds.write_colormap(1, colormap)
        if scale is not None:  # GDAL's scale: readers get value * scale
            self._ds.scales = (scale,) * count
            self._ds.offsets = (0.0,) * count

    def write(self, data: np.ndarray, window: Window, *,
              valid: np.ndarray | None = None) -> None:
        """Write (H, W) or (C, H, W) uint8 pixels at ``window``; ``valid`` (H, W) goes
        into the dataset mask of a ``masked`` raster."""
        if data.ndim == 2:
            data = data[np.newaxis]
        self._ds.write(data, window=window.to_rasterio())
        if self.masked and valid is not None:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                self._ds.write_mask(np.where(valid, 255, 0).astype(np.uint8),
                                    window=window.to_rasterio())

    def publish(self) -> Path:
        """Convert to COG under a temporary name, then rename over the final name (a class
        raster's category and style sidecars then: :mod:`geoseg.outputs.styles`)."""
        self._ds.close()
        try:
            with replacing(self.path, suffix=".tif") as cog:
                rasterio.shutil.copy(self.staging, cog, **{"resampling": self.resampling,
                                                           **self.cog})
        finally:
            self.staging.unlink(missing_ok=True)
        if self.classes:  # beside the raster they describe, once it is in place
            from .styles import write_class_sidecars

            write_class_sidecars(self.path, self.classes)
        return self.path

    def close(self) -> None:
        if not self._ds.closed:
            self._ds.close()
        self.staging.unlink(missing_ok=True)

    def __enter__(self) -> "RasterOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def output_tags(meta: BundleMeta, model_sha256: str, **extra: object) -> dict:
    """Tags every geoseg raster carries: classes, model identity, geoseg version."""
    tags = {CLASSES_TAG: classes_to_json(meta.classes), "GEOSEG_MODEL_NAME": meta.name,
            "GEOSEG_MODEL_SHA256": model_sha256, "GEOSEG_VERSION": __version__}
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def class_output(path: Path, grid: PixelGrid, classes: tuple[ClassInfo, ...],
                 tags: dict, creation: Iterable[str] = ()) -> RasterOutput:
    """The class raster: uint8, nodata 255, colour table (background classes transparent),
    class names in tags, in a category/attribute sidecar and a QGIS style
    (:mod:`geoseg.outputs.styles`)."""
    from .styles import class_rgba

    colormap = {c.id: class_rgba(c) for c in classes}
    colormap[NODATA_CLASS] = (0, 0, 0, 0)
    names = {f"CLASS_{c.id}": c.name for c in classes}
    return RasterOutput(path, grid, count=1, nodata=NODATA_CLASS, tags={**tags, **names},
                        colormap=colormap, band_names=("class",), resampling="MODE",
                        classes=classes, creation=creation)


def probability_output(path: Path, grid: PixelGrid, classes: tuple[ClassInfo, ...],
                       tags: dict, creation: Iterable[str] = ()) -> RasterOutput:
    """One uint8 band per class, probability x 255 (GDAL scale 1/255, so readers that
    apply it get 0..1); 0 and masked out (the dataset mask) on nodata pixels."""
    return RasterOutput(path, grid, count=len(classes), nodata=None,
                        tags={**tags, "GEOSEG_SCALE": "1/255"},
                        band_names=tuple(f"p({c.name})" for c in classes),
                        resampling="AVERAGE", scale=1 / 255, masked=True,
                        creation=creation)
