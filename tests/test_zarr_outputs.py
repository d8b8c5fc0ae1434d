"""--raster-format zarr: one Zarr v3 group per scene, chunks on the block grid written by
the blocks that finish them, georeferenced for xarray/rioxarray, GeoZarr and GDAL, published
atomically, resumed by block on the Dask runner; classes and probabilities equal the COGs'."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import smooth_noise, write_raster
from geoseg.prediction.flow import predict_scene
from geoseg.prediction.options import PredictOptions

zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 2 m scene with a nodata corner, a 2-class model and the COG outputs of it."""
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    root = tmp_path_factory.mktemp("zarr")
    model = root / "tiny.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32, name="tiny",
                              gsd=2.0), model)
    pixels = smooth_noise((190, 230), seed=4)
    pixels[:, :30, :40] = 0
    path = write_raster(root / "scene.tif", pixels, nodata=0)
    options = PredictOptions(probabilities=True, block_size=64)
    predict_scene(path, root / "cog", model=model, options=options)
    with rasterio.open(root / "cog" / "scene" / "classes.tif") as ds:
        classes, grid = ds.read(1), (ds.transform, ds.crs)
    with rasterio.open(root / "cog" / "scene" / "probabilities.tif") as ds:
        probs = ds.read()
    return root, model, path, options, classes, probs, grid


def read_group(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    group = zarr.open_group(folder / "prediction.zarr", mode="r")
    return group["classes"][:], group["probabilities"][:]


@pytest.mark.parametrize("block_size", [64, 128, 1024])
def test_zarr_rasters_equal_the_cogs_at_any_block_size(scene, tmp_path, block_size):
    root, model, path, options, classes, probs, _ = scene
    opts = replace(options, raster_format="zarr", block_size=block_size)
    summary = predict_scene(path, tmp_path, model=model, options=opts)
    folder = tmp_path / "scene"
    got_classes, got_probs = read_group(folder)
    assert np.array_equal(got_classes, classes)
    assert np.array_equal(got_probs, probs)
    assert summary["outputs"] == {"zarr": str(folder / "prediction.zarr")}
    # nothing else under a final name, no staging or parts left behind
    assert sorted(p.name for p in folder.iterdir()) == ["prediction.zarr"]


def test_chunks_follow_the_block_grid(scene, tmp_path):
    """A chunk per block step, so every chunk lies inside one block's window: the blocks
    write disjoint chunks from any process."""
    from geoseg.inputs.scene import open_scene
    from geoseg.model.meta import read_meta
    from geoseg.prediction.blocks import make_plan

    root, model, path, options, *_ = scene
    opts = replace(options, raster_format="zarr")
    predict_scene(path, tmp_path, model=model, options=opts)
    plan = make_plan(open_scene(path), read_meta(model), opts.resolved("cpu"))
    group = zarr.open_group(tmp_path / "scene" / "prediction.zarr", mode="r")
    step = plan.blocks.step
    assert group["classes"].chunks == (step, step)
    assert group["probabilities"].chunks == (1, step, step)
    for block in plan.blocks.blocks():
        w = block.window
        assert w.row % step == 0 and w.col % step == 0
        assert (w.row + w.height) % step == 0 or w.row + w.height == 190
        assert (w.col + w.width) % step == 0 or w.col + w.width == 230


def test_the_group_is_georeferenced_for_xarray_rioxarray_and_geozarr(scene, tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    root, model, path, options, classes, probs, (transform, crs) = scene
    predict_scene(path, tmp_path, model=model,
                  options=replace(options, raster_format="zarr"))
    store = tmp_path / "scene" / "prediction.zarr"
    ds = xr.open_zarr(store, mask_and_scale=False)  # reads the consolidated metadata
    assert ds.classes.dtype == np.uint8 and ds.classes.dims == ("y", "x")
    assert np.array_equal(ds.classes.values, classes)
    assert ds.classes.rio.crs == crs
    assert ds.classes.rio.transform() == transform
    assert ds.probabilities.dims == ("class", "y", "x")
    assert list(ds["class"].values) == [0, 1]
    decoded = xr.open_zarr(store)  # CF decoding: probabilities in 0..1, nodata masked
    assert float(decoded.probabilities.max()) <= 1.0
    assert np.allclose(decoded.probabilities.values, probs / 255)
    assert int(decoded.classes.isnull().sum()) == 30 * 40
    attrs = json.loads((store / "zarr.json").read_text())
    assert "consolidated_metadata" in attrs
    group = attrs["attributes"]
    assert {c["name"] for c in group["zarr_conventions"]} == {"spatial", "proj"}
    assert group["spatial:dimensions"] == ["y", "x"]
    assert group["spatial:transform"] == list(transform)[:6]
    assert group["spatial:shape"] == [190, 230]
    assert group["proj:code"] == f"EPSG:{crs.to_epsg()}"
    assert [c["name"] for c in group["classes"]] == ["bg", "fg"]
    assert group["GEOSEG_MODEL_SHA256"]


def gdal_reads_zarr_v3() -> bool:
    """Whether rasterio's GDAL reads the Zarr v3 that zarr-python writes (the 1.0 spec's
    ``bytes`` and ``zstd`` codecs); GDAL 3.10 implements an earlier draft only."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        array = zarr.create_array(Path(tmp) / "probe.zarr", shape=(2, 2), dtype="uint8",
                                  dimension_names=("y", "x"), zarr_format=3)
        array[:] = 1
        try:
            with rasterio.open(Path(tmp) / "probe.zarr") as ds:
                return int(ds.read(1)[0, 0]) == 1
        except rasterio.errors.RasterioError:
            return False


def test_gdal_reads_the_group_as_georeferenced_rasters(scene, tmp_path):
    if not gdal_reads_zarr_v3():
        pytest.skip(f"rasterio's GDAL {rasterio.__gdal_version__} reads an earlier draft of "
                    "Zarr v3, not the 1.0 spec zarr-python writes")
    root, model, path, options, classes, probs, (transform, crs) = scene
    predict_scene(path, tmp_path, model=model, options=replace(options, raster_format="zarr"))
    store = tmp_path / "scene" / "prediction.zarr"
    with rasterio.open(f'ZARR:"{store}":/classes') as ds:
        assert ds.crs == crs and ds.transform.almost_equals(transform)
        assert np.array_equal(ds.read(1), classes)


def test_a_failed_run_leaves_nothing_and_keeps_the_old_group(scene, tmp_path, monkeypatch):
    from geoseg.outputs import zarr_rasters

    root, model, path, options, classes, *_ = scene
    opts = replace(options, raster_format="zarr")
    predict_scene(path, tmp_path, model=model, options=opts)
    before = read_group(tmp_path / "scene")[0]
    calls = []

    def broken(self, classes, window, probs=None):
        calls.append(window)
        if len(calls) == 3:
            raise OSError("disk went away")
        return original(self, classes, window, probs)

    original = zarr_rasters.ZarrRasters.write
    monkeypatch.setattr(zarr_rasters.ZarrRasters, "write", broken)
    with pytest.raises(OSError, match="disk went away"):
        predict_scene(path, tmp_path, model=model,
                      options=replace(opts, overwrite=True, stitch="center"))
    folder = tmp_path / "scene"
    assert sorted(p.name for p in folder.iterdir()) == ["prediction.zarr"]
    assert np.array_equal(read_group(folder)[0], before)


def test_publishing_over_an_existing_group_replaces_it_whole(tmp_path):
    from geoseg.classes import make_classes
    from geoseg.grid import PixelGrid, Window
    from geoseg.outputs.zarr_rasters import ZarrRasters, create_group, publish_group
    from affine import Affine
    from rasterio.crs import CRS

    grid = PixelGrid(20, 30, Affine(1, 0, 0, 0, -1, 20), CRS.from_epsg(32633))
    final = tmp_path / "prediction.zarr"
    for value in (1, 2):
        staging = create_group(tmp_path / ".parts" / "prediction.zarr", grid,
                               make_classes(("a", "b")), {}, probabilities=False, chunk=16)
        ZarrRasters(staging).write(np.full((20, 30), value, np.uint8), Window(0, 0, 20, 30))
        publish_group(staging, final)
        assert not staging.exists()
        assert (zarr.open_group(final, mode="r")["classes"][:] == value).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".parts", "prediction.zarr"]


def test_dask_blocks_write_their_own_chunks_and_a_rerun_resumes_by_block(scene, tmp_path):
    """On the Dask runner each finish task writes its block's chunks into the staging group
    (no raster part files); blocks an interrupted run finished are not predicted again, and
    the published group equals the COGs."""
    from distributed import Client, LocalCluster

    from geoseg.inputs.sources import folder_names
    from geoseg.model.meta import file_sha256, read_meta
    from geoseg.prediction.flow import block_steps, stage_zarr
    from geoseg_pipelines import tasks
    from geoseg_pipelines.manifest import read_manifest
    from geoseg_pipelines.resume import iter_plans, prepare_folder
    from geoseg_pipelines.run import run_batch

    root, model, path, options, classes, probs, _ = scene
    opts = replace(options, raster_format="zarr").resolved("cpu")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # an "interrupted" run: the first blocks predicted and finished, nothing published
        planned = next(iter_plans([path], tmp_path, model_path=Path(model).resolve(),
                                  meta=read_meta(model), model_sha256=file_sha256(model),
                                  options=opts, names=folder_names([path])))
        job = planned.job
        assert prepare_folder(job, out_dir=tmp_path) == frozenset()
        stage_zarr(job.flow)  # as the runner does before it submits the blocks
        steps = block_steps(job.flow)[:3]
        spills = {}
        for step in steps:
            r, c = step.key
            predicted = client.submit(tasks.predict_task, job, r, c)
            spills[step.key] = client.submit(tasks.spills_task, job, predicted)
            client.submit(tasks.finish_task, job, predicted,
                          *[spills[k] for k in step.sources],
                          outgoing=spills[step.key]).result()
        parts = tmp_path / "scene" / ".parts"
        assert not list(parts.glob("classes-*")) and not list(parts.glob("probabilities-*"))
        assert (parts / "prediction.zarr" / "zarr.json").is_file()
        outcomes = run_batch(client, [path], tmp_path, model=model, options=opts)
    assert [o.status for o in outcomes] == ["done"], [o.error for o in outcomes]
    manifest = read_manifest(tmp_path / "scene")
    assert manifest["blocks_reused"] == 3
    assert manifest["outputs"] == {"zarr": "prediction.zarr"}
    got_classes, got_probs = read_group(tmp_path / "scene")
    assert np.array_equal(got_classes, classes)
    assert np.array_equal(got_probs, probs)
    assert not parts.exists()
    item = json.loads((tmp_path / "scene" / "item.json").read_text())
    assert item["assets"]["zarr"]["type"] == "application/vnd+zarr"


def test_creation_options_are_refused_for_zarr(tiny_model_file, tmp_path):
    from click.testing import CliRunner

    from geoseg_pipelines.cli import cli

    path = write_raster(tmp_path / "s.tif", smooth_noise((64, 64)))
    result = CliRunner().invoke(cli, ["predict", str(path), "--model", str(tiny_model_file),
                                      "--out", str(tmp_path / "out"), "--raster-format",
                                      "zarr", "--co", "COMPRESS=ZSTD"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --co sets GDAL COG creation options; it does not apply to --raster-format "
        "zarr"]
    assert not (tmp_path / "out").exists()


def test_storage_that_cannot_rename_the_group_is_one_line_and_keeps_the_old(tmp_path,
                                                                           monkeypatch):
    import errno
    import os

    from affine import Affine
    from rasterio.crs import CRS

    from geoseg.classes import make_classes
    from geoseg.errors import OutputNotWritableError
    from geoseg.grid import PixelGrid
    from geoseg.outputs import zarr_rasters

    grid = PixelGrid(8, 8, Affine(1, 0, 0, 0, -1, 8), CRS.from_epsg(32633))
    final = tmp_path / "prediction.zarr"
    staging = zarr_rasters.create_group(tmp_path / ".parts" / "prediction.zarr", grid,
                                        make_classes(("a", "b")), {}, probabilities=False,
                                        chunk=8)
    zarr_rasters.publish_group(staging, final)
    before = sorted(p.relative_to(final) for p in final.rglob("*"))
    staging = zarr_rasters.create_group(tmp_path / ".parts" / "prediction.zarr", grid,
                                        make_classes(("a", "b")), {}, probabilities=False,
                                        chunk=8)
    real = os.replace

    def cross_device(src, dst):
        if Path(src) == staging:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)

    monkeypatch.setattr(zarr_rasters.os, "replace", cross_device)
    with pytest.raises(OutputNotWritableError, match="renames folders atomically") as info:
        zarr_rasters.publish_group(staging, final)
    assert "\n" not in str(info.value)
    assert sorted(p.relative_to(final) for p in final.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".parts", "prediction.zarr"]
