"""Prediction end to end on tiny synthetic scenes: georeferencing, seams, nodata, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from conftest import smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.model import forward_probabilities, load_bundle, normalize
from geoseg.model.devices import resolve_precision
from geoseg.prediction.flow import predict_scene
from geoseg.tiling import TileGrid


def read_classes(out_dir, stem="scene"):
    with rasterio.open(out_dir / stem / "classes.tif") as ds:
        return ds.read(1), ds.profile, ds.tags()


def whole_image_classes(bundle, pixels, valid, precision="float32"):
    """One forward pass over the whole scene, padded with the nodata fill (0 after
    normalization) out to the tile grid's extent: the same padding the edge tiles see;
    the network runs at ``precision`` (resolved for the CPU), as the tiles did."""
    meta = bundle.meta
    c, height, width = pixels.shape
    grid = TileGrid.build(height=height, width=width, size=meta.tile_size,
                          overlap=meta.overlap)
    x = np.zeros((c, (grid.n_rows - 1) * grid.stride + grid.size,
                  (grid.n_cols - 1) * grid.stride + grid.size), np.float32)
    x[:, :height, :width] = normalize(pixels, valid, meta)
    probs = forward_probabilities(bundle, torch.from_numpy(x[None]),
                                  precision=resolve_precision(precision, "cpu")).numpy()[0]
    classes = probs[:, :height, :width].argmax(0).astype(np.uint8)
    classes[~valid] = 255
    return classes


class CountingNetwork(torch.nn.Module):
    """Wraps a network and counts the tiles it sees, and each forward pass's batch size."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.tiles, self.batches = inner, 0, []

    def forward(self, x):
        self.tiles += x.shape[0]
        self.batches.append(x.shape[0])
        return self.inner(x)


def counting(bundle):
    """``bundle`` prepared for prediction around a counting network (preparing copies an
    unprepared network: the counter that prediction increments is this bundle's)."""
    from dataclasses import replace

    from geoseg.model.optimize import for_inference

    return for_inference(replace(bundle, network=CountingNetwork(bundle.network)))


GRIDS = {
    "projected": ("EPSG:32633", Affine(2.0, 0, 500000.0, 0, -2.0, 4000000.0)),
    "geographic": ("EPSG:4326", Affine(0.0001, 0, 13.4, 0, -0.0001, 52.5)),
    "non-square pixels": ("EPSG:3857", Affine(3.0, 0, 1000.0, 0, -1.5, 2000.0)),
    "negative northings": ("EPSG:32621", Affine(30.0, 0, 300000.0, 0, -30.0, -2500000.0)),
    "rotated": ("EPSG:32633", Affine(1.8, 0.5, 500000.0, 0.4, -1.9, 4000000.0)),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_outputs_have_the_inputs_crs_transform_and_shape(tmp_path, make_bundle, name):
    crs, transform = GRIDS[name]
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((150, 97)), crs=crs,
                         transform=transform)
    model = make_bundle()
    predict_scene(scene, tmp_path / "out", model=model,
                  options=PredictOptions(probabilities=True))
    for output in ("classes.tif", "probabilities.tif"):
        with rasterio.open(tmp_path / "out" / "scene" / output) as ds, \
                rasterio.open(scene) as src:
            assert ds.crs == src.crs
            assert ds.transform == src.transform
            assert (ds.height, ds.width) == (src.height, src.width)
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    classes, profile, tags = read_classes(tmp_path / "out")
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255
    assert set(np.unique(classes)) <= {0, 1}
    assert tags["CLASS_1"] == "building" and "GEOSEG_MODEL_SHA256" in tags
    with rasterio.open(tmp_path / "out" / "scene" / "classes.tif") as ds:
        assert ds.colormap(1)[1][:3] == (0xE4, 0x1A, 0x1C)


def test_large_output_is_a_cog_with_mode_overviews(tmp_path, make_bundle):
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((1100, 1030)))
    predict_scene(scene, tmp_path / "out", model=make_bundle(arch="pixelwise"),
                  options=PredictOptions(block_size=512))
    with rasterio.open(tmp_path / "out" / "scene" / "classes.tif") as ds:
        assert ds.overviews(1) == [2, 4]
        small = ds.read(1, out_shape=(ds.height // 4, ds.width // 4))
        assert set(np.unique(small)) <= {0, 1, 255}
        assert ds.block_shapes[0] == (512, 512)
        assert ds.compression.name.lower() == "deflate"


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_center_crop_equals_whole_image_when_the_halo_covers_the_receptive_field(
        tmp_path, make_bundle, precision):
    pixels = smooth_noise((300, 230), seed=3)
    scene = write_raster(tmp_path / "scene.tif", pixels)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)  # rf 7 <= halo 16
    bundle = load_bundle(model)
    assert bundle.meta.receptive_field <= bundle.meta.overlap // 2
    predict_scene(scene, tmp_path / "out", model=bundle,
                  options=PredictOptions(stitch="center", block_size=64, precision=precision))
    classes, _, _ = read_classes(tmp_path / "out")
    whole = whole_image_classes(bundle, pixels, np.ones(pixels.shape[1:], bool), precision)
    assert (classes == whole).mean() >= 0.9999


@pytest.mark.parametrize("precision", ["float32", "auto"])
@pytest.mark.parametrize("stitch, minimum", [("center", 0.9999), ("blend", 0.999)])
def test_smp_unet_tiled_agrees_with_whole_image(tmp_path, make_bundle, stitch, minimum,
                                                precision):
    """A real smp Unet whose receptive field (about 123 px, 3 encoder stages) fits in the
    halo of a 256 px tile overlapping by 128."""
    pixels = smooth_noise((320, 288), seed=1)
    scene = write_raster(tmp_path / "scene.tif", pixels)
    model = make_bundle(arch="Unet", encoder="resnet18", tile_size=256, overlap=128,
                        arch_kwargs={"encoder_depth": 3, "decoder_channels": (64, 32, 16)})
    bundle = load_bundle(model)
    predict_scene(scene, tmp_path / "out", model=bundle,
                  options=PredictOptions(stitch=stitch, precision=precision))
    classes, _, _ = read_classes(tmp_path / "out")
    whole = whole_image_classes(bundle, pixels, np.ones(pixels.shape[1:], bool), precision)
    assert 0.02 < (whole == 1).mean() < 0.98, "a model that predicts one class tests nothing"
    assert (classes == whole).mean() >= minimum


@pytest.mark.parametrize("tiles, batch_size, size", [
    (1, 8, 1), (7, 8, 7), (8, 8, 8), (9, 8, 5), (12, 8, 6), (30, 8, 8), (441, 8, 8),
    (441, 32, 32), (100, 1, 1)])
def test_a_scene_runs_as_few_batches_of_one_size_as_its_tiles_fit_in(tiles, batch_size,
                                                                       size):
    from types import SimpleNamespace

    from geoseg.prediction.blocks import forward_size

    plan = SimpleNamespace(tiles=range(tiles))
    assert forward_size(plan, batch_size) == size
    assert -(-tiles // size) == -(-tiles // batch_size)  # no more batches than needed


@pytest.mark.parametrize("stitch", ["blend", "center"])
def test_block_size_changes_no_output_byte_and_each_tile_runs_once(tmp_path, make_bundle,
                                                                    stitch):
    """Batches fill across blocks: every forward pass holds --batch-size tiles whatever the
    block size (blocks of 1, 4 and 16 tiles here), the scene's last batch padded."""
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((200, 170), seed=2))
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    stride = 32
    grid = TileGrid.build(height=200, width=170, size=64, overlap=32)
    assert len(grid) == 30  # 4 batches of 8, the last one padded with 2 zero tiles
    outputs = []
    for factor in (1, 2, 4):
        bundle = counting(load_bundle(model))
        out = tmp_path / f"out{factor}"
        summary = predict_scene(scene, out, model=bundle, options=PredictOptions(
            stitch=stitch, block_size=factor * stride, probabilities=True, batch_size=8))
        assert summary["tiles_run"] == len(grid)
        assert bundle.network.batches == [8] * -(-len(grid) // 8)
        outputs.append([(out / "scene" / name).read_bytes()
                        for name in ("classes.tif", "probabilities.tif")])
    assert outputs[0] == outputs[1] == outputs[2]


def test_nodata_pixels_get_nodata_and_never_influence_the_model(tmp_path, make_bundle):
    pixels = smooth_noise((160, 160), seed=4)
    pixels[:, 40:90, 30:120] = 0
    scene_a = write_raster(tmp_path / "a.tif", pixels, nodata=0)
    garbage = pixels.copy()
    # a different nodata value hides different garbage in the same region
    garbage[:, 40:90, 30:120] = 7
    scene_b = write_raster(tmp_path / "b.tif", garbage, nodata=7)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    predict_scene(scene_a, tmp_path / "out", model=model,
                  options=PredictOptions(probabilities=True))
    predict_scene(scene_b, tmp_path / "out", model=model,
                  options=PredictOptions(probabilities=True))
    a, _, _ = read_classes(tmp_path / "out", "a")
    b, _, _ = read_classes(tmp_path / "out", "b")
    assert (a[40:90, 30:120] == 255).all()
    assert (a != 255).sum() == 160 * 160 - 50 * 90
    assert (a == b).all()
    with rasterio.open(tmp_path / "out" / "a" / "probabilities.tif") as ds:
        assert (ds.read()[:, 40:90, 30:120] == 0).all()


def test_all_nodata_scene_writes_all_nodata_without_calling_the_model(tmp_path, make_bundle):
    scene = write_raster(tmp_path / "scene.tif", np.zeros((3, 100, 80), np.uint8), nodata=0)
    bundle = counting(load_bundle(make_bundle()))
    summary = predict_scene(scene, tmp_path / "out", model=bundle)
    classes, _, _ = read_classes(tmp_path / "out")
    assert (classes == 255).all()
    assert bundle.network.tiles == 0 and summary["tiles_run"] == 0


def test_alpha_band_masks_and_is_not_a_model_input(tmp_path, make_bundle):
    rgba = np.concatenate([smooth_noise((100, 90)), np.full((1, 100, 90), 255, np.uint8)])
    rgba[3, :30] = 0
    scene = write_raster(tmp_path / "scene.tif", rgba, photometric="RGB", alpha="YES")
    predict_scene(scene, tmp_path / "out", model=make_bundle())
    classes, _, _ = read_classes(tmp_path / "out")
    assert (classes[:30] == 255).all() and (classes[30:] != 255).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_input_pixel_types(tmp_path, make_bundle, dtype):
    data = smooth_noise((70, 130), dtype="uint16").astype(dtype)
    scene = write_raster(tmp_path / "scene.tif", data)
    # a model trained on such data: its pixel type, a 0-4095 range (12-bit sensor values)
    model = make_bundle(scale=(1 / 4095,) * 3, input_dtype=dtype, input_range=(0, 4095))
    summary = predict_scene(scene, tmp_path / "out", model=model)
    assert summary["tiles_run"] == summary["tiles_in_grid"]
    classes, _, _ = read_classes(tmp_path / "out")
    assert classes.shape == (70, 130)


def test_band_selection_reorders_bands(tmp_path, make_bundle):
    data = smooth_noise((64, 64), bands=4)
    scene = write_raster(tmp_path / "scene.tif", data)
    ordered = write_raster(tmp_path / "ordered.tif", data[[2, 0, 1]])
    model = make_bundle()
    predict_scene(scene, tmp_path / "out", model=model, options=PredictOptions(bands=(3, 1, 2)))
    predict_scene(ordered, tmp_path / "out", model=model)
    assert (read_classes(tmp_path / "out")[0] == read_classes(tmp_path / "out", "ordered")[0]).all()


def test_scene_smaller_than_one_tile(tmp_path, make_bundle):
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((5, 9)))
    summary = predict_scene(scene, tmp_path / "out", model=make_bundle(tile_size=256, overlap=64))
    assert summary["tiles_in_grid"] == summary["tiles_run"] == 1
    assert read_classes(tmp_path / "out")[0].shape == (5, 9)


def test_nan_nodata_never_reaches_the_model(tmp_path, make_bundle):
    pixels = smooth_noise((120, 110), seed=5).astype("float32")
    holes = pixels.copy()
    holes[:, 30:70, 20:60] = np.nan
    zeros = pixels.copy()
    zeros[:, 30:70, 20:60] = -9999
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    predict_scene(write_raster(tmp_path / "nan.tif", holes, nodata=float("nan")),
                  tmp_path / "out", model=model)
    predict_scene(write_raster(tmp_path / "num.tif", zeros, nodata=-9999), tmp_path / "out",
                  model=model)
    nan_classes = read_classes(tmp_path / "out", "nan")[0]
    num_classes = read_classes(tmp_path / "out", "num")[0]
    assert (nan_classes[30:70, 20:60] == 255).all()
    assert (nan_classes == num_classes).all()


@pytest.mark.parametrize("nodata_value", [None, (7.0, 7.0, 7.0)])
def test_normalize_region_is_the_same_numbers_in_both_layouts_and_array_kinds(nodata_value):
    """numpy (C, H, W) for ONNX Runtime and torch (H, W, C) for torch hold the same float32
    values as the host's ``normalize``, rescale and nodata included."""
    from dataclasses import replace

    from geoseg.classes import make_classes
    from geoseg.model.inference import normalize_region
    from geoseg.model.meta import BundleMeta

    meta = BundleMeta(arch="tinycnn", encoder="-", bands=("r", "g", "b"),
                      classes=make_classes(("bg", "fg")), scale=(1 / 255,) * 3,
                      mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), tile_size=64, overlap=16)
    meta = replace(meta, nodata_value=nodata_value)
    raw = np.random.default_rng(0).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    valid = np.ones((40, 50), bool)
    valid[3:9, 10:30] = False
    rescale = ((1.1, -3.0, 0.0, 255.0),) * 3
    host = normalize(np.clip(raw * np.float32(1.1) - np.float32(3.0), 0, 255), valid, meta)
    chw = normalize_region(raw, valid, meta, rescale=rescale, channels_last=False)
    hwc = normalize_region(torch.from_numpy(raw), torch.from_numpy(valid), meta,
                           rescale=rescale).numpy()
    assert isinstance(chw, np.ndarray) and chw.shape == (3, 40, 50)
    np.testing.assert_array_equal(chw, hwc.transpose(2, 0, 1))
    np.testing.assert_allclose(chw, host, rtol=0, atol=1e-6)
    fill = 0.0 if nodata_value is None else (7.0 / 255 - 0.4) / 0.2
    np.testing.assert_allclose(chw[0, 3:9, 10:30], fill, rtol=1e-6)
