"""The geoseg command: bad input gets one clear line, exit 1, and nothing partial."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from conftest import smooth_noise, write_raster
from geoseg_pipelines.cli import cli

GEOSEG = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()"]


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    return result


def leftovers(folder):
    """Files under ``folder`` that are not complete outputs (temporary or partial)."""
    if not folder.exists():
        return []
    return [p.name for p in folder.rglob("*") if p.is_file() and p.name.startswith(".")]


def assert_one_line_error(result, *fragments, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module", autouse=True)
def shared_scheduler():
    """One single-worker cluster for the module, reached through $GEOSEG_SCHEDULER, so each
    command does not start its own."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_SCHEDULER", cluster.scheduler_address)
        yield cluster.scheduler_address


@pytest.fixture
def model(make_bundle):
    return make_bundle()


@pytest.fixture
def scene(tmp_path):
    return write_raster(tmp_path / "scene.tif", smooth_noise((80, 70)))


def test_predict_writes_the_class_raster(tmp_path, model, scene):
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "scene" / "classes.tif").is_file()
    assert leftovers(tmp_path / "out") == []


def test_missing_scene(tmp_path, model):
    result = run("predict", tmp_path / "nope.tif", "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "nope.tif", "not found")


def test_not_a_raster(tmp_path, model):
    text = tmp_path / "notes.tif"
    text.write_text("hello, not a raster")
    result = run("predict", text, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "notes.tif", "not a raster")
    assert not (tmp_path / "out" / "notes" / "classes.tif").exists()


def test_corrupt_tiff_leaves_nothing_under_the_final_name(tmp_path, model):
    good = write_raster(tmp_path / "good.tif", smooth_noise((400, 400)), tiled=True,
                        blockxsize=64, blockysize=64, compress="deflate")
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(data[: len(data) // 2])  # header intact, tiles missing
    result = run("predict", corrupt, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "corrupt.tif")
    assert not (tmp_path / "out" / "corrupt" / "classes.tif").exists()
    assert leftovers(tmp_path / "out") == []


def test_band_count_differs_from_the_model(tmp_path, model):
    scene = write_raster(tmp_path / "two.tif", smooth_noise((64, 64), bands=2))
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "two.tif", "has 2 bands", "expects 3", "--bands")


def test_no_crs_is_refused_unless_allowed(tmp_path, model):
    scene = write_raster(tmp_path / "nocrs.tif", smooth_noise((64, 64)), crs=None)
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "nocrs.tif", "no CRS", "--allow-no-crs")
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out",
                 "--allow-no-crs")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "nocrs" / "classes.tif") as ds:
        assert ds.crs is None


def test_rotated_transform_is_supported(tmp_path, model):
    rotated = Affine(1.8, 0.5, 500000.0, 0.4, -1.9, 4000000.0)
    scene = write_raster(tmp_path / "rot.tif", smooth_noise((64, 64)), transform=rotated)
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "rot" / "classes.tif") as ds:
        assert ds.transform == rotated


def test_existing_output_needs_overwrite(tmp_path, model, scene):
    """Outputs of another config are never replaced silently; the same config resumes
    (skips), as the batch issue asks."""
    assert run("predict", scene, "--model", model, "--out", tmp_path / "out").exit_code == 0
    before = (tmp_path / "out" / "scene" / "classes.tif").read_bytes()
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out",
                 "--stitch", "center")
    assert_one_line_error(result, "scene", "--overwrite")
    assert (tmp_path / "out" / "scene" / "classes.tif").read_bytes() == before
    same = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert same.exit_code == 0 and "skipped" in same.output
    assert run("predict", scene, "--model", model, "--out", tmp_path / "out",
               "--stitch", "center", "--overwrite").exit_code == 0
    assert (tmp_path / "out" / "scene" / "classes.tif").read_bytes() != before


def test_a_foreign_file_under_the_output_name_is_not_replaced(tmp_path, model, scene):
    target = tmp_path / "out" / "scene" / "classes.tif"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "--overwrite")
    assert target.read_bytes() == b"someone else's file"


def test_unwritable_output_folder(tmp_path, model, scene):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    result = run("predict", scene, "--model", model, "--out", blocker / "out")
    assert_one_line_error(result, "cannot write outputs", "--out")


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01garbage", "not a geoseg model bundle"),
    (None, "without geoseg metadata"),
])
def test_model_file_that_is_not_a_bundle(tmp_path, scene, content, message):
    path = tmp_path / "model.safetensors"
    if content is None:
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    result = run("predict", scene, "--model", path, "--out", tmp_path / "out")
    assert_one_line_error(result, "model.safetensors", message)


def test_a_bad_scene_fails_alone(tmp_path, model, scene):
    result = run("predict", tmp_path / "missing.tif", scene, "--model", model,
                 "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert (tmp_path / "out" / "scene" / "classes.tif").is_file()


def test_debug_shows_the_traceback(tmp_path, model):
    result = CliRunner().invoke(cli, ["--debug", "predict", str(tmp_path / "nope.tif"),
                                      "--model", str(model), "--out", str(tmp_path)], obj={})
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)


def test_bad_tile_size_names_the_nearest_valid_ones(tmp_path, model, scene):
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out",
                 "--tile-size", "100")
    assert_one_line_error(result, "tile size 100", "96 or 128", code=2)


def test_config_file_sets_options_and_the_command_line_wins(tmp_path, model, scene):
    config = tmp_path / "c.yaml"
    config.write_text("predict:\n  stitch: center\n  probabilities: true\n")
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out",
                 "--config", config, "--no-probabilities")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "scene" / "classes.tif") as ds:
        assert ds.tags()["GEOSEG_STITCH"] == "center"
    assert not (tmp_path / "out" / "scene" / "probabilities.tif").exists()
    config.write_text("predict:\n  stich: center\n")
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out2",
                 "--config", config)
    assert_one_line_error(result, "unknown option(s) stich", "valid:", code=2)


def test_model_create_and_info(tmp_path):
    out = tmp_path / "m.safetensors"
    result = run("model", "create", "--arch", "Unet", "--encoder", "resnet18", "--classes",
                 "background,building", "--bands", "3", "--tta", "flips", "--out", out)
    assert result.exit_code == 0, result.output
    result = run("info", out)
    assert result.exit_code == 0
    assert "Unet / resnet18" in result.output and "1=building" in result.output
    assert re.search(r"test-time augmentation\s+flips", result.output)
    meta = json.loads(run("info", out, "--json").output)
    assert meta["bands"] == ["band1", "band2", "band3"] and meta["tile_size"] == 256
    assert meta["tta"] == "flips"
    probe = tmp_path / "probe"
    probe.write_text("")  # the mode any other output gets under this umask
    assert out.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777


def test_model_create_from_an_existing_smp_state_dict(tmp_path):
    import segmentation_models_pytorch as smp
    import torch

    net = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=3)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "m.safetensors"
    result = run("model", "create", "--classes", "a,b,c", "--bands", "red,green,blue,nir",
                 "--weights", tmp_path / "weights.pt", "--out", out)
    assert result.exit_code == 0, result.output
    from geoseg.model import load_bundle

    loaded = load_bundle(out)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value)
    wrong = run("model", "create", "--classes", "a,b", "--bands", "3",
                "--weights", tmp_path / "weights.pt", "--out", tmp_path / "w.safetensors")
    assert_one_line_error(wrong, "do not fit")


def test_unknown_architecture_lists_the_valid_ones(tmp_path):
    result = run("model", "create", "--arch", "Unet3000", "--classes", "a,b", "--bands", "3",
                 "--out", tmp_path / "m.safetensors")
    assert_one_line_error(result, "unknown architecture", "Unet", "FPN", code=2)


def test_empty_file(tmp_path, model):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    result = run("predict", empty, "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "empty.tif")
    assert not (tmp_path / "out" / "empty" / "classes.tif").exists()


def test_all_nodata_scene_writes_an_all_nodata_raster(tmp_path, model):
    scene = write_raster(tmp_path / "blank.tif", np.zeros((3, 50, 40), np.uint8), nodata=0)
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "blank" / "classes.tif") as ds:
        assert (ds.read(1) == 255).all()
    manifest = json.loads((tmp_path / "out" / "blank" / "manifest.json").read_text())
    assert manifest["tiles_run"] == 0 and manifest["nodata_pixels"] == 50 * 40


@pytest.mark.parametrize("yaml_text, message", [
    ("block_size: abc", "block_size 'abc' must be an integer"),
    ("tile_size: '256'", "tile_size '256' must be an integer"),
    ("batch_size: 2.5", "batch_size 2.5 must be an integer"),
    ("tile_size: 0", "tile_size 0 must be an integer >= 1"),
    ("probabilities: maybe", "probabilities 'maybe' must be true or false"),
])
def test_bad_config_values_get_one_line(tmp_path, model, scene, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(f"predict:\n  {yaml_text}\n")
    result = run("predict", scene, "--model", model, "--out", tmp_path / "out",
                 "--config", config)
    assert_one_line_error(result, message, code=2)


def test_a_folder_without_rasters(tmp_path, model):
    (tmp_path / "empty").mkdir()
    result = run("predict", tmp_path / "empty", "--model", model, "--out", tmp_path / "out")
    assert_one_line_error(result, "no raster found")


@pytest.mark.parametrize("args, message", [
    (["--tile-size", "100"], "tile size 100 is not a positive multiple"),
    (["--overlap", "300"], "overlap 300 is more than half the tile size 64"),
    (["--bands", "1,2"], "--bands 1,2 selects 2 bands; the model takes 3"),
    (["--device", "cuda"], "--device cuda: this machine has no CUDA device"),
    (["--model", "missing.safetensors"], "--model missing.safetensors: no such file"),
])
def test_bad_options_fail_before_any_cluster_starts(tmp_path, model, scene, args, message):
    """Options the model rules out are one line and exit 2 as the command starts, even with
    --workers 2 asking for a cluster; nothing is written."""
    if "--device" in args:
        from geoseg.model.devices import cuda_present

        if cuda_present():
            pytest.skip("this machine has a CUDA device")
    cmd = [*GEOSEG, "predict", str(scene), "-m", str(model), "-o", str(tmp_path / "out"),
           "--workers", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "GEOSEG_SCHEDULER": ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "cluster" not in result.stdout and not (tmp_path / "out").exists()


def test_rio_geoseg_runs_the_same_commands(tiny_model_file):
    """`rio geoseg ...` (a rasterio.rio_plugins entry point): the same group, the same
    output as `geoseg ...`."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    rio, geoseg = bin_dir / "rio", bin_dir / "geoseg"
    if not rio.exists():
        pytest.skip("rasterio's rio command is not installed beside this Python")
    listed = subprocess.run([rio, "--help"], capture_output=True, text=True, check=True)
    assert any(line.split()[:1] == ["geoseg"] for line in listed.stdout.splitlines())
    via_rio = subprocess.run([rio, "geoseg", "info", str(tiny_model_file)],
                             capture_output=True, text=True)
    direct = subprocess.run([geoseg, "info", str(tiny_model_file)], capture_output=True,
                            text=True)
    assert via_rio.returncode == direct.returncode == 0, via_rio.stderr
    assert via_rio.stdout == direct.stdout and "tinycnn" in via_rio.stdout
    bad = subprocess.run([rio, "geoseg", "info", "missing.safetensors"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in (
        bad.stdout + bad.stderr)
