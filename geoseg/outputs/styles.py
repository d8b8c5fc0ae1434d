"""What GIS software shows of a class raster: its categories and its style.

Beside ``classes.tif`` go two small files every GIS reads without asking:

* ``classes.tif.aux.xml``: GDAL's PAM sidecar with the band's category names and a
  thematic raster attribute table (value, class name, colour). GeoTIFF cannot hold either
  inside the file; GDAL itself keeps them in this sidecar, so ``gdalinfo``, QGIS and ArcGIS
  list the classes by name.
* ``classes.qml``: a QGIS layer style (paletted renderer, one entry per class, labelled with
  its name; background classes transparent), loaded by QGIS automatically for the raster
  of the same name.

Both are written through a temporary name and renamed (DESIGN.md promise 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..atomic import replacing
from ..classes import ClassInfo

RAT_FIELDS = (("value", 0, 5), ("class", 2, 2), ("red", 0, 6), ("green", 0, 7),
              ("blue", 0, 8), ("alpha", 0, 9))
"""(name, GDAL field type: 0 integer / 2 string, GDAL field usage: 5 MinMax, 2 Name,
6-9 Red, Green, Blue, Alpha)."""


def class_rgba(c: ClassInfo) -> tuple[int, int, int, int]:
    """A class's display colour: its own, with background classes fully transparent (so a
    class raster over imagery shows only what was found)."""
    r, g, b, _ = c.rgba
    return r, g, b, 0 if c.is_background else 255


def pam_xml(classes: Sequence[ClassInfo]) -> str:
    """GDAL's PAM sidecar: category names (indexed by pixel value) and the attribute
    table of band 1."""
    by_id = {c.id: c for c in classes}
    names = [by_id[i].name if i in by_id else "" for i in range(max(by_id) + 1)]
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">', "    <CategoryNames>"]
    lines += [f"      <Category>{escape(n)}</Category>" for n in names]
    lines += ["    </CategoryNames>", '    <GDALRasterAttributeTable tableType="thematic">']
    for i, (name, kind, usage) in enumerate(RAT_FIELDS):
        lines.append(f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type>'
                     f"<Usage>{usage}</Usage></FieldDefn>")
    for row, c in enumerate(sorted(classes, key=lambda c: c.id)):
        values = [str(c.id), escape(c.name), *map(str, class_rgba(c))]
        lines.append(f'      <Row index="{row}">' + "".join(f"<F>{v}</F>" for v in values)
                     + "</Row>")
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>"]
    return "\n".join(lines) + "\n"


def qml(classes: Sequence[ClassInfo]) -> str:
    """A QGIS style for a class raster: paletted, labelled, nodata not drawn."""
    entries = []
    for c in sorted(classes, key=lambda c: c.id):
        r, g, b, a = class_rgba(c)
        entries.append(f'        <paletteEntry value="{c.id}" color="#{r:02x}{g:02x}{b:02x}" '
                       f'alpha="{a}" label={quoteattr(c.name)}/>')
    return "\n".join([
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>",
        '<qgis version="3.28" styleCategories="Symbology">',
        "  <pipe>",
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
        'nodataColor="">',
        "      <rasterTransparency/>",
        "      <colorPalette>",
        *entries,
        "      </colorPalette>",
        "    </rasterrenderer>",
        "  </pipe>",
        "</qgis>",
    ]) + "\n"


def sidecar_paths(raster: Path) -> tuple[Path, Path]:
    """(PAM sidecar, QGIS style) of the class raster at ``raster``."""
    return raster.with_name(raster.name + ".aux.xml"), raster.with_suffix(".qml")


def write_class_sidecars(raster: Path, classes: Sequence[ClassInfo]) -> None:
    """The category/attribute sidecar and the QGIS style beside ``raster``."""
    aux, style = sidecar_paths(raster)
    for path, text in ((aux, pam_xml(classes)), (style, qml(classes))):
        with replacing(path, suffix=path.suffix) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
