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
from geoseg.labels import LabelSpec, labels_on_grid

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
