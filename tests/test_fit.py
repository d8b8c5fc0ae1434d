"""A scene fits a model or is refused in one line: pixel size against the model's GSD,
pixel values against its radiometry; --stretch and --input-range rescale on the device."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from conftest import shared_data, smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.errors import ConfigError, InvalidInputError
from geoseg.inputs.fit import metres_per_pixel, model_zoom
from geoseg.prediction.flow import predict_scene
from geoseg.grid import PixelGrid
from geoseg.model import read_meta
from geoseg.model.meta import BundleMeta
from geoseg.inputs.scene import open_scene
from geoseg_pipelines.cli import cli

GEOSEG = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()"]


def grid(crs, size, *, origin=(500000.0, 5000000.0), shape=(64, 64)):
    return PixelGrid(shape[0], shape[1], Affine(size, 0, origin[0], 0, -size, origin[1]),
                     rasterio.crs.CRS.from_user_input(crs))


def test_metres_per_pixel_in_metres_feet_and_degrees():
    assert metres_per_pixel(grid("EPSG:32633", 0.5)) == pytest.approx(0.5)
    # Massachusetts State Plane in US survey feet: 3.28 ft is a metre
    assert metres_per_pixel(grid("EPSG:2249", 3.2808333)) == pytest.approx(1.0, rel=1e-4)
    # 1e-5 degree at 45 N: 0.79 m east-west, 1.11 m north-south
    assert metres_per_pixel(grid("EPSG:4326", 1e-5, origin=(10.0, 45.0))) == \
        pytest.approx((0.788 + 1.111) / 2, rel=0.01)
    assert metres_per_pixel(PixelGrid(8, 8, Affine.identity(), None)) is None


def meta_at(gsd):
    return BundleMeta(arch="pixelwise", encoder="-", bands=("r", "g", "b"), classes=(),
                      scale=(1 / 255,) * 3, mean=(0.5,) * 3, std=(0.25,) * 3, gsd=gsd)


@pytest.mark.parametrize("size, zoom", [(1.0, 1.0), (1.2, 1.0), (0.85, 1.0), (0.3, 1 / 0.3),
                                         (0.1, 10.0), (2.0, 0.5), (3.9, 1 / 3.9)])
def test_scenes_off_the_models_gsd_are_predicted_at_it(tmp_path, size, zoom):
    """Within 1.25x a scene goes as it is; finer or up to 4x coarser it is zoomed to the
    model's GSD (scene pixels per model pixel)."""
    scene = write_raster(tmp_path / "s.tif", smooth_noise((32, 32)),
                         transform=Affine(size, 0, 500000, 0, -size, 5000000))
    assert model_zoom(open_scene(scene), meta_at(1.0), resample="auto") == pytest.approx(zoom)
    assert model_zoom(open_scene(scene), meta_at(1.0), resample="off") == 1.0
    assert model_zoom(open_scene(scene), meta_at(None), resample="auto") == 1.0  # old bundle


def test_a_far_coarser_scene_is_refused_not_upsampled(tmp_path):
    scene = write_raster(tmp_path / "landsat.tif", smooth_noise((32, 32)),
                         transform=Affine(30, 0, 500000, 0, -30, 5000000))
    with pytest.raises(InvalidInputError, match=r"landsat.tif: pixels are 30 m, 30x coarser "
                                                r"than the 1 m the model was trained at"):
        model_zoom(open_scene(scene), meta_at(1.0), resample="auto")
    assert model_zoom(open_scene(scene), meta_at(1.0), resample="off") == 1.0


def texture_at(tmp_path, name, factor, *, crs="EPSG:32633", size=1.0, shape=(96, 112)):
    """A 1 m texture enlarged ``factor`` times (nearest): the same ground at size/factor m."""
    pixels = smooth_noise(shape, seed=11)
    if factor > 1:
        pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    step = size / factor
    return write_raster(tmp_path / name, pixels, crs=crs,
                        transform=Affine(step, 0, 500000 if crs != "EPSG:4326" else 10.0, 0,
                                         -step, 5000000 if crs != "EPSG:4326" else 45.0))


def agreement(a, b):
    return float((a == b).mean())


def test_a_finer_scene_is_predicted_at_the_models_gsd_on_its_own_grid(tmp_path, make_bundle):
    """A 0.25 m scene of the same ground as a 1 m one: predicted at 1 m, its classes are the
    1 m prediction's probabilities enlarged bilinearly (up to uint8 rounding and ties); as
    it is (--resample off) the 1 m model sees 4x larger shapes and agrees far less with the
    1 m classes. Every output stays on the scene's own grid."""
    import torch

    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, gsd=1.0)
    one = texture_at(tmp_path, "one.tif", 1)
    fine = texture_at(tmp_path, "fine.tif", 4)
    predict_scene(one, tmp_path / "out", model=model, options=PredictOptions(probabilities=True))
    zoomed = predict_scene(fine, tmp_path / "out", model=model,
                           options=PredictOptions(probabilities=True))
    predict_scene(fine, tmp_path / "off", model=model, options=PredictOptions(resample="off"))
    base, _ = classes_of(tmp_path / "out", "one")
    at_1m, tags = classes_of(tmp_path / "out", "fine")
    as_is, _ = classes_of(tmp_path / "off", "fine")
    with rasterio.open(tmp_path / "out" / "one" / "probabilities.tif") as ds:
        probs = torch.from_numpy(ds.read().astype(np.float32))[None]
    enlarged = torch.nn.functional.interpolate(probs, scale_factor=4, mode="bilinear",
                                               align_corners=False)[0].argmax(0).numpy()
    nearest = base.repeat(4, axis=0).repeat(4, axis=1)
    assert 0.05 < (base == 1).mean() < 0.95
    assert agreement(at_1m, enlarged) >= 0.98
    assert agreement(as_is, nearest) < agreement(at_1m, nearest) - 0.05
    assert tags["GEOSEG_MODEL_TILE"] == "64" and tags["GEOSEG_TILE_SIZE"] == "256"
    with rasterio.open(fine) as src:
        for name in ("classes.tif", "probabilities.tif"):
            with rasterio.open(tmp_path / "out" / "fine" / name) as ds:
                assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
    # each tile of the global grid went through the network once
    assert zoomed["tiles_run"] == zoomed["tiles_in_grid"]


def test_resampled_prediction_is_byte_identical_across_block_sizes(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, gsd=1.0)
    fine = texture_at(tmp_path, "fine.tif", 3, shape=(70, 90))
    digests = set()
    for block in (64, 200, 1024):
        out = tmp_path / f"b{block}"
        predict_scene(fine, out, model=model,
                      options=PredictOptions(block_size=block, probabilities=True))
        digests.add(tuple((out / "fine" / n).read_bytes()
                          for n in ("classes.tif", "probabilities.tif")))
    assert len(digests) == 1


def test_a_coarser_scene_is_enlarged_to_the_models_gsd(tmp_path, make_bundle):
    """2 m pixels into a 1 m model: tiles of 32 scene px enlarged to the network's 64."""
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, gsd=1.0)
    coarse = texture_at(tmp_path, "coarse.tif", 1, size=2.0)
    predict_scene(coarse, tmp_path / "out", model=model)
    classes, tags = classes_of(tmp_path / "out", "coarse")
    assert tags["GEOSEG_MODEL_TILE"] == "64" and tags["GEOSEG_TILE_SIZE"] == "32"
    with rasterio.open(coarse) as src:
        assert classes.shape == src.shape


def test_a_geographic_scene_is_zoomed_by_its_metres_per_degree(tmp_path, make_bundle):
    """2.5e-6 degree pixels at 45 N (0.2 m east-west, 0.28 m north-south): predicted at 1 m,
    written on the scene's own lon/lat grid."""
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, gsd=1.0)
    scene = texture_at(tmp_path, "wgs84.tif", 4, crs="EPSG:4326", size=1e-5, shape=(40, 48))
    predict_scene(scene, tmp_path / "out", model=model)
    _, tags = classes_of(tmp_path / "out", "wgs84")
    assert int(tags["GEOSEG_TILE_SIZE"]) == pytest.approx(64 / ((0.197 + 0.278) / 2), abs=2)
    with rasterio.open(scene) as src, \
            rasterio.open(tmp_path / "out" / "wgs84" / "classes.tif") as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)


def uint16_scene(tmp_path, name="refl.tif"):
    """The uint8 texture as uint16 reflectance: value * 40 + 1000 (1000..11200)."""
    pixels = smooth_noise((96, 80), seed=5)
    refl = pixels.astype(np.uint16) * 40 + 1000
    return (write_raster(tmp_path / "u8.tif", pixels),
            write_raster(tmp_path / name, refl))


def classes_of(folder, stem):
    with rasterio.open(folder / stem / "classes.tif") as ds:
        return ds.read(1), ds.tags()


def test_uint16_reflectance_into_a_uint8_model_is_refused_with_what_fits(tmp_path,
                                                                         make_bundle):
    _, scene = uint16_scene(tmp_path)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    with pytest.raises(InvalidInputError) as err:
        predict_scene(scene, tmp_path / "out", model=model)
    message = str(err.value)
    assert "\n" not in message
    assert "refl.tif: uint16 values reach" in message and "expects uint8 values in 0-255" \
        in message and "--stretch 2,98" in message and "--input-range" in message
    assert not (tmp_path / "out" / "refl").exists()


def test_input_range_rescales_exactly_onto_the_models_range(tmp_path, make_bundle):
    u8, scene = uint16_scene(tmp_path)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    predict_scene(u8, tmp_path / "out", model=model)
    predict_scene(scene, tmp_path / "out", model=model,
                  options=PredictOptions(input_range=(1000, 1000 + 255 * 40)))
    plain, _ = classes_of(tmp_path / "out", "u8")
    rescaled, tags = classes_of(tmp_path / "out", "refl")
    assert 0.02 < (plain == 1).mean() < 0.98
    assert (rescaled == plain).mean() >= 0.999
    assert json.loads(tags["GEOSEG_RESCALED_FROM"]) == [[1000.0, 11200.0]] * 3


def test_stretch_maps_each_bands_percentiles(tmp_path, make_bundle):
    _, scene = uint16_scene(tmp_path)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    summary = predict_scene(scene, tmp_path / "out", model=model,
                            options=PredictOptions(stretch=(2, 98)))
    _, tags = classes_of(tmp_path / "out", "refl")
    with rasterio.open(scene) as ds:
        data = ds.read()
    expected = [[float(np.percentile(b, 2)), float(np.percentile(b, 98))] for b in data]
    assert np.allclose(json.loads(tags["GEOSEG_RESCALED_FROM"]), expected)
    assert summary["tiles_run"] > 0


def test_a_model_trained_on_stretched_scenes_stretches_every_scene(tmp_path, make_bundle):
    """A bundle with ``stretch`` maps each scene's percentiles onto its range by itself: a
    darker, flatter copy of a scene (value / 2 + 20) predicts as the scene does, where a
    model without it sees two different scenes; ``--input-range`` still overrides it."""
    pixels = smooth_noise((96, 80), seed=5)
    bright = write_raster(tmp_path / "bright.tif", pixels)
    dull = write_raster(tmp_path / "dull.tif", pixels.astype(np.float32) / 2 + 20)
    plain = make_bundle(arch="tinycnn", tile_size=64, overlap=32, name="plain",
                        input_dtype="uint8", input_range=(0, 255))
    stretched = make_bundle(arch="tinycnn", tile_size=64, overlap=32, name="stretched",
                            input_dtype="uint8", input_range=(0, 255), stretch=(2, 98))
    assert read_meta(stretched).stretch == (2.0, 98.0) and read_meta(plain).stretch is None
    found = {}
    for model in (plain, stretched):
        for scene in (bright, dull):
            out = tmp_path / model.stem
            predict_scene(scene, out, model=model,
                          options=PredictOptions(input_range=(0, 255))
                          if scene == dull and model == plain else PredictOptions())
            found[model.stem, scene.stem] = classes_of(out, scene.stem)
    a, tags = found["stretched-tinycnn-0", "bright"]
    b, _ = found["stretched-tinycnn-0", "dull"]
    assert 0.02 < (a == 1).mean() < 0.98 and (a == b).mean() >= 0.999
    assert "GEOSEG_RESCALED_FROM" in tags
    plain_a, plain_tags = found["plain-tinycnn-0", "bright"]
    plain_b, _ = found["plain-tinycnn-0", "dull"]
    assert (plain_a != plain_b).mean() > 0.01 and "GEOSEG_RESCALED_FROM" not in plain_tags
    predict_scene(dull, tmp_path / "fixed", model=stretched,
                  options=PredictOptions(input_range=(0, 255)))
    assert json.loads(classes_of(tmp_path / "fixed", "dull")[1]["GEOSEG_RESCALED_FROM"]) \
        == [[0.0, 255.0]] * 3


def test_a_damaged_file_is_one_line_when_its_sample_is_read(tmp_path, make_bundle):
    """The stretch's decimated sample (a model's own stretch or --stretch) reads pixels
    before any block: a truncated file is named there in the line a block read gives."""
    pixels = smooth_noise((256, 256), seed=3)
    scene = write_raster(tmp_path / "cut.tif", pixels)
    data = scene.read_bytes()
    scene.write_bytes(data[: len(data) // 2])
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, input_dtype="uint8",
                        input_range=(0, 255), stretch=(2, 98))
    with pytest.raises(InvalidInputError) as err:
        predict_scene(scene, tmp_path / "out", model=model, options=PredictOptions())
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{scene}: cannot read pixels")
    assert message.endswith("the file may be corrupt")


def test_a_uint16_scene_holding_0_255_fits_as_it_is(tmp_path, make_bundle):
    pixels = smooth_noise((64, 64), seed=2).astype(np.uint16)
    scene = write_raster(tmp_path / "wide.tif", pixels)
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    predict_scene(scene, tmp_path / "out", model=model)
    _, tags = classes_of(tmp_path / "out", "wide")
    assert "GEOSEG_RESCALED_FROM" not in tags


@pytest.mark.parametrize("options, message", [
    (dict(stretch=(98, 2)), "LOW must be below HIGH"),
    (dict(stretch=(2, 101)), "percentiles 0 <= LOW < HIGH <= 100"),
    (dict(stretch="2,x"), "must be two numbers"),
    (dict(stretch=(2, 98), input_range=(0, 1)), "not both"),
    (dict(resample="bilinear"), "valid: auto, off"),
])
def test_bad_rescale_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        PredictOptions(**options)


def test_the_bundle_records_gsd_and_radiometry_and_old_bundles_still_load(tmp_path):
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, ["model", "create", "--arch", "pixelwise", "--encoder",
                                      "-", "--classes", "bg,fg", "--bands", "red,green,nir",
                                      "--gsd", "0.5", "--input-dtype", "uint16",
                                      "--input-range", "0,10000", "--scale", "1e-4,1e-4,1e-4",
                                      "--stretch", "1,99", "-o", str(out)], obj={})
    assert result.exit_code == 0, result.output
    meta = read_meta(out)
    assert meta.gsd == 0.5 and meta.input_dtype == "uint16"
    assert meta.input_range == ((0.0, 10000.0),) * 3 and meta.stretch == (1.0, 99.0)
    info = CliRunner().invoke(cli, ["info", str(out)], obj={}).output
    assert "0.5 m/px" in info and "uint16, red 0-10000; green 0-10000; nir 0-10000" in info
    assert re.search(r"input stretch\s+each band's 1-99th percentile onto the range", info)
    for bad, message in ((["--stretch", "2"], "two percentiles"),
                         (["--stretch", "2,98", "--scale", "1e-4"], "give the range too")):
        result = CliRunner().invoke(cli, ["model", "create", "--arch", "pixelwise",
                                          "--encoder", "-", "--classes", "bg,fg", "--bands",
                                          "1", *bad, "-o", str(tmp_path / "x.safetensors")],
                                    obj={})
        assert result.exit_code == 2 and message in result.output, result.output
    # a bundle written before these fields existed
    old = json.loads(meta.to_json())
    for key in ("gsd", "input_dtype", "input_range", "stretch"):
        del old[key]
    from safetensors.numpy import load_file, save_file

    legacy = tmp_path / "legacy.safetensors"
    save_file(load_file(str(out)), str(legacy), metadata={"geoseg": json.dumps(old)})
    meta = read_meta(legacy)
    assert meta.gsd is None and meta.input_range is None and meta.input_dtype is None
    info = CliRunner().invoke(cli, ["info", str(legacy)], obj={}).output
    assert re.search(r"ground sample distance\s+unknown", info)
    assert "unknown type, range unknown" in info
    assert meta.stretch is None and re.search(r"input stretch\s+none", info)


@pytest.mark.integration
def test_landsat_uint16_is_refused_plainly_and_predicts_with_stretch(tmp_path, make_bundle):
    """The real uint16, 30 m Landsat scene and a 1 m uint8 model: one line and exit 1 with
    no options; with --stretch and --resample off (predict at 30 m anyway) a prediction."""
    scene = shared_data("landsat", "LC08_L1TP_224078_20200518_20200518_01_RT.TIF")
    model = make_bundle(arch="pixelwise", tile_size=256, overlap=64)
    model_1m = tmp_path / "m1.safetensors"
    from geoseg.model import load_bundle, save_bundle
    from dataclasses import replace

    bundle = load_bundle(model)
    save_bundle(replace(bundle, meta=replace(bundle.meta, gsd=1.0, input_dtype="uint8",
                                             input_range=((0.0, 255.0),) * 3)), model_1m)
    base = [*GEOSEG, "predict", str(scene), "-m", str(model_1m), "-o", str(tmp_path / "out")]
    plain = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1
    errors = [line for line in plain.stderr.splitlines() if line.startswith("error:")]
    # the scene's line, then the batch's closing line; no traceback
    assert "pixels are 30 m, 30x coarser" in errors[0], plain.stderr
    assert "1 of 1 scene(s) failed" in errors[-1] and "Traceback" not in plain.stderr
    no_gsd = subprocess.run([*base, "--resample", "off"], capture_output=True, text=True,
                            timeout=300)
    assert no_gsd.returncode == 1 and "uint16 values reach" in no_gsd.stderr
    assert "--stretch 2,98" in no_gsd.stderr
    done = subprocess.run([*base, "--resample", "off", "--stretch", "2,98"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "out" / scene.stem / "classes.tif") as ds, \
            rasterio.open(scene) as src:
        assert ds.shape == src.shape and ds.transform == src.transform
        assert "GEOSEG_RESCALED_FROM" in ds.tags()


def test_a_far_finer_scene_is_refused_with_the_line_that_fits_it(tmp_path):
    scene = write_raster(tmp_path / "drone.tif", smooth_noise((32, 32)),
                         transform=Affine(0.02, 0, 500000, 0, -0.02, 5000000))
    with pytest.raises(InvalidInputError, match=r"50x finer .* \(gdalwarp -tr 1 1 -r average\)"):
        model_zoom(open_scene(scene), meta_at(1.0), resample="auto")
