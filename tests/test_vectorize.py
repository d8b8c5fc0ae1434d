"""Block-wise vectorization equals one whole-raster polygonization, and writes good GPKGs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize, shapes

from geoseg.classes import CLASSES_TAG, make_classes, classes_to_json
from geoseg.grid import to_map
from geoseg.vector.polygonize import BlockJob, polygonize_block
from geoseg.tiling import BlockGrid
from geoseg.vector.seams import merge_blocks
from geoseg.vector.layer import (block_windows, open_class_raster, polygonize_raster,
                              vectorize_raster)

UTM = Affine(0.5, 0, 500000.0, 0, -0.5, 4100000.0)
NODATA = 255


def write_classes(path, data, *, transform=UTM, crs="EPSG:32633", nodata=NODATA,
                  classes=None, dtype="uint8", count=1):
    path = Path(path)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1],
                       count=count, dtype=dtype, crs=crs, transform=transform,
                       nodata=nodata) as ds:
        for b in range(1, count + 1):
            ds.write(data.astype(dtype), b)
        if classes is not None:
            ds.update_tags(**{CLASSES_TAG: classes_to_json(classes),
                              "GEOSEG_MODEL_NAME": "tiny", "GEOSEG_MODEL_SHA256": "abc"})
    return path


def reference(data, *, transform, connectivity, keep=None, nodata=NODATA):
    """One whole-raster shapes call, made valid: (class ids, geometries)."""
    mask = data != nodata
    if keep is not None:
        mask &= np.isin(data, keep)
    found = list(shapes(data, mask=mask, connectivity=connectivity, transform=transform))
    geoms = [shapely.make_valid(shapely.geometry.shape(g)) for g, _ in found]
    return np.array([int(v) for _, v in found]), geoms


def assert_same_polygons(ref_ids, ref_geoms, ids, geoms):
    assert len(geoms) == len(ref_geoms)
    tree = shapely.STRtree(geoms)
    used = set()
    for cid, g in zip(ref_ids, ref_geoms):
        match = [k for k in tree.query(g, predicate="intersects")
                 if k not in used and ids[k] == cid
                 and shapely.area(shapely.symmetric_difference(g, geoms[k])) == 0]
        assert match, f"no counterpart for class {cid} polygon {g.wkt[:80]}"
        used.add(match[0])


def check_exact(tmp, data, *, block_size, connectivity, transform=UTM, keep=None):
    path = write_classes(Path(tmp) / "c.tif", data, transform=transform)
    raster = open_class_raster(path)
    pieces = polygonize_raster(raster, keep=keep, block_size=block_size,
                               connectivity=connectivity)
    geoms = to_map(pieces.geoms, raster.grid)
    assert shapely.is_valid(geoms).all()
    ref_ids, ref_geoms = reference(data, transform=transform, connectivity=connectivity,
                                   keep=keep)
    assert_same_polygons(ref_ids, ref_geoms, pieces.class_ids, geoms)
    return pieces, geoms


# ---- synthetic rasters made to break seam merging -------------------------------------

def blobs(seed=0, shape=(70, 90), k=4):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, k, (shape[0] // 5 + 1, shape[1] // 5 + 1))
    data = np.kron(coarse, np.ones((5, 5), int))[: shape[0], : shape[1]]
    noise = rng.random(shape)
    data[noise < 0.08] = rng.integers(0, k, int((noise < 0.08).sum()))
    data[noise > 0.97] = NODATA
    return data.astype(np.uint8)


def checkerboard(shape=(33, 35)):
    r, c = np.indices(shape)
    return ((r + c) % 2).astype(np.uint8)


def single_pixels(shape=(64, 64), seed=1):
    rng = np.random.default_rng(seed)
    data = np.full(shape, NODATA, np.uint8)
    data[rng.random(shape) < 0.15] = 1
    return data


def diagonals(shape=(64, 64)):
    r, c = np.indices(shape)
    data = np.full(shape, NODATA, np.uint8)
    data[(r - c) % 7 == 0] = 1
    data[(r + c) % 9 == 0] = 2
    data[::16, ::16] = 1  # block-corner pixels
    data[15::16, 15::16] = 1
    return data


def rings(shape=(64, 64)):
    """Concentric rings centred on the seam corner at (32, 32): holes with islands."""
    r, c = np.indices(shape)
    d = np.maximum(abs(r - 31.5), abs(c - 31.5)).astype(int)
    data = (d // 3 % 2).astype(np.uint8)
    data[d == 4] = NODATA
    return data


def four_blocks(shape=(64, 64)):
    data = np.zeros(shape, np.uint8)
    data[8:56, 8:56] = 1
    data[20:44, 20:44] = 2
    data[30:34, 30:34] = 1
    return data


def every_edge(shape=(50, 61)):
    data = np.full(shape, 2, np.uint8)
    data[0, :] = data[-1, :] = data[:, 0] = data[:, -1] = 1
    data[shape[0] // 2, :] = data[:, shape[1] // 2] = 1
    return data


def nested(shape=(64, 64)):
    """Rings whose hole holds an island touching the ring only diagonally (8: one region,
    a part inside its own hole), some cut by seams, beside plain holed squares."""
    data = np.zeros(shape, np.uint8)
    for r0, c0 in ((1, 1), (10, 10), (12, 28), (28, 12), (40, 40), (27, 45), (45, 3)):
        data[r0:r0 + 9, c0:c0 + 9] = 1
        data[r0 + 1:r0 + 8, c0 + 1:c0 + 8] = 2
        data[r0 + 1, c0 + 1] = 1
        data[r0 + 2, c0 + 2] = 1
        data[r0 + 5, c0 + 5] = 1
    return data


PATTERNS = {"blobs": blobs, "checkerboard": checkerboard, "single_pixels": single_pixels,
            "diagonals": diagonals, "rings": rings, "four_blocks": four_blocks,
            "every_edge": every_edge, "nested": nested}


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block_size", [16, 17, 23, 32, 100])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_exact_against_whole_raster(tmp_path, pattern, block_size, connectivity):
    check_exact(tmp_path, PATTERNS[pattern](), block_size=block_size,
                connectivity=connectivity)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31), height=st.integers(17, 60), width=st.integers(17, 60),
       classes=st.integers(1, 4), block_size=st.integers(16, 64),
       connectivity=st.sampled_from([4, 8]), nodata_frac=st.floats(0, 0.3))
def test_exact_random(seed, height, width, classes, block_size, connectivity, nodata_frac):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, classes, (height, width)).astype(np.uint8)
    if rng.random() < 0.5:  # smoother regions
        data = np.kron(rng.integers(0, classes, (height // 3 + 1, width // 3 + 1)),
                       np.ones((3, 3), int))[:height, :width].astype(np.uint8)
    data[rng.random((height, width)) < nodata_frac] = NODATA
    with tempfile.TemporaryDirectory() as tmp:
        check_exact(tmp, data, block_size=block_size, connectivity=connectivity)


def test_same_bytes_across_block_sizes_and_workers(tmp_path):
    data = blobs(3, (80, 80))
    path = write_classes(tmp_path / "c.tif", data)
    raster = open_class_raster(path)
    runs = [polygonize_raster(raster, block_size=b, connectivity=c, workers=w)
            for b, w in ((16, 1), (33, 2), (80, 1)) for c in (4,)]
    first = shapely.to_wkb(runs[0].geoms)
    for run in runs[1:]:
        assert list(shapely.to_wkb(run.geoms)) == list(first)
        assert (run.class_ids == runs[0].class_ids).all()


def test_block_api_any_order_equals_polygonize_raster(tmp_path):
    """A scheduler may run polygonize_block per job and merge the results in any order."""
    data = rings()
    data[blobs(6, data.shape) == 2] = 2
    path = write_classes(tmp_path / "c.tif", data)
    raster = open_class_raster(path)
    g = raster.grid
    for connectivity in (4, 8):
        jobs = [BlockJob(raster.path, w, g.width, raster.nodata, None, connectivity)
                for w in block_windows(g, block_size=20)]
        results = [polygonize_block(j) for j in reversed(jobs)]
        merged = merge_blocks(results, connectivity=connectivity, blocks=BlockGrid.regular(
            height=g.height, width=g.width, block_size=20))
        direct = polygonize_raster(raster, block_size=20, connectivity=connectivity)
        assert list(shapely.to_wkb(merged.geoms)) == list(shapely.to_wkb(direct.geoms))
        assert (merged.pixels == direct.pixels).all()
        assert merged.pixels.sum() == (data != NODATA).sum()


def test_block_edge_strips_match_pixels(tmp_path):
    data = blobs(8, (50, 50))
    path = write_classes(tmp_path / "c.tif", data)
    raster = open_class_raster(path)
    g = raster.grid
    for w in block_windows(g, block_size=16):
        res = polygonize_block(BlockJob(raster.path, w, g.width, NODATA, None, 4))
        labels = rasterize(zip(res.pieces.geoms, range(1, len(res.first) + 1)),
                           out_shape=data.shape, fill=0, dtype="int32")[w.slices()]
        for strip, expected in ((res.top, labels[0]), (res.bottom, labels[-1]),
                                (res.left, labels[:, 0]), (res.right, labels[:, -1])):
            assert (strip == expected).all()


# ---- validity, areas, round trip -------------------------------------------------------

@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("transform", [UTM, Affine(2.0, 0, 300000.0, 0, -3.0, 5000000.0)],
                         ids=["square", "non_square"])
def test_valid_coverage_areas_and_round_trip(tmp_path, transform, connectivity):
    data = blobs(5, (70, 90))
    path = write_classes(tmp_path / "c.tif", data, transform=transform)
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=32, connectivity=connectivity)
    frame = gpd.read_file(out, engine="pyogrio")
    geoms = frame.geometry.values
    assert shapely.is_valid(geoms).all()
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    sel = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[sel]], geoms[right[sel]]))
    assert (overlap == 0).all()
    pixel_area = abs(transform.determinant)
    for cid in range(4):
        got = frame.loc[frame.class_id == cid, "area_m2"].sum()
        assert got == pytest.approx((data == cid).sum() * pixel_area, rel=1e-12)
    back = rasterize(zip(geoms, frame.class_id), out_shape=data.shape, transform=transform,
                     fill=NODATA, dtype="uint8")
    assert (back == data).all()
    union = shapely.union_all(geoms)
    cells = reference(data, transform=transform, connectivity=4)[1]
    assert shapely.area(shapely.symmetric_difference(union, shapely.union_all(cells))) == 0


def test_simplify_keeps_coverage(tmp_path):
    data = blobs(7, (80, 80))
    data[data == NODATA] = 0
    path = write_classes(tmp_path / "c.tif", data)
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=20, simplify=1.0)
    geoms = gpd.read_file(out).geometry.values
    assert shapely.is_valid(geoms).all()
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    sel = left < right
    assert (shapely.area(shapely.intersection(geoms[left[sel]], geoms[right[sel]]))
            < 1e-9).all()
    full = shapely.box(*rasterio.open(path).bounds)
    assert shapely.area(shapely.symmetric_difference(shapely.union_all(geoms), full)) < 1e-6
    assert shapely.get_num_coordinates(geoms).sum() < sum(
        shapely.get_num_coordinates(g) for g in reference(data, transform=UTM,
                                                          connectivity=4)[1])


def test_min_area_merges_into_longest_edge_neighbour(tmp_path):
    data = np.zeros((40, 40), np.uint8)
    data[:, 20:] = 1
    data[10:12, 17:20] = 2  # 6 px = 1.5 m^2: 8 edges shared with class 0, 2 with class 1
    data[30, 30] = 3        # 1 px inside class 1
    path = write_classes(tmp_path / "c.tif", data)
    out = tmp_path / "p.gpkg"
    summary = vectorize_raster(path, out, block_size=16, min_area=2.0)
    frame = gpd.read_file(out)
    assert sorted(frame.class_id) == [0, 1] and summary["features"] == 2
    assert frame.area_m2.sum() == pytest.approx(40 * 40 * 0.25)
    assert frame.loc[frame.class_id == 0, "area_m2"].item() == pytest.approx(
        20 * 40 * 0.25)


def test_classes_from_tags_background_dropped_and_names(tmp_path):
    data = blobs(2, (40, 40), k=3)
    classes = make_classes(["background", "building", "water"])
    path = write_classes(tmp_path / "c.tif", data, classes=classes)
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=16)
    frame = gpd.read_file(out)
    assert set(frame.class_name) == {"building", "water"}
    assert set(frame.class_id) == {1, 2}
    vectorize_raster(path, out, block_size=16, keep_classes=["water", 0], overwrite=True)
    assert set(gpd.read_file(out).class_name) == {"background", "water"}


def test_foreign_raster_keeps_zero_and_names_class_n(tmp_path):
    data = blobs(4, (30, 30), k=3)
    path = write_classes(tmp_path / "c.tif", data)
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=16)
    assert set(gpd.read_file(out).class_name) == {"class_0", "class_1", "class_2"}


@pytest.mark.parametrize("connectivity", [4, 8])
def test_mean_prob_blockwise(tmp_path, connectivity):
    data = blobs(9, (50, 50), k=2)
    data[data == NODATA] = 0
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (2, 50, 50)).astype(np.uint8)
    classes = make_classes(["field", "forest"])
    path = write_classes(tmp_path / "c.tif", data, classes=classes)
    prob_path = tmp_path / "probabilities.tif"
    with rasterio.open(prob_path, "w", driver="GTiff", height=50, width=50, count=2,
                       dtype="uint8", crs="EPSG:32633", transform=UTM) as ds:
        ds.write(probs)
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=16, probabilities_path=prob_path,
                     connectivity=connectivity)
    frame = gpd.read_file(out)
    assert len(frame) > 5
    for row in frame.itertuples():
        mask = rasterize([row.geometry], out_shape=data.shape, transform=UTM).astype(bool)
        expected = probs[row.class_id][mask].mean() / 255
        assert row.mean_prob == pytest.approx(expected, rel=1e-12)


def test_geographic_areas_are_geodesic(tmp_path):
    data = np.zeros((20, 20), np.uint8)
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    path = write_classes(tmp_path / "c.tif", data, transform=transform, crs="EPSG:4326")
    out = tmp_path / "p.gpkg"
    vectorize_raster(path, out, block_size=8)
    frame = gpd.read_file(out)
    # 0.02 deg x 0.02 deg at 60N: ~1113 m (lon) x ~2232 m (lat) ~ 2.48 km^2
    assert frame.area_m2.item() == pytest.approx(1113.9 * 2233.0, rel=0.01)
    assert frame.perimeter_m.item() == pytest.approx(2 * (1113.9 + 2233.0), rel=0.01)


def test_streamed_gpkg_same_across_block_sizes_and_workers_in_canonical_order(tmp_path):
    """Streaming writes regions block row by block row; the file does not depend on it."""
    from geoseg.vector.seams import canonical_order, stream_regions

    data = blobs(11, (90, 70))
    path = write_classes(tmp_path / "c.tif", data)
    frames = []
    for b, w in ((16, 1), (33, 2), (90, 1)):
        out = tmp_path / f"p{b}.gpkg"
        vectorize_raster(path, out, block_size=b, workers=w)
        frames.append(gpd.read_file(out, engine="pyogrio"))
    for frame in frames[1:]:
        assert frame.drop(columns="geometry").equals(frames[0].drop(columns="geometry"))
        assert frame.geometry.geom_equals_exact(frames[0].geometry, tolerance=0).all()
    raster = open_class_raster(path)
    g = raster.grid
    jobs = [BlockJob(raster.path, w, g.width, raster.nodata, None, 4)
            for w in block_windows(g, block_size=16)]
    chunks = list(stream_regions(map(polygonize_block, jobs), connectivity=4,
                                 blocks=BlockGrid.regular(height=g.height, width=g.width,
                                                          block_size=16)))
    assert len(chunks) > 2  # regions leave the merge before the last block row
    pixels = np.concatenate([shapely.to_wkb(c.geoms) for c in chunks])
    geoms = shapely.from_wkb(pixels)
    assert (canonical_order(geoms, g.width) == np.arange(len(geoms))).all()
    assert list(shapely.to_wkb(to_map(geoms, g))) == list(shapely.to_wkb(
        frames[0].geometry.values))


@pytest.mark.parametrize("min_area", [None, 1.0])
def test_plan_blocks_write_in_any_order_equals_vectorize_raster(tmp_path, min_area):
    """The three library steps a scheduler runs give the file vectorize_raster writes."""
    import pickle

    from geoseg.vector.layer import plan_vectorize, write_vectorized

    data = blobs(12, (60, 75))
    path = write_classes(tmp_path / "c.tif", data)
    plan = plan_vectorize(path, tmp_path / "a.gpkg", block_size=16, min_area=min_area)
    plan = pickle.loads(pickle.dumps(plan))  # travels to workers
    results = [polygonize_block(j) for j in reversed(plan.jobs)]
    summary = write_vectorized(plan, results)
    direct = vectorize_raster(path, tmp_path / "b.gpkg", block_size=16, min_area=min_area)
    assert summary["features"] == direct["features"] > 0
    a, b = (gpd.read_file(tmp_path / n, engine="pyogrio") for n in ("a.gpkg", "b.gpkg"))
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=0).all()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_saved_block_loads_back_exactly(tmp_path, connectivity):
    from geoseg.vector.polygonize import load_block, save_block

    data = diagonals()
    data[rings() == 0] = 0
    path = write_classes(tmp_path / "c.tif", data)
    raster = open_class_raster(path)
    g = raster.grid
    for w in block_windows(g, block_size=24):
        res = polygonize_block(BlockJob(raster.path, w, g.width, NODATA, None,
                                        connectivity))
        back = load_block(save_block(res, tmp_path / "b.npz"))
        assert back.window == res.window
        assert list(shapely.to_wkb(back.pieces.geoms)) == list(shapely.to_wkb(res.pieces.geoms))
        for name in ("first", "top", "bottom", "left", "right"):
            assert (getattr(back, name) == getattr(res, name)).all()
        for name in ("class_ids", "pixels", "prob_sums"):
            assert (getattr(back.pieces, name) == getattr(res.pieces, name)).all()
    assert list(tmp_path.glob(".*")) == []
