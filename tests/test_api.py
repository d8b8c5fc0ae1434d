"""The Python API: geoseg.load_model, predict, predict_array, vectorize; the README's
example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

import geoseg
from conftest import REPO, smooth_noise, write_raster

UTM = Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0)


def test_the_package_lists_its_api_and_imports_light():
    assert {"load_model", "predict", "predict_array", "vectorize", "__version__",
            "PredictOptions", "GeosegError"} <= set(dir(geoseg))
    code = "import sys, geoseg; print(sorted(m for m in ('torch', 'dask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_api_names_stay_functions_after_the_library_is_imported():
    """No module of the package shares a name with an API function (importing a submodule
    sets the package's attribute of that name)."""
    import geoseg.prediction.flow  # noqa: F401  (imports the prediction and vectorization modules)

    assert callable(geoseg.predict) and callable(geoseg.vectorize)


def test_predict_array_equals_geoseg_predict_on_the_same_pixels(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    pixels = smooth_noise((90, 110), seed=4)
    pixels[:, :10, :20] = 0
    scene = write_raster(tmp_path / "s.tif", pixels, transform=UTM, nodata=0)
    summary = geoseg.predict([scene], model, tmp_path / "out", probabilities=True)
    assert summary[0]["status"] == "done"
    classes, probs = geoseg.predict_array(pixels, model, transform=UTM, crs="EPSG:32633",
                                          nodata=0)
    with rasterio.open(tmp_path / "out" / "s" / "classes.tif") as ds:
        assert np.array_equal(classes, ds.read(1))
    with rasterio.open(tmp_path / "out" / "s" / "probabilities.tif") as ds:
        assert np.allclose(probs, ds.read() / 255.0)
    assert classes.dtype == np.uint8 and probs.dtype == np.float32
    assert (classes[:10, :20] == 255).all() and probs.shape == (2, 90, 110)
    # a loaded model gives the same
    again, _ = geoseg.predict_array(pixels, geoseg.load_model(model, device="cpu"),
                                    transform=UTM, crs="EPSG:32633", nodata=0)
    assert np.array_equal(again, classes)


def test_predict_array_takes_a_plain_array_without_georeferencing(make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    classes, probs = geoseg.predict_array(smooth_noise((40, 50), seed=1), model)
    assert classes.shape == (40, 50) and probs.shape == (2, 40, 50)


def test_predict_array_returns_dataarrays_for_a_dataarray(tmp_path, make_bundle):
    rioxarray = pytest.importorskip("rioxarray")
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    scene = write_raster(tmp_path / "s.tif", smooth_noise((60, 70), seed=2), transform=UTM)
    image = rioxarray.open_rasterio(scene)
    classes, probs = geoseg.predict_array(image, model)
    expected, _ = geoseg.predict_array(image.values, model, transform=UTM, crs="EPSG:32633")
    assert np.array_equal(classes.values, expected)
    assert classes.dims == ("y", "x") and np.array_equal(classes.x, image.x)
    assert classes.rio.crs == "EPSG:32633" and classes.rio.transform() == UTM
    assert list(probs["class"].values) == ["background", "building"]
    assert probs.dims == ("class", "y", "x")


def test_predict_array_refuses_what_is_not_an_image(make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    with pytest.raises(geoseg.GeosegError, match="numpy array or an xarray DataArray"):
        geoseg.predict_array([[1, 2], [3, 4]], model)
    with pytest.raises(geoseg.GeosegError, match=r"expected \(bands, height, width\)"):
        geoseg.predict_array(np.zeros((1, 2, 3, 4), np.uint8), model)


def test_predict_runs_the_batch_and_reports_failures(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    good = write_raster(tmp_path / "good.tif", smooth_noise((50, 60)), transform=UTM)
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(geoseg.BatchFailedError, match="1 of 2 scene"):
        geoseg.predict([good, bad], model, tmp_path / "out")
    assert (tmp_path / "out" / "good" / "classes.tif").is_file()
    outcomes = geoseg.predict([good, bad], model, tmp_path / "out", errors="keep")
    assert [o["status"] for o in outcomes] == ["skipped", "failed"]
    with pytest.raises(geoseg.GeosegError, match="unknown option"):
        geoseg.predict([good], model, tmp_path / "out", tiles=3)


def test_vectorize_returns_a_geodataframe_or_writes_a_file(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    scene = write_raster(tmp_path / "s.tif", smooth_noise((50, 60)), transform=UTM)
    geoseg.predict(scene, model, tmp_path / "out")
    classes = tmp_path / "out" / "s" / "classes.tif"
    frame = geoseg.vectorize(classes)
    assert len(frame) > 0 and frame.crs == "EPSG:32633"
    summary = geoseg.vectorize(classes, tmp_path / "p.gpkg")
    assert summary["features"] == len(frame)


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"### Python\n.*?```python\n(.*?)```", text, re.S)
    assert match, "the README has a ### Python section with a python block"
    return match.group(1)


def test_the_readme_example_runs(tmp_path):
    """The README's Python example, as written, from the repository's folder (the demo
    scene and the shipped model are bundled)."""
    code = readme_python_example().replace('"out/api"', repr(str(tmp_path / "api")))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "building" in result.stdout
