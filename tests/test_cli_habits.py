"""Habits users bring from rio and GDAL, and advice that must be right: -b/--bidx, --co,
--recursive, scenes with one file name in several folders, which option differs, what a
1-band scene needs, fractions in model create, a bundle given as --weights."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from conftest import smooth_noise, write_raster
from geoseg_pipelines.cli import cli

UTM = Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


@pytest.fixture
def model(make_bundle):
    return make_bundle(arch="tinycnn", tile_size=64, overlap=32)


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.output
    return lines[0]


def test_bidx_is_an_alias_of_bands(tmp_path, model):
    scene = write_raster(tmp_path / "s.tif", smooth_noise((40, 50), bands=4), transform=UTM)
    for flag in ("--bands", "-b", "--bidx"):
        result = run("predict", scene, "-m", model, "-o", tmp_path / flag.strip("-"), flag,
                     "3,2,1")
        assert result.exit_code == 0, result.output
    outputs = [(tmp_path / name / "s" / "classes.tif").read_bytes()
               for name in ("bands", "b", "bidx")]
    assert outputs[0] == outputs[1] == outputs[2]


def test_co_sets_the_rasters_creation_options(tmp_path, model):
    scene = write_raster(tmp_path / "s.tif", smooth_noise((40, 50)), transform=UTM)
    result = run("predict", scene, "-m", model, "-o", tmp_path / "out", "--probabilities",
                 "--co", "compress=zstd", "--co", "LEVEL=9")
    assert result.exit_code == 0, result.output
    for name in ("classes.tif", "probabilities.tif"):
        with rasterio.open(tmp_path / "out" / "s" / name) as ds:
            assert ds.compression.name == "zstd"
    bad = run("predict", scene, "-m", model, "-o", tmp_path / "bad", "--co", "COLOR=RED")
    assert bad.exit_code == 2
    assert "--co COLOR: not a creation option geoseg passes" in error_line(bad)
    for lossy in ("COMPRESS=JPEG", "TARGET_SRS=EPSG:4326"):  # class ids and grid stay exact
        bad = run("predict", scene, "-m", model, "-o", tmp_path / "bad", "--co", lossy)
        assert bad.exit_code == 2, bad.output
    bad = run("predict", scene, "-m", model, "-o", tmp_path / "bad", "--co", "COMPRESS")
    assert bad.exit_code == 2 and "expected NAME=VALUE" in error_line(bad)


def test_recursive_takes_sub_folders_and_one_name_in_two_folders_gets_two(tmp_path, model):
    for seed, region in enumerate(("north", "south")):
        (tmp_path / "scenes" / region).mkdir(parents=True)
        write_raster(tmp_path / "scenes" / region / "tile.tif",
                     smooth_noise((40, 50), seed=seed), transform=UTM)
    (tmp_path / "scenes" / ".hidden").mkdir()
    write_raster(tmp_path / "scenes" / ".hidden" / "x.tif", smooth_noise((40, 50)),
                 transform=UTM)
    plain = run("predict", tmp_path / "scenes", "-m", model, "-o", tmp_path / "o1")
    assert plain.exit_code == 1 and "no raster found" in error_line(plain)
    result = run("predict", tmp_path / "scenes", "-m", model, "-o", tmp_path / "out",
                 "--recursive")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == [
        "north_tile", "south_tile"]
    north = rasterio.open(tmp_path / "out" / "north_tile" / "classes.tif").read(1)
    south = rasterio.open(tmp_path / "out" / "south_tile" / "classes.tif").read(1)
    assert not np.array_equal(north, south)  # each folder holds its own scene's classes
    rerun = run("predict", tmp_path / "scenes", "-m", model, "-o", tmp_path / "out", "-r")
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.count("complete for this model and options, skipped") == 2
    assert "tile.tif (north_tile)" in rerun.output  # the table tells them apart


def test_a_changed_option_is_named_when_outputs_differ(tmp_path, model):
    scene = write_raster(tmp_path / "s.tif", smooth_noise((40, 50)), transform=UTM)
    assert run("predict", scene, "-m", model, "-o", tmp_path / "out").exit_code == 0
    again = run("predict", scene, "-m", model, "-o", tmp_path / "out", "--tta", "flips",
                "--stitch", "center")
    assert again.exit_code == 1
    line = error_line(again)
    assert "other options: stitch blend (now center), tta unset (now flips)" in line, line
    assert "--overwrite" in line


def test_a_one_band_scene_is_told_the_bands_that_work(tmp_path, model):
    scene = write_raster(tmp_path / "pan.tif", smooth_noise((40, 50), bands=1),
                         transform=UTM)
    result = run("predict", scene, "-m", model, "-o", tmp_path / "out")
    assert "pass --bands 1,1,1" in error_line(result)
    fixed = run("predict", scene, "-m", model, "-o", tmp_path / "out", "--bands", "1,1,1")
    assert fixed.exit_code == 0, fixed.output


def test_evaluate_names_the_word_that_ignores_a_value(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.classes import make_classes
    from test_vectorize import write_classes

    classes = write_classes(tmp_path / "classes.tif", np.zeros((20, 20), np.uint8),
                            classes=make_classes(["background", "building"]))
    truth = tmp_path / "truth.gpkg"
    gpd.GeoDataFrame({"kind": ["house", "shed"]},
                     geometry=[box(500002, 4099990, 500005, 4099995),
                               box(500006, 4099990, 500008, 4099995)],
                     crs="EPSG:32633").to_file(truth)
    result = run("evaluate", classes, "--truth", truth, "--attribute", "kind", "--map",
                 "house=building")
    assert "a class name, or ignore to leave them out" in error_line(result)
    ok = run("evaluate", classes, "--truth", truth, "--attribute", "kind", "--map",
             "house=building", "--map", "shed=ignore")
    assert ok.exit_code == 0, ok.output


def test_model_create_takes_fractions_and_names_a_bundle_given_as_weights(tmp_path):
    base = ["model", "create", "--arch", "pixelwise", "--encoder", "-", "--classes",
            "bg,fg", "--bands", "red,green,nir"]
    made = run(*base, "--scale", "1/10000,1/10000,1/10000", "-o", tmp_path / "m.safetensors")
    assert made.exit_code == 0, made.output
    from geoseg.model import read_meta

    assert read_meta(tmp_path / "m.safetensors").scale == pytest.approx((1e-4,) * 3)
    bad = run(*base, "--scale", "1/0,1,1", "-o", tmp_path / "x.safetensors")
    assert bad.exit_code == 2 and "numbers or fractions" in error_line(bad)
    wrap = run("model", "create", "--classes", "bg,fg", "--bands", "3", "--weights",
               tmp_path / "m.safetensors", "-o", tmp_path / "w.safetensors")
    assert wrap.exit_code == 2
    assert ("is a geoseg bundle of pixelwise/- with 3 bands and 2 classes; create with "
            "--arch pixelwise --encoder - --bands red,green,nir --classes bg,fg") \
        in error_line(wrap)


def test_every_option_has_help():
    import click

    missing = []

    def walk(command, path):
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "geoseg")
    assert not missing, missing


def test_folder_names_never_clash():
    from geoseg.inputs.sources import folder_names

    names = folder_names(["/d/a/x.tif", "/d/b/x.tif", "/d/a_x.tif", "/e/y.tif", "/f/Y.tif",
                          "/d/c/z.tif", "/d/c/z.tif"])
    assert len({n.lower() for n in names.values()}) == len(names)
    assert names["/d/b/x.tif"] == "b_x"
    assert folder_names(["/d/x.tif"]) == {"/d/x.tif": "x"}


def test_recursive_never_takes_the_batchs_own_outputs(tmp_path, model):
    (tmp_path / "data").mkdir()
    write_raster(tmp_path / "data" / "s.tif", smooth_noise((40, 50)), transform=UTM)
    out = tmp_path / "data" / "pred"
    for _ in range(2):
        result = run("predict", tmp_path / "data", "-r", "-m", model, "-o", out)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["s"]


def test_outputs_of_an_older_geoseg_are_still_complete(tmp_path, model):
    """A manifest written before an option existed is read with that option's default:
    the rerun skips the scene instead of refusing it as made otherwise."""
    import json

    scene = write_raster(tmp_path / "s.tif", smooth_noise((40, 50)), transform=UTM)
    assert run("predict", scene, "-m", model, "-o", tmp_path / "out").exit_code == 0
    manifest = tmp_path / "out" / "s" / "manifest.json"
    data = json.loads(manifest.read_text())
    for key in ("preview", "vector_format", "creation_options"):
        del data["options"][key]
    manifest.write_text(json.dumps(data))
    again = run("predict", scene, "-m", model, "-o", tmp_path / "out")
    assert again.exit_code == 0 and "skipped" in again.output, again.output
