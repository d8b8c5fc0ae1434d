"""GeoParquet as the field writes it (issue 24): 1.1 with a bbox covering, zstd, Hilbert
order of centroids, bounded row groups written a row group at a time."""

from __future__ import annotations

import json
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from geoseg.vector import geoparquet
from geoseg.vector.geoparquet import write_geoparquet


@pytest.fixture
def layer(tmp_path):
    """400 squares on a 20 x 20 grid, stored in a shuffled order (fids unrelated to
    position), with the attributes geoseg's polygons have."""
    rng = np.random.default_rng(0)
    cells = [(i, j) for i in range(20) for j in range(20)]
    rng.shuffle(cells)
    geometry = [shapely.box(500000 + 10 * i, 4000000 + 10 * j, 500008 + 10 * i,
                            4000008 + 10 * j) for i, j in cells]
    frame = gpd.GeoDataFrame({"class_id": np.arange(len(cells), dtype=np.int32) % 3,
                              "class_name": ["a", "b", "c"] * 133 + ["a"],
                              "area_m2": np.full(len(cells), 64.0)},
                             geometry=geometry, crs="EPSG:32633")
    path = tmp_path / "polygons.gpkg"
    pyogrio.write_dataframe(frame, path, layer="polygons")
    return path


def test_geoparquet_1_1_with_covering_zstd_hilbert_order_and_bounded_row_groups(
        tmp_path, layer, monkeypatch):
    reads = []
    real = pyogrio.read_dataframe

    def counted(*args, **kwargs):
        frame = real(*args, **kwargs)
        reads.append(len(frame))
        return frame

    monkeypatch.setattr(pyogrio, "read_dataframe", counted)
    out = tmp_path / "polygons.parquet"
    write_geoparquet(layer, "polygons", out, row_group_rows=64)
    assert max(reads) <= 64 and sum(reads) == 400  # a row group at a time, never the layer

    file = pq.ParquetFile(out)
    geo = json.loads(file.schema_arrow.metadata[b"geo"])
    column = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 32633}
    assert column["bbox"] == pytest.approx([500000, 4000000, 500198, 4000198])
    meta = file.metadata
    assert meta.num_row_groups == 7 and all(meta.row_group(i).num_rows <= 64
                                            for i in range(meta.num_row_groups))
    assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {
        "ZSTD"}

    got = gpd.read_parquet(out)
    want = pyogrio.read_dataframe(layer)
    assert got.crs == want.crs and "bbox" not in got.columns
    keys = got.centroid.hilbert_distance(total_bounds=want.total_bounds, level=16)
    assert keys.is_monotonic_increasing
    key = lambda f: sorted(zip(f.geometry.to_wkb(), f.class_name, strict=True))  # noqa: E731
    assert key(got) == key(want)
    # the covering as written is each row's bounds
    table = pq.read_table(out)
    bounds = shapely.bounds(shapely.from_wkb(table.column("geometry").to_numpy()))
    covering = table.column("bbox").combine_chunks()
    assert np.array_equal(covering.field("xmin").to_numpy(), bounds[:, 0])
    assert np.array_equal(covering.field("ymax").to_numpy(), bounds[:, 3])
    # sorted rows: row groups cover a fraction of the layer each, so readers skip them
    extent = 198.0 * 198.0
    for i in range(meta.num_row_groups):
        stats = {meta.row_group(i).column(c).path_in_schema: meta.row_group(i).column(c)
                 .statistics for c in range(meta.num_columns)}
        width = stats["bbox.xmax"].max - stats["bbox.xmin"].min
        height = stats["bbox.ymax"].max - stats["bbox.ymin"].min
        assert width * height < 0.5 * extent
    # a reader's bbox filter, through the covering, keeps exactly what intersects
    query = (500000, 4000000, 500045, 4000045)
    assert len(gpd.read_parquet(out, bbox=query)) == len(want.cx[500000:500045,
                                                                 4000000:4000045]) == 25


def test_an_empty_layer_is_a_valid_empty_file(tmp_path):
    path = tmp_path / "empty.gpkg"
    empty = gpd.GeoDataFrame({"class_id": np.array([], np.int32)},
                             geometry=gpd.GeoSeries([], crs="EPSG:32633"))
    pyogrio.write_dataframe(empty, path, layer="polygons", geometry_type="Polygon")
    out = tmp_path / "empty.parquet"
    write_geoparquet(path, "polygons", out)
    got = gpd.read_parquet(out)
    assert len(got) == 0 and got.crs.to_epsg() == 32633
    assert json.loads(pq.read_schema(out).metadata[b"geo"])["version"] == "1.1.0"


def test_gdal_reads_it_with_its_covering_where_gdal_has_parquet(tmp_path, layer):
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not on PATH")
    formats = subprocess.run([ogrinfo, "--formats"], capture_output=True, text=True).stdout
    if "Parquet" not in formats:
        pytest.skip("this GDAL has no Parquet driver (built without Arrow)")
    out = tmp_path / "polygons.parquet"
    write_geoparquet(layer, "polygons", out, row_group_rows=64)
    info = subprocess.run([ogrinfo, "-so", "-al", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "Feature Count: 400" in info.stdout, info.stdout
    spatial = subprocess.run([ogrinfo, "-al", "-q", "-spat", "500000", "4000000", "500045",
                              "4000045", str(out)], capture_output=True, text=True).stdout
    assert spatial.count("OGRFeature") == 25


def test_hilbert_order_reads_geometries_only(layer):
    order, types = geoparquet.hilbert_order(layer, "polygons",
                                            tuple(pyogrio.read_info(layer)["total_bounds"]),
                                            batch_rows=50)
    assert sorted(order.tolist()) == list(range(1, 401)) and types == ["Polygon"]
