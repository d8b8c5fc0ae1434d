"""Lazy in, lazy out: a Dask-backed DataArray predicted by the flow's own block steps as a
Dask graph; the values equal the file path's byte for byte, chunks follow the block grid,
extra dims run one slice at a time, the model loads once per worker, and the README's
example runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, smooth_noise, write_raster

xr = pytest.importorskip("xarray")
rioxarray = pytest.importorskip("rioxarray")

import geoseg  # noqa: E402
from geoseg.errors import ConfigError, GeosegError  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    root = tmp_path_factory.mktemp("lazy")
    model = root / "tiny.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32, name="tiny",
                              gsd=2.0), model)
    pixels = smooth_noise((210, 250), seed=5)
    pixels[:, :30, :45] = 0
    scene = write_raster(root / "scene.tif", pixels, nodata=0)
    return root, model, scene


def file_path(array, model, **options):
    """The in-memory path: the array written as a GeoTIFF and predicted as a file."""
    classes, probs = geoseg.predict_array(array.compute(), model, **options)
    return classes.values, probs.values


@pytest.mark.parametrize("block_size", [64, 150])
def test_a_lazy_prediction_equals_the_file_path_byte_for_byte(data, block_size):
    root, model, scene = data
    array = rioxarray.open_rasterio(scene, chunks={"x": 128, "y": 128})
    classes, probs = geoseg.predict_array(array, model, block_size=block_size)
    assert classes.chunks is not None and probs.chunks is not None  # nothing computed yet
    want_classes, want_probs = file_path(array, model, block_size=block_size)
    assert classes.dtype == np.uint8 and probs.dtype == np.float32
    assert np.array_equal(classes.values, want_classes)
    assert np.array_equal(probs.values, want_probs)
    assert int((classes.values == 255).sum()) == 30 * 45
    # on the input's coordinates and CRS
    assert classes.rio.crs == array.rio.crs
    assert classes.rio.transform() == array.rio.transform()
    assert list(probs["class"].values) == ["bg", "fg"]


def test_outputs_are_chunked_on_the_block_grid(data):
    from geoseg.inputs.scene import open_scene
    from geoseg.model.meta import read_meta
    from geoseg.prediction.blocks import make_plan
    from geoseg.prediction.options import PredictOptions

    root, model, scene = data
    array = rioxarray.open_rasterio(scene, chunks={"x": 64, "y": 64})
    classes, probs = geoseg.predict_array(array, model, block_size=64)
    plan = make_plan(open_scene(scene), read_meta(model),
                     PredictOptions(block_size=64).resolved("cpu"))
    rows = tuple(plan.blocks.block(r, 0).window.height for r in range(plan.blocks.n_rows))
    cols = tuple(plan.blocks.block(0, c).window.width for c in range(plan.blocks.n_cols))
    assert classes.chunks == (rows, cols)
    assert probs.chunks[1:] == (rows, cols)


def test_extra_dims_run_one_slice_at_a_time(data):
    root, model, scene = data
    one = rioxarray.open_rasterio(scene, chunks={"x": 128, "y": 128})
    flipped = one.copy(data=one.data[:, ::-1, :])
    stack = xr.concat([one, flipped], dim="time").assign_coords(time=[2024, 2025])
    classes, probs = geoseg.predict_array(stack, model)
    assert classes.dims == ("time", "y", "x") and probs.dims == ("time", "class", "y", "x")
    assert list(classes["time"].values) == [2024, 2025]
    for i, part in enumerate((one, flipped)):
        want_classes, want_probs = file_path(part, model)
        assert np.array_equal(classes.isel(time=i).values, want_classes)
        assert np.array_equal(probs.isel(time=i).values, want_probs)


def test_on_a_distributed_client_the_model_loads_once_per_worker(data):
    from distributed import Client, LocalCluster

    from geoseg_pipelines import tasks

    root, model, scene = data
    array = rioxarray.open_rasterio(scene, chunks={"x": 64, "y": 64})
    want_classes, _ = file_path(array, model, block_size=64)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        classes, _ = geoseg.predict_array(array, model, block_size=64)
        assert np.array_equal(classes.compute().values, want_classes)
        loads = client.run(tasks.model_loads)
    assert [len(v) for v in loads.values()] == [1]


def test_chunks_across_the_block_grid_are_rechunked_and_said_once(data):
    from geoseg_pipelines.lazy import RechunkedWarning

    root, model, scene = data
    array = rioxarray.open_rasterio(scene, chunks={"x": 100, "y": 77})
    stack = xr.concat([array, array], dim="time")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classes, _ = geoseg.predict_array(stack, model, block_size=64)
    said = [w for w in caught if issubclass(w.category, RechunkedWarning)]
    assert len(said) == 1 and "rechunked to" in str(said[0].message)
    want, _ = file_path(array, model, block_size=64)
    assert np.array_equal(classes.isel(time=1).values, want)


def test_bad_dataarrays_are_one_line_each(data):
    root, model, scene = data
    array = rioxarray.open_rasterio(scene, chunks={"x": 128, "y": 128})
    no_crs = array.drop_vars("spatial_ref")
    no_crs.attrs.pop("crs", None)
    for bad, match in [
            (no_crs, "has no CRS"),
            (array.isel(band=[0, 1]), "2 bands"),
            (array.rename({"x": "lon"}), "expected y and x dims")]:
        with pytest.raises(GeosegError, match=match) as info:
            geoseg.predict_array(bad, model)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="bundle's path"):
        geoseg.predict_array(array, geoseg.load_model(model))


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- lazy-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no lazy example"
    return match.group(1)


def test_the_readme_lazy_example_runs(data, tmp_path, monkeypatch):
    root, model, scene = data
    big = smooth_noise((300, 260), seed=8)
    write_raster(tmp_path / "scene.tif", big)
    Path(tmp_path / "model.safetensors").write_bytes(Path(model).read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})  # noqa: S102
    written = xr.open_zarr(tmp_path / "classes.zarr")
    import rasterio

    with rasterio.open(tmp_path / "classes.tif") as ds:
        assert np.array_equal(ds.read(1), written["classes"].values.astype(np.uint8))
        assert ds.crs is not None
