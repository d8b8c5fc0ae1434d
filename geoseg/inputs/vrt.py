"""Virtual scenes as GDAL VRT files: bands from several rasters stacked on one grid (a STAC
item's assets), and adjacent scenes mosaicked onto one grid (``--mosaic``).

GDAL reads a VRT window by window from its sources, so a virtual scene costs no copy and
no memory beyond the window, and predicting it is predicting one scene: one global tile
grid, no seam where its sources meet. The XML is GDAL's documented VRT format (rasterio
exposes no BuildVRT); sources are placed by their georeferencing, which must share the
VRT's CRS, and read with a declared resampling where their pixel size differs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from affine import Affine

from ..errors import ConfigError, InvalidInputError
from ..grid import PixelGrid
from .sources import gdal_path

GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}
RESAMPLINGS = ("nearest", "bilinear", "cubic", "average")


@dataclass(frozen=True, slots=True)
class BandSource:
    """One band of a raster: where it is, its grid, pixel type and nodata."""

    path: str
    band: int
    grid: PixelGrid
    dtype: str
    nodata: float | None = None
    description: str = ""


def read_band_sources(path: str, bands: Sequence[int] | None = None,
                      descriptions: Sequence[str] = ()) -> list[BandSource]:
    """The bands of the raster at ``path`` (all of them by default) as sources."""
    from .scene import read_header

    header = read_header(path)
    chosen = list(bands) if bands else list(range(1, header.count + 1))
    names = list(descriptions) + [""] * len(chosen)
    return [BandSource(path, b, header.grid, header.dtype, header.nodata, names[i])
            for i, b in enumerate(chosen)]


def _dst_rect(source: PixelGrid, target: PixelGrid) -> tuple[float, float, float, float]:
    """Where ``source`` lands on ``target`` in target pixels: (col, row, width, height)."""
    to_target = ~target.transform * source.transform
    col, row = to_target * (0, 0)
    col2, row2 = to_target * (source.width, source.height)
    return col, row, col2 - col, row2 - row


def _same_crs(a: PixelGrid, b: PixelGrid) -> bool:
    return (a.crs is None and b.crs is None) or (a.crs is not None and a.crs == b.crs)


def check_axis_aligned(grid: PixelGrid, path: str) -> None:
    t = grid.transform
    if t.b != 0 or t.d != 0:
        raise InvalidInputError(f"{path}: a rotated grid cannot be stacked or mosaicked; "
                                "warp it north-up first (gdalwarp)")


def write_vrt(path: str | os.PathLike, grid: PixelGrid, bands: Sequence[Sequence[BandSource]],
              *, dtype: str, nodata: float | None, resampling: str = "bilinear",
              mask: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Write a VRT on ``grid``: output band i is the union of ``bands[i]`` (each placed by
    its georeferencing, in order: a later source wins where two overlap). Sources must
    share the grid's CRS and be north-up. ``mask``: a dataset mask made of the sources'
    own masks, so pixels no source covers are invalid (a mosaic's gaps), and sources
    composite through their masks (a source's masked pixels never hide another's)."""
    if resampling not in RESAMPLINGS:
        raise InvalidInputError(f"unknown resampling {resampling!r}; valid: "
                                f"{', '.join(RESAMPLINGS)}")
    t = grid.transform
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs is not None:
        lines.append(f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>")
    lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}"
                 "</GeoTransform>")
    if metadata:
        lines.append("  <Metadata>")
        lines += [f'    <MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in metadata.items()]
        lines.append("  </Metadata>")
    for i, sources in enumerate(bands, start=1):
        lines.append(f'  <VRTRasterBand dataType="{GDAL_TYPES[dtype]}" band="{i}">')
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
        if sources and sources[0].description:
            lines.append(f"    <Description>{escape(sources[0].description)}</Description>")
        lines += _sources(sources, grid, resampling, composite=mask)
        lines.append("  </VRTRasterBand>")
    if mask and bands:
        lines += ['  <MaskBand>', '    <VRTRasterBand dataType="Byte">']
        lines += ["  " + line for line in _sources(bands[0], grid, "nearest", mask=True,
                                                   composite=True)]
        lines += ["    </VRTRasterBand>", "  </MaskBand>"]
    lines.append("</VRTDataset>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    return out


def _sources(sources: Sequence[BandSource], grid: PixelGrid, resampling: str, *,
             mask: bool = False, composite: bool = False) -> list[str]:
    """The VRT source elements placing ``sources`` on ``grid`` (their masks with ``mask``).

    A source's nodata pixels never overwrite what an earlier source put there (``NODATA``).
    ``composite`` (a mosaic of sources without nodata): neither do its masked pixels
    (alpha, outside a warped footprint): data sources composite through their mask band
    (``UseMaskBand``), mask sources skip their zeros."""
    lines = []
    for s in sources:
            if not _same_crs(s.grid, grid):
                raise InvalidInputError(f"{s.path}: its CRS differs from the other sources'; "
                                        "reproject it to theirs first (gdalwarp -t_srs)")
            check_axis_aligned(s.grid, s.path)
            col, row, width, height = _dst_rect(s.grid, grid)
            with_nodata = s.nodata is not None and not mask
            kind = "ComplexSource" if composite or with_nodata else "SimpleSource"
            band = f"mask,{s.band}" if mask else str(s.band)
            lines += [f'    <{kind} resampling="{resampling}">',
                      f'      <SourceFilename relativeToVRT="0">{escape(gdal_path(s.path))}'
                      "</SourceFilename>",
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{s.grid.width}" '
                      f'ySize="{s.grid.height}"/>',
                      f'      <DstRect xOff="{col!r}" yOff="{row!r}" xSize="{width!r}" '
                      f'ySize="{height!r}"/>']
            if with_nodata:
                lines.append(f"      <NODATA>{s.nodata!r}</NODATA>")
            elif mask and composite:
                lines.append("      <NODATA>0</NODATA>")
            elif composite:
                lines.append("      <UseMaskBand>true</UseMaskBand>")
            lines.append(f"    </{kind}>")
    return lines


def union_grid(grids: Sequence[PixelGrid], *, pixel: tuple[float, float] | None = None
               ) -> PixelGrid:
    """The north-up grid covering every grid's bounds at ``pixel`` (x size, y size; default
    the first grid's), anchored at the first grid's pixel corners."""
    first = grids[0].transform
    px, py = pixel or (first.a, first.e)
    lefts, rights, tops, bottoms = [], [], [], []
    for g in grids:
        t = g.transform
        xs = (t.c, t.c + t.a * g.width)
        ys = (t.f, t.f + t.e * g.height)
        lefts.append(min(xs)); rights.append(max(xs))  # noqa: E702
        tops.append(max(ys)); bottoms.append(min(ys))  # noqa: E702
    # snap the union to the first grid's pixel corners (half a pixel of tolerance)
    left = first.c + math.floor((min(lefts) - first.c) / px + 1e-6) * px
    top = first.f + math.floor((max(tops) - first.f) / py + 1e-6) * py
    width = math.ceil((max(rights) - left) / px - 1e-6)
    height = math.ceil((min(bottoms) - top) / py - 1e-6)
    return PixelGrid(height, width, Affine(px, 0, left, 0, py, top), grids[0].crs)


@dataclass(frozen=True, slots=True)
class Warp:
    """Where ``--mosaic --crs`` puts every scene: a CRS, a pixel size in its units and the
    resampling that reads the scenes onto it."""

    crs: str
    resolution: float
    resampling: str = "bilinear"

    def __post_init__(self) -> None:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            CRS.from_user_input(self.crs)
        except (CRSError, ValueError):  # rasterio: "EPSG:nope" is a ValueError
            raise ConfigError(f"--crs {self.crs!r} is not a CRS GDAL knows; give e.g. "
                              "EPSG:32618 or a WKT/PROJ string") from None
        if not self.resolution > 0:
            raise ConfigError(f"--resolution {self.resolution:g} must be a positive pixel "
                              "size in the CRS's units")
        if self.resampling not in RESAMPLINGS:
            raise ConfigError(f"unknown resampling {self.resampling!r}; valid: "
                              f"{', '.join(RESAMPLINGS)}")


def warped_vrt(path: str, out: str | os.PathLike, warp: Warp) -> Path:
    """``path`` warped onto ``warp``'s CRS at its pixel size as a VRT at ``out`` (GDAL's
    warped VRT, read window by window): pixels on multiples of the pixel size (gdalwarp
    ``-tap``), so scenes warped alike share one grid; an alpha band (the scene's own, warped,
    or one added) masks the pixels the scene does not cover or has as nodata, the same for
    every scene with or without nodata, so they mosaic."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    res = warp.resolution
    with rasterio.open(gdal_path(path)) as src:
        left, bottom, right, top = transform_bounds(src.crs, warp.crs, *src.bounds,
                                                    densify_pts=21)
        x0, y0 = math.floor(left / res) * res, math.ceil(top / res) * res
        width = max(1, math.ceil((right - x0) / res - 1e-9))
        height = max(1, math.ceil((y0 - bottom) / res - 1e-9))
        with WarpedVRT(src, crs=warp.crs, transform=Affine(res, 0, x0, 0, -res, y0),
                       width=width, height=height, resampling=Resampling[warp.resampling],
                       add_alpha=ColorInterp.alpha not in src.colorinterp) as vrt:
            target = Path(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            rasterio.shutil.copy(vrt, str(target), driver="VRT")
    return target


def mosaic_vrt(paths: Sequence[str], out: str | os.PathLike, *,
               warp: Warp | None = None) -> Path:
    """Write the mosaic of ``paths`` (adjacent scenes in one CRS on one pixel grid) as a VRT
    at ``out``; scenes that differ in CRS, pixel size, grid alignment, bands, pixel type or
    nodata are refused in one line that names them. With ``warp`` every scene is first
    warped onto its CRS and pixel grid (:func:`warped_vrt`, beside ``out``)."""
    from .scene import read_header
    from .sources import source_stem

    if len(paths) < 2:
        raise InvalidInputError("--mosaic needs two scenes or more")
    if warp is not None:
        folder = Path(out).parent / ".warped"
        paths = [str(warped_vrt(p, folder / f"{i}-{source_stem(p)}.vrt", warp))
                 for i, p in enumerate(paths)]
    headers = [read_header(p) for p in paths]
    first = headers[0]
    t0 = first.grid.transform
    for h in headers:
        check_axis_aligned(h.grid, h.path)
        t = h.grid.transform
        if not _same_crs(h.grid, first.grid):
            raise InvalidInputError(
                f"--mosaic: {h.path} is in {h.grid.crs}, {first.path} in {first.grid.crs}; "
                "warp them to one with --crs CRS --resolution PIXEL_SIZE, or predict them "
                "one by one")
        if not (math.isclose(t.a, t0.a, rel_tol=1e-9) and math.isclose(t.e, t0.e, rel_tol=1e-9)):
            raise InvalidInputError(
                f"--mosaic: {h.path} has {abs(t.a):g} x {abs(t.e):g} pixels, {first.path} "
                f"{abs(t0.a):g} x {abs(t0.e):g}; resample them to one with --crs "
                f"{first.grid.crs} --resolution PIXEL_SIZE, or predict them one by one")
        shift = ((t.c - t0.c) / t0.a, (t.f - t0.f) / t0.e)
        if any(abs(v - round(v)) > 1e-6 for v in shift):
            raise InvalidInputError(
                f"--mosaic: {h.path} is not on the pixel grid of {first.path} (offset by "
                f"{shift[0] % 1:.3f}, {shift[1] % 1:.3f} px); align them with --crs "
                f"{first.grid.crs} --resolution {abs(t0.a):g}, or predict them one by one")
        if (h.count, h.dtype, h.nodata, h.alpha_bands) != (first.count, first.dtype,
                                                           first.nodata, first.alpha_bands):
            raise InvalidInputError(
                f"--mosaic: {h.path} has {h.count} {h.dtype} bands (nodata {h.nodata}), "
                f"{first.path} {first.count} {first.dtype} (nodata {first.nodata}); mosaic "
                "scenes of one kind")
    grid = union_grid([h.grid for h in headers])
    # scenes with nodata: gaps are nodata and a pixel is valid as in each scene (not every
    # band nodata); without: alpha bands and masks become the mosaic's mask, gaps included
    bands = [[BandSource(h.path, b, h.grid, h.dtype, h.nodata) for h in headers]
             for b in range(1, first.count + 1) if b not in first.alpha_bands]
    return write_vrt(out, grid, bands, dtype=first.dtype, nodata=first.nodata,
                     resampling="nearest", mask=first.nodata is None)
