"""The vectorize command: clear one-line errors, nothing left under the final name."""

from __future__ import annotations

import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.classes import make_classes
from geoseg_pipelines.cli_vectorize import vectorize
from test_vectorize import UTM, blobs, write_classes


def run(*args):
    return CliRunner().invoke(vectorize, [str(a) for a in args])


def assert_clean_error(result, out, *words, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output
    if out is not None:
        assert not out.exists() or out.is_file() and out.read_bytes() == b"old"
        assert not [p for p in out.parent.glob(".*partial*")] if out.parent.is_dir() else True


@pytest.fixture()
def classes_tif(tmp_path):
    return write_classes(tmp_path / "classes.tif", blobs(1, (40, 50), k=3),
                         classes=make_classes(["background", "building", "water"]))


def test_cli_writes_gpkg(tmp_path, classes_tif):
    out = tmp_path / "out" / "polygons.gpkg"
    result = run(classes_tif, "--out", out, "--block-size", 16, "--connectivity", 8,
                 "--simplify", 0.5, "--min-area", 1.0, "--classes", "building,water")
    assert result.exit_code == 0, result.output
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 32633
    assert set(frame.class_name) <= {"building", "water"} and len(frame) > 0
    assert list(out.parent.iterdir()) == [out]


@pytest.mark.parametrize("case", ["float", "multiband", "no_crs", "missing", "not_raster",
                                  "exists", "parent_is_file", "bad_class"])
def test_cli_bad_input(tmp_path, classes_tif, case):
    out = tmp_path / "polygons.gpkg"
    src = classes_tif
    words = ()
    if case == "float":
        src = write_classes(tmp_path / "f.tif", np.zeros((8, 8)), dtype="float32")
        words = ("float32",)
    elif case == "multiband":
        src = write_classes(tmp_path / "m.tif", np.zeros((8, 8)), count=3)
        words = ("3 bands",)
    elif case == "no_crs":
        src = write_classes(tmp_path / "n.tif", np.zeros((8, 8)), crs=None)
        words = ("--allow-no-crs",)
    elif case == "missing":
        src = tmp_path / "nope.tif"
        words = ("not found",)
    elif case == "not_raster":
        src = tmp_path / "text.tif"
        src.write_text("hello")
        words = ("not a raster",)
    elif case == "exists":
        out.write_bytes(b"old")
        words = ("--overwrite",)
    elif case == "parent_is_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "polygons.gpkg"
        words = ("cannot write",)
    elif case == "bad_class":
        result = run(src, "--out", out, "--classes", "cars")
        assert_clean_error(result, out, "cars", "building", code=2)
        return
    result = run(src, "--out", out)
    assert_clean_error(result, out, *words)


def test_no_crs_allowed(tmp_path):
    src = write_classes(tmp_path / "n.tif", np.zeros((8, 8)), crs=None)
    out = tmp_path / "p.gpkg"
    assert run(src, "--out", out, "--allow-no-crs").exit_code == 0
    assert len(gpd.read_file(out)) == 1


def test_debug_shows_traceback(tmp_path):
    result = run(tmp_path / "nope.tif", "--out", tmp_path / "p.gpkg", "--debug")
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)


def test_all_nodata_writes_empty_layer(tmp_path):
    src = write_classes(tmp_path / "c.tif", np.full((20, 20), 255, np.uint8))
    out = tmp_path / "p.gpkg"
    result = run(src, "--out", out, "--block-size", 16)
    assert result.exit_code == 0, result.output
    info = pyogrio.read_info(out)
    assert info["features"] == 0
    assert {"class_id", "class_name", "area_m2", "perimeter_m"} <= set(info["fields"])
    assert gpd.read_file(out).crs.to_epsg() == 32633


def test_overwrite_replaces(tmp_path, classes_tif):
    out = tmp_path / "p.gpkg"
    out.write_bytes(b"old")
    assert run(classes_tif, "--out", out, "--overwrite").exit_code == 0
    assert len(gpd.read_file(out)) > 0


def test_opens_with_ogrinfo_and_geopandas(tmp_path, classes_tif):
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not on PATH")
    out = tmp_path / "p.gpkg"
    with rasterio.open(tmp_path / "probs.tif", "w", driver="GTiff", height=40, width=50,
                       count=3, dtype="uint8", crs="EPSG:32633", transform=UTM) as ds:
        ds.write(np.full((3, 40, 50), 128, np.uint8))
    assert run(classes_tif, "--out", out, "--probabilities",
               tmp_path / "probs.tif").exit_code == 0
    proc = subprocess.run(["ogrinfo", "-so", "-al", str(out)], capture_output=True,
                          text=True, check=True)
    for text in ("polygons", "32633", "class_id", "class_name", "area_m2", "perimeter_m",
                 "mean_prob", "GEOSEG_MODEL_NAME=tiny", "GEOSEG_OPTIONS"):
        assert text in proc.stdout
    frame = gpd.read_file(out, engine="pyogrio")
    assert frame.crs.to_epsg() == 32633
    assert np.allclose(frame.mean_prob, 128 / 255)
    meta = pyogrio.read_info(out)["layer_metadata"]
    assert meta["GEOSEG_MODEL_SHA256"] == "abc" and "GEOSEG_VERSION" in meta


@pytest.mark.parametrize("suffix, driver", [(".gpkg", "GPKG"), (".fgb", "FlatGeobuf"),
                                            (".geojson", "GeoJSON"),
                                            (".shp", "ESRI Shapefile"),
                                            (".parquet", None)])
def test_the_extension_picks_the_format(tmp_path, classes_tif, suffix, driver):
    """Each format holds the GeoPackage's features (same geometries, classes and areas),
    written by the driver its extension names; nothing hidden is left beside it."""
    reference = tmp_path / "ref.gpkg"
    assert run(classes_tif, "--out", reference, "--block-size", 16).exit_code == 0
    out = tmp_path / "out" / f"polygons{suffix}"
    result = run(classes_tif, "--out", out, "--block-size", 16)
    assert result.exit_code == 0, result.output
    want = gpd.read_file(reference)
    if driver is None:
        got = gpd.read_parquet(out)
        import pyarrow.parquet as pq

        assert b"geo" in pq.read_schema(out).metadata  # GeoParquet's metadata
    else:
        assert pyogrio.read_info(out)["driver"] == driver
        got = gpd.read_file(out)
    assert len(got) == len(want) > 0 and got.crs == want.crs

    def ordered(frame):  # FlatGeobuf's spatial index stores features in its own order
        key = frame.geometry.normalize().to_wkb()
        return frame.assign(key=key).sort_values("key").reset_index(drop=True)

    got, want = ordered(got), ordered(want)
    assert list(got["class_name"]) == list(want["class_name"])
    assert got.geometry.normalize().geom_equals_exact(want.geometry.normalize(),
                                                     tolerance=1e-6).all()
    assert np.allclose(got["area_m2"], want["area_m2"])
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    if suffix == ".shp":
        assert sorted(p.suffix for p in out.parent.iterdir()) == [
            ".cpg", ".dbf", ".prj", ".shp", ".shx"]
        assert "perim_m" in got.columns  # 10-character field names


def test_other_extensions_are_refused_in_one_line(tmp_path, classes_tif):
    out = tmp_path / "polygons.kml"
    result = run(classes_tif, "--out", out)
    assert_clean_error(result, out, "polygons.kml: cannot write .kml", ".fgb (FlatGeobuf)",
                       code=2)


def test_predict_writes_polygons_in_the_vector_format(tmp_path):
    from conftest import smooth_noise, write_raster
    from geoseg.prediction.options import PredictOptions
    from geoseg.prediction.flow import predict_scene

    from geoseg.model import create_bundle, save_bundle

    model = tmp_path / "m.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32), model)
    scene = write_raster(tmp_path / "s.tif", smooth_noise((70, 80)), transform=UTM)
    predict_scene(scene, tmp_path / "out", model=model,
                  options=PredictOptions(vectorize=True, vector_format="fgb"))
    assert pyogrio.read_info(tmp_path / "out" / "s" / "polygons.fgb")["driver"] == "FlatGeobuf"
    assert not (tmp_path / "out" / "s" / "polygons.gpkg").exists()
    with pytest.raises(Exception, match="vector format 'kml'; valid: gpkg, fgb"):
        PredictOptions(vectorize=True, vector_format="kml")
