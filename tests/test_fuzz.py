"""Damaged GeoTIFFs through `geoseg predict` and `geoseg vectorize`, as a user runs them.

Truncated, bit-flipped and header-damaged copies of a real GeoTIFF (the demo scene, a
geoseg class raster): every run succeeds or exits 1 with `error:` lines only, never hangs,
and never leaves a file under a final output name. The commands run as processes (a GDAL
crash on a damaged file must not take the test runner with it); predict joins one Dask
scheduler started for the module, so no cluster starts per example.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

GEOSEG = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()"]
DEMO = REPO / "data" / "demo" / "23429155_15_uint8_clipped.tif"
FINAL = {"classes.tif", "probabilities.tif", "polygons.gpkg", "manifest.json"}

damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.98)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)),
                                       min_size=1, max_size=40)),
    st.tuples(st.just("header"), st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)),
                                         min_size=1, max_size=16)),
)


def damaged_copy(src, dst, how) -> None:
    data = bytearray(src.read_bytes())
    kind, what = how
    if kind == "truncate":
        data = data[: int(len(data) * what)]
    elif kind == "flip":
        for where, bit in what:
            data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
    else:
        for offset, value in what:
            data[offset] = value
    dst.write_bytes(bytes(data))


def check_run(proc, out_files) -> None:
    assert proc.returncode in (0, 1), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 1:
        assert lines and all(line.startswith("error: ") for line in lines), proc.stderr
        assert not [p for p in out_files() if p.name in FINAL], out_files()
    else:
        assert not lines, proc.stderr


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def small_model(tiny_model_file):
    return tiny_model_file


@pytest.fixture(scope="module")
def class_raster(tmp_path_factory, small_model, scheduler):
    out = tmp_path_factory.mktemp("fuzz-classes")
    proc = subprocess.run([*GEOSEG, "predict", str(DEMO), "-m", str(small_model), "-o",
                           str(out), "--scheduler", scheduler], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return out / DEMO.stem / "classes.tif"


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_damaged_scenes_through_predict(tmp_path_factory, scheduler, small_model, how):
    root = tmp_path_factory.mktemp("fuzz-predict")
    scene = root / "scene.tif"
    damaged_copy(DEMO, scene, how)
    out = root / "out"
    proc = subprocess.run([*GEOSEG, "predict", str(scene), "-m", str(small_model), "-o",
                           str(out), "--scheduler", scheduler, "--vectorize",
                           "--probabilities"], capture_output=True, text=True, timeout=240,
                          cwd=REPO)
    check_run(proc, lambda: list((out / "scene").glob("*")) if (out / "scene").exists()
              else [])
    shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_damaged_class_rasters_through_vectorize(tmp_path_factory, class_raster, how):
    root = tmp_path_factory.mktemp("fuzz-vectorize")
    raster = root / "classes.tif"
    damaged_copy(class_raster, raster, how)
    out = root / "polygons.gpkg"
    proc = subprocess.run([*GEOSEG, "vectorize", str(raster), "-o", str(out),
                           "--block-size", "128"], capture_output=True, text=True,
                          timeout=240, cwd=REPO)
    assert proc.returncode in (0, 1), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 1:
        assert lines and all(line.startswith("error: ") for line in lines), proc.stderr
        assert not out.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    shutil.rmtree(root, ignore_errors=True)


def test_the_damage_strategies_do_damage(tmp_path):
    """The copies differ from the original (a property test of nothing would pass)."""
    original = DEMO.read_bytes()
    for how in (("truncate", 0.5), ("flip", [(0.3, 1)]), ("header", [(8, 0)])):
        damaged_copy(DEMO, tmp_path / "x.tif", how)
        assert (tmp_path / "x.tif").read_bytes() != original
    assert np.frombuffer(original[:2], np.uint8).tolist() in ([73, 73], [77, 77])
