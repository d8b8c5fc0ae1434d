"""`geoseg predict` on Dask: inputs, failures that stay alone, the summary, and a client
killed mid-batch whose rerun skips what was complete and finishes the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, smooth_noise, write_raster
from geoseg.classes import make_classes
from geoseg.prediction.options import PredictOptions
from geoseg.model import create_bundle, save_bundle
from geoseg.prediction.flow import predict_scene
from geoseg_pipelines.inputs import expand_inputs
from geoseg_pipelines.cli import cli


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-model")
    bundle = create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                           bands=("r", "g", "b"), tile_size=64, overlap=32, name="tiny",
                           arch_kwargs={"depth": 4, "width": 16})
    path = root / "tiny.safetensors"
    save_bundle(bundle, path)
    return path


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={}, catch_exceptions=False)
    return result.exit_code, result.output


def test_bad_scenes_fail_alone_and_the_summary_names_them(tmp_path, model, scheduler):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = [write_raster(inputs / f"good{i}.tif", smooth_noise((96, 80), seed=i))
            for i in range(2)]
    (inputs / "garbage.tif").write_bytes(b"II*\x00 this is not a tiff" * 10)
    write_raster(inputs / "gray.tif", smooth_noise((64, 64), bands=1))
    truncated = write_raster(inputs / "truncated.tif", smooth_noise((256, 256), seed=5),
                             tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    code, output = run_cli("predict", inputs, "-m", model, "-o", tmp_path / "out",
                           "--scheduler", scheduler, "--block-size", 64)
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {os.path.basename(s["scene"]): s for s in summary["scenes"]}
    assert {k: v["status"] for k, v in status.items()} == {
        "garbage.tif": "failed", "good0.tif": "done", "good1.tif": "done",
        "gray.tif": "failed", "truncated.tif": "failed"}
    assert "not a raster GDAL can read" in status["garbage.tif"]["error"]
    assert "has 1 bands; the model expects 3" in status["gray.tif"]["error"]
    assert "may be corrupt" in status["truncated.tif"]["error"]
    assert all("\n" not in s["error"] for s in summary["scenes"])
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 3}
    for scene in good:
        assert (tmp_path / "out" / scene.stem / "manifest.json").is_file()
    assert not (tmp_path / "out" / "truncated" / "manifest.json").exists()
    assert not (tmp_path / "out" / "truncated" / "classes.tif").exists()
    assert "3 of 5 scene(s) failed" in output
    table = output[output.index("scene "):]
    assert "gray.tif" in table and "failed" in table and "MPix" in table


def test_inputs_from_folders_globs_and_lists(tmp_path):
    for name in ("a.tif", "b.tif", "c.TIF", "notes.md"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# scenes\na.tif\n\n" + str(tmp_path / "b.tif") + "\n")
    assert [Path(p).name for p in expand_inputs([tmp_path])] == ["a.tif", "b.tif", "c.TIF"]
    assert [Path(p).name for p in expand_inputs([tmp_path / "*.tif"])] == ["a.tif", "b.tif"]
    assert [Path(p).name for p in expand_inputs([tmp_path / "list.txt", tmp_path / "a.tif"])] == [
        "a.tif", "b.tif"]


def test_dry_run_plans_and_writes_nothing(tmp_path, model):
    scene = write_raster(tmp_path / "s.tif", smooth_noise((96, 80)))
    code, output = run_cli("predict", scene, "-m", model, "-o", tmp_path / "out",
                           "--workers", 2, "--dry-run")
    assert code == 0, output
    assert "local cluster: 2 worker process(es)" in output
    assert "s.tif" in output and "run" in output
    assert not (tmp_path / "out").exists()


def test_killed_client_then_rerun_skips_complete_and_finishes_the_rest(tmp_path, model,
                                                                       scheduler):
    sizes = [(64, 64), (384, 384), (384, 320)]
    scenes = [write_raster(tmp_path / f"s{i}.tif", smooth_noise(size, seed=i))
              for i, size in enumerate(sizes)]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "geoseg_pipelines.cli", "predict", *map(str, scenes), "-m",
            str(model), "-o", str(out), "--workers", "1", "--block-size", "32",
            "--batch-size", "1"]
    process = subprocess.Popen(args, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = out / "s0" / "manifest.json"
        deadline = time.monotonic() + 120
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.exists(), "the first scene never completed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "s2" / "manifest.json").exists(), "the run ended before the kill"
    first_manifest = first.read_bytes()

    code, output = run_cli("predict", *scenes, "-m", model, "-o", out, "--scheduler",
                           scheduler, "--block-size", 32)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["scenes"]] == ["skipped", "done", "done"]
    assert first.read_bytes() == first_manifest
    for scene in scenes:
        predict_scene(scene, tmp_path / "reference", model=model,
                      options=PredictOptions(block_size=32))
        folder = out / scene.stem
        assert (folder / "classes.tif").read_bytes() == \
            (tmp_path / "reference" / scene.stem / "classes.tif").read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == [
            "classes.qml", "classes.tif", "classes.tif.aux.xml", "item.json", "manifest.json",
            "preview.png"]


def test_dry_run_after_a_complete_run_says_skip(tmp_path, model, scheduler):
    scene = write_raster(tmp_path / "s.tif", smooth_noise((96, 80)))
    out = tmp_path / "out"
    code, output = run_cli("predict", scene, "-m", model, "-o", out, "--scheduler", scheduler)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "s" / "manifest.json").read_text())
    assert summary["model_sha256"] == manifest["model_sha256"]
    code, output = run_cli("predict", scene, "-m", model, "-o", out, "--dry-run")
    assert code == 0, output
    row = next(line for line in output.splitlines() if line.startswith("s.tif"))
    assert row.split()[1] == "skip", output


def test_a_rerun_of_a_complete_batch_starts_no_cluster(tmp_path, model):
    scenes = [write_raster(tmp_path / f"s{i}.tif", smooth_noise((64, 64), seed=i))
              for i in range(2)]
    out = tmp_path / "out"
    args = ["predict", *scenes, "-m", model, "-o", out, "--runner", "dask", "--workers", "1",
            "--dashboard", "127.0.0.1:0", "--no-preview"]
    code, first = run_cli(*args)
    assert code == 0, first
    assert "local cluster: 1 worker process(es)" in first
    code, again = run_cli(*args)
    assert code == 0, again
    assert "no cluster to start" in again and "local cluster" not in again
    assert again.count("complete for this model and options, skipped") == 2
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["scenes"]] == ["skipped", "skipped"]
    # one new scene: the cluster starts again for it
    write_raster(tmp_path / "s2.tif", smooth_noise((64, 64), seed=2))
    code, third = run_cli(*args[:3], tmp_path / "s2.tif", *args[3:])
    assert code == 0, third
    assert "local cluster: 1 worker process(es)" in third
