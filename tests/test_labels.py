"""Labels rasterized onto a scene's grid: hand-made expectations, other CRSs, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from geoseg.classes import NODATA_CLASS, make_classes
from geoseg.errors import ConfigError, InvalidInputError
from geoseg.grid import PixelGrid
from geoseg.training.labels import LabelSpec, labels_on_grid

# 40 x 30 pixels of 2 m, top-left corner (500000, 4000000) in UTM 33N.
GRID = PixelGrid(30, 40, Affine(2.0, 0, 500000.0, 0, -2.0, 4000000.0), CRS.from_epsg(32633))
CLASSES = make_classes(["background", "building", "road"])


def pixel_box(row0, col0, row1, col1, grid=GRID):
    """Map-coordinate box over pixels rows row0..row1-1, cols col0..col1-1."""
    x0, y0 = grid.transform * (col0, row0)
    x1, y1 = grid.transform * (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def write_vectors(path, geoms, crs="EPSG:32633", **columns):
    import geopandas as gpd

    gpd.GeoDataFrame(columns, geometry=list(geoms), crs=crs).to_file(path)
    return path


def test_polygon_covers_known_pixels(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(2, 3, 6, 10), pixel_box(20, 0, 25, 5)],
                         kind=["house", "street"])
    spec = LabelSpec(attribute="kind", mapping={"house": "building", "street": "road"})
    ids = labels_on_grid(path, GRID, spec, CLASSES)
    expected = np.zeros((30, 40), np.uint8)
    expected[2:6, 3:10] = 1
    expected[20:25, 0:5] = 2
    np.testing.assert_array_equal(ids, expected)


def test_labels_in_another_crs_are_reprojected(tmp_path):
    import geopandas as gpd

    square = pixel_box(10, 10, 20, 24)
    frame = gpd.GeoDataFrame({"class": [1]}, geometry=[square], crs=GRID.crs).to_crs(4326)
    path = tmp_path / "wgs84.geojson"
    frame.to_file(path)
    ids = labels_on_grid(path, GRID, LabelSpec(attribute="class"), CLASSES)
    expected = np.zeros((30, 40), np.uint8)
    expected[10:20, 10:24] = 1
    # reprojection round trip moves edges by far less than a pixel
    assert (ids != expected).sum() == 0


def test_polygons_beyond_the_scene_are_clipped_and_unlabelled_can_be_ignored(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(-5, -5, 3, 4)], c=["b"])
    spec = LabelSpec(attribute="c", mapping={"b": "building"}, unlabelled="ignore")
    ids = labels_on_grid(path, GRID, spec, CLASSES)
    assert (ids[:3, :4] == 1).all()
    assert (ids == 1).sum() == 12
    assert (ids[5:, 5:] == NODATA_CLASS).all()


def test_raster_labels_with_mapping(tmp_path):
    values = np.zeros((30, 40), np.uint8)
    values[:5] = 7
    values[-1] = 9
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", driver="GTiff", height=30, width=40, count=1, dtype="uint8",
                       crs=GRID.crs, transform=GRID.transform, nodata=9) as ds:
        ds.write(values, 1)
    ids = labels_on_grid(path, GRID, LabelSpec(mapping={0: "background", 7: "road"}), CLASSES)
    assert (ids[:5] == 2).all() and (ids[5:-1] == 0).all() and (ids[-1] == NODATA_CLASS).all()


def test_labels_that_miss_the_scene(tmp_path):
    far = box(0, 0, 10, 10)
    path = write_vectors(tmp_path / "far.gpkg", [far], c=[1])
    with pytest.raises(InvalidInputError, match="overlaps the scene"):
        labels_on_grid(path, GRID, LabelSpec(attribute="c"), CLASSES)


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_labels_without_crs(tmp_path):
    # a GeoPackage layer without a CRS (GeoJSON would imply WGS 84)
    path = write_vectors(tmp_path / "nocrs.gpkg", [pixel_box(0, 0, 4, 4)], crs=None, c=[1])
    with pytest.raises(InvalidInputError, match="no CRS"):
        labels_on_grid(path, GRID, LabelSpec(attribute="c"), CLASSES)


def test_missing_attribute_lists_the_existing_ones(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(0, 0, 4, 4)], kind=["x"], area=[1.0])
    with pytest.raises(InvalidInputError, match="attributes are: kind, area"):
        labels_on_grid(path, GRID, LabelSpec(attribute="klass"), CLASSES)


def test_value_without_mapping(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(0, 0, 4, 4), pixel_box(5, 5, 8, 8)],
                         kind=["house", "shed"])
    with pytest.raises(InvalidInputError, match="'shed'.*no class mapping"):
        labels_on_grid(path, GRID, LabelSpec(attribute="kind", mapping={"house": "building"}),
                       CLASSES)


def test_mapping_to_an_unknown_class(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(0, 0, 4, 4)], kind=["house"])
    with pytest.raises(ConfigError, match="not one of the classes"):
        labels_on_grid(path, GRID, LabelSpec(attribute="kind", mapping={"house": "roof"}),
                       CLASSES)


def test_without_mapping_values_are_class_ids_or_names(tmp_path):
    path = write_vectors(tmp_path / "l.gpkg", [pixel_box(0, 0, 2, 2), pixel_box(4, 4, 6, 6)],
                         kind=["Road", "1"])
    ids = labels_on_grid(path, GRID, LabelSpec(attribute="kind"), CLASSES)
    assert (ids[0:2, 0:2] == 2).all() and (ids[4:6, 4:6] == 1).all()
    assert (ids == 0).sum() == 30 * 40 - 8


# --- the nodata tag of label rasters -------------------------------------------------

def write_label_raster(path, values, *, nodata, transform=GRID.transform):
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[0],
                       width=values.shape[1], count=1, dtype="uint8", crs=GRID.crs,
                       transform=transform, nodata=nodata) as ds:
        ds.write(values.astype(np.uint8), 1)
    return path


def test_nodata_tag_that_is_a_class_id_is_read_as_the_class(tmp_path):
    from geoseg.training.labels import read_labels

    values = np.zeros((30, 40), np.uint8)
    values[:5] = 1
    path = write_label_raster(tmp_path / "tiled_label_3.tif", values, nodata=0)
    read = read_labels(path, GRID, LabelSpec(), CLASSES)
    np.testing.assert_array_equal(read.ids, values)
    assert read.nodata is None and len(read.warnings) == 1
    assert "tiled_label_3.tif" in read.warnings[0] and "nodata value 0" in read.warnings[0]
    assert "83.3%" in read.warnings[0] and "--truth-nodata 0" in read.warnings[0]
    np.testing.assert_array_equal(labels_on_grid(path, GRID, LabelSpec(), CLASSES), values)

    ignoring = read_labels(path, GRID, LabelSpec(nodata=0), CLASSES)
    assert (ignoring.ids[5:] == NODATA_CLASS).all() and (ignoring.ids[:5] == 1).all()
    assert ignoring.warnings == () and ignoring.nodata == 0
    # a mapping that sends the tag to a class counts too; one that ignores it is obeyed
    mapped = read_labels(path, GRID, LabelSpec(mapping={0: "background", 1: "road"}), CLASSES)
    assert (mapped.ids[5:] == 0).all() and (mapped.ids[:5] == 2).all()
    assert len(mapped.warnings) == 1
    ignored = read_labels(path, GRID, LabelSpec(mapping={0: None, 1: "road"}), CLASSES)
    assert (ignored.ids[5:] == NODATA_CLASS).all() and ignored.warnings == ()


def test_nodata_tag_read_as_a_class_survives_resampling(tmp_path):
    from geoseg.training.labels import read_labels

    values = np.zeros((30, 40), np.uint8)
    values[:5] = 1
    # the label raster starts one pixel right of the scene: its first column is unlabelled
    shifted = Affine(2.0, 0, 500002.0, 0, -2.0, 4000000.0)
    path = write_label_raster(tmp_path / "l.tif", values, nodata=0, transform=shifted)
    read = read_labels(path, GRID, LabelSpec(), CLASSES)
    assert (read.ids[:, 0] == NODATA_CLASS).all()
    assert (read.ids[:5, 1:] == 1).all() and (read.ids[5:, 1:] == 0).all()
    assert len(read.warnings) == 1


def test_nodata_tag_of_no_class_covering_most_of_the_raster_is_kept_but_said(tmp_path):
    from geoseg.training.labels import read_labels

    values = np.full((30, 40), 9, np.uint8)
    values[:10] = 1
    path = write_label_raster(tmp_path / "l.tif", values, nodata=9)
    read = read_labels(path, GRID, LabelSpec(), CLASSES)
    assert (read.ids[10:] == NODATA_CLASS).all() and (read.ids[:10] == 1).all()
    assert read.nodata == 9 and len(read.warnings) == 1
    assert "66.7%" in read.warnings[0] and "nodata value 9" in read.warnings[0]
    assert "\n" not in read.warnings[0]


def test_a_bad_nodata_option_is_refused(tmp_path):
    from geoseg.training.labels import read_labels

    path = write_label_raster(tmp_path / "l.tif", np.ones((30, 40), np.uint8), nodata=None)
    with pytest.raises(ConfigError, match="nodata 'zero'.*a number, none or auto"):
        read_labels(path, GRID, LabelSpec(nodata="zero"), CLASSES)


# --- labels whose declared CRS cannot be right ----------------------------------------

@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_geographic_crs_with_metre_coordinates_is_refused_in_one_line(tmp_path, suffix):
    path = write_vectors(tmp_path / f"lying{suffix}",
                         [pixel_box(2, 3, 6, 10), pixel_box(20, 0, 25, 5)],
                         crs="EPSG:4326", c=[1, 1])
    with pytest.raises(InvalidInputError) as info:
        labels_on_grid(path, GRID, LabelSpec(attribute="c"), CLASSES)
    message = str(info.value)
    assert "\n" not in message
    assert f"lying{suffix}" in message
    assert "impossible for a geographic CRS" in message and "EPSG:4326" in message
    assert "500000" in message and "3999996" in message   # the file's own bounds
    assert "ogr2ogr -a_srs EPSG:<code>" in message


def test_a_small_geographic_scene_prints_its_extent_with_enough_digits(tmp_path):
    # 40 x 30 pixels of 1e-5 degrees (about a metre) near Banff: 0.0004 x 0.0003 degrees
    grid = PixelGrid(30, 40, Affine(1e-5, 0, -115.2, 0, -1e-5, 51.1), CRS.from_epsg(4326))
    path = write_vectors(tmp_path / "elsewhere.geojson", [box(-115.31, 51.0, -115.3, 51.01)],
                         crs="EPSG:4326", c=[1])
    with pytest.raises(InvalidInputError, match="overlaps the scene") as info:
        labels_on_grid(path, grid, LabelSpec(attribute="c"), CLASSES)
    message = str(info.value)
    assert "x -115.200000..-115.199600, y 51.099700..51.100000" in message
    assert "x -115.310000..-115.300000, y 51.000000..51.010000" in message


def test_a_small_projected_scene_prints_its_extent_in_centimetres(tmp_path):
    path = write_vectors(tmp_path / "far.gpkg", [box(0, 0, 10, 10)], c=[1])
    with pytest.raises(InvalidInputError, match="overlaps the scene") as info:
        labels_on_grid(path, GRID, LabelSpec(attribute="c"), CLASSES)
    message = str(info.value)
    assert "x 500000.00..500080.00, y 3999940.00..4000000.00" in message
    assert "labels span x 0.00..10.00, y 0.00..10.00" in message
