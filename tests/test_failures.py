"""How `geoseg predict` fails, as a user runs it: a bad scene fails alone in every mode, stderr
holds geoseg's own lines only (library logs and warnings go to OUT/geoseg.log), an
unwritable OUT fails before anything starts, and the dashboard listens on localhost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO, smooth_noise, write_raster

GEOSEG = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()"]


def geoseg(*args, timeout=240):
    proc = subprocess.run([*GEOSEG, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    good = [write_raster(root / f"good{i}.tif", smooth_noise((96, 80), seed=i))
            for i in range(2)]
    nocrs = write_raster(root / "nocrs.tif", smooth_noise((64, 64)), crs=None,
                         transform=None)
    # no georeferencing at all: rasterio warns NotGeoreferencedWarning when opening it
    import rasterio

    with rasterio.open(nocrs, "r+") as ds:
        ds.transform = rasterio.Affine.identity()
    truncated = write_raster(root / "truncated.tif", smooth_noise((256, 256), seed=5),
                             tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    return root, good, nocrs, truncated


@pytest.fixture(scope="module")
def model(tiny_model_file):
    return tiny_model_file


def _busy_dashboard_port():
    """Hold 127.0.0.1:8787 so the cluster must pick another port (and dask warns)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 8787))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def test_a_bad_scene_fails_alone_with_vectorize_and_stderr_is_geoseg_only(tmp_path, scenes,
                                                                         model):
    root, good, nocrs, truncated = scenes
    out = tmp_path / "out"
    busy = _busy_dashboard_port()
    try:
        code, stdout, stderr = geoseg("predict", *good, nocrs, truncated, "-m", model, "-o",
                                      out, "--vectorize", "--block-size", 64, "--workers", 2)
    finally:
        if busy is not None:
            busy.close()
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), stderr
    assert len(lines) == 3, stderr  # one per failed scene and the summary line
    assert "has no CRS" in lines[0] and "nocrs.tif" in lines[0]
    assert "truncated.tif" in lines[1] and "may be corrupt" in lines[1]
    assert not lines[1].startswith("error: Exception")
    assert "2 of 4 scene(s) failed" in lines[2]
    for stem in ("good0", "good1"):
        assert sorted(p.name for p in (out / stem).iterdir()) == [
            "classes.qml", "classes.tif", "classes.tif.aux.xml", "item.json", "manifest.json",
            "polygons.gpkg", "preview.png"]
    assert not (out / "truncated").exists() and not (out / "nocrs").exists()
    log = (out / "geoseg.log").read_text()
    assert "Compute Failed" in log
    if busy is not None:
        assert "8787" in log and "already in use" in log


def test_unwritable_out_fails_before_the_cluster_starts(tmp_path, scenes, model):
    root, good, _, _ = scenes
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, stdout, stderr = geoseg("predict", good[0], "-m", model, "-o", blocker / "out")
    assert code == 1
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert "nothing was written" in stderr and "summary" not in stderr
    assert "local cluster" not in stdout


def test_the_local_cluster_listens_on_localhost_only():
    import psutil

    from geoseg_pipelines.cluster import choose_cluster, connect

    choice = choose_cluster(workers=1)
    assert choice.options["dashboard_address"].startswith("127.0.0.1:")
    with connect(choice, echo=lambda _: None) as client:
        assert "127.0.0.1" in client.dashboard_link
        me = psutil.Process()
        listening = [c.laddr for proc in (me, *me.children(recursive=True))
                     for c in proc.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_dashboard_none_starts_no_dashboard_and_takes_no_fixed_port():
    """distributed's scheduler serves HTTP whatever the address (8787 by default); with
    --dashboard none it is started without its dashboard, on a free port of localhost, and
    no address is printed."""
    import psutil

    from geoseg_pipelines.cluster import choose_cluster, connect

    lines: list[str] = []
    with connect(choose_cluster(workers=1, dashboard="none"), echo=lines.append) as client:
        me = psutil.Process()  # the scheduler runs in this process, its workers below it
        listening = {c.laddr.port for c in me.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening and 8787 not in listening, listening
        assert client.cluster.scheduler.http_server is not None  # health routes only
    assert "no dashboard" in lines[-1] and "http" not in lines[-1]


def test_dashboard_option_reaches_the_local_cluster_only():
    from geoseg.errors import ConfigError
    from geoseg_pipelines.cluster import choose_cluster

    assert choose_cluster(dashboard=":9999").options["dashboard_address"] == ":9999"
    assert choose_cluster(dashboard="none").options["dashboard_address"] is None
    with pytest.raises(ConfigError, match="--dashboard"):
        choose_cluster(scheduler="tcp://127.0.0.1:8786", dashboard=":9999")


def test_library_logs_are_restored_after_a_run(tmp_path):
    import logging

    from geoseg_pipelines.logs import library_logs

    before = logging.getLogger("distributed").handlers[:]
    with library_logs(tmp_path / "geoseg.log", verbose=False):
        logging.getLogger("distributed.worker").error("Compute Failed")
        assert "DASK_LOGGING" in os.environ
    assert logging.getLogger("distributed").handlers == before
    assert "Compute Failed" in (tmp_path / "geoseg.log").read_text()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """A tiny network made slow enough (width, tiles of 64 with batch 1) that a batch of a
    few small scenes takes seconds."""
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    path = tmp_path_factory.mktemp("slow-model") / "slow.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32,
                              arch_kwargs={"depth": 6, "width": 48}), path)
    return path


def test_scenes_are_published_one_after_another_in_input_order(tmp_path, slow_model):
    paths = [write_raster(tmp_path / f"s{i}.tif", smooth_noise((200, 200), seed=i))
             for i in range(4)]
    out = tmp_path / "out"
    code, _, stderr = geoseg("predict", *paths, "-m", slow_model, "-o", out, "--workers", 1,
                             "--batch-size", 1, "--block-size", 64)
    assert code == 0, stderr
    published = [(out / f"s{i}" / "manifest.json").stat().st_mtime for i in range(4)]
    assert published == sorted(published) and published[0] < published[-1]


@pytest.mark.parametrize("runner", ["local", "dask"])
def test_ctrl_c_stops_fast_keeps_finished_scenes_and_exits_130(tmp_path, slow_model, runner):
    import signal
    import time

    paths = [write_raster(tmp_path / f"s{i}.tif", smooth_noise((200, 200), seed=i))
             for i in range(6)]
    out = tmp_path / "out"
    proc = subprocess.Popen([*GEOSEG, "predict", *map(str, paths), "-m", str(slow_model),
                             "-o", str(out), "--batch-size", "1", "--block-size", "64",
                             "--runner", runner],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = out / "s0" / "manifest.json"
    deadline = time.monotonic() + 180
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    stopped = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert stopped < 10, f"took {stopped:.1f} s to stop"  # functional bound; ~1 s measured
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    kept = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert "s0" in kept and len(kept) < 6
    for name in kept:  # every scene left is complete, nothing hidden beside it
        assert sorted(p.name for p in (out / name).iterdir()) == [
            "classes.qml", "classes.tif", "classes.tif.aux.xml", "item.json",
            "manifest.json", "preview.png"], name
    assert (out / "summary.json").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs root and mount rights, as CI has; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_one_line_before_the_scene_starts(tiny_disk, tmp_path, model):
    scene = write_raster(tmp_path / "big.tif", smooth_noise((1600, 1600), seed=3))
    out = tiny_disk / "out"
    code, _, stderr = geoseg("predict", scene, "-m", model, "-o", out, "--probabilities",
                             "--workers", 1)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {out}: no space left on device (scene needs about ")
    assert len(lines) == 2 and "1 of 1 scene(s) failed" in lines[1], stderr
    assert not (out / "big").exists()  # no empty scene folder left behind


def test_a_disk_that_fills_while_writing_is_the_same_one_line(tiny_disk, tmp_path, model):
    """Writes that fail on a full disk (numpy's "N requested and M written", GDAL's write
    errors, ENOSPC) become the no-space line, not a traceback."""
    import errno

    from geoseg.prediction.options import PredictOptions
    from geoseg.errors import OutputNotWritableError
    from geoseg.model import file_sha256, read_meta
    from geoseg_pipelines.resume import plan_scenes
    from geoseg_pipelines.tasks import portable_errors

    scene = write_raster(tmp_path / "s.tif", smooth_noise((300, 300)))
    job = plan_scenes([scene], tiny_disk / "out", model_path=model, meta=read_meta(model),
                      model_sha256=file_sha256(model), options=PredictOptions())[0].job
    (tiny_disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 64 * 1024))

    @portable_errors
    def writes(job, exc):
        raise exc

    for exc in (OSError("2000000 requested and 1064832 written"),
                OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(OutputNotWritableError, match="no space left on device"):
            writes(job, exc)
    (tiny_disk / "filler").unlink()
    with pytest.raises(OSError, match="requested and"):  # room enough: not a full disk
        writes(job, OSError("2000000 requested and 1064832 written"))


def test_an_interrupted_run_reuses_its_finished_blocks_byte_for_byte(tmp_path, slow_model):
    """Kill the whole run (client and workers) after some blocks; the rerun reuses the
    finished blocks' parts and writes the same bytes as an uninterrupted run."""
    import signal
    import time

    import geopandas as gpd

    scene = write_raster(tmp_path / "s.tif", smooth_noise((400, 400), seed=9))
    args = ["-m", slow_model, "--batch-size", 1, "--block-size", 64, "--probabilities",
            "--vectorize", "--workers", 1]
    code, _, stderr = geoseg("predict", scene, "-o", tmp_path / "ref", *args)
    assert code == 0, stderr
    out = tmp_path / "out"
    proc = subprocess.Popen([*GEOSEG, "predict", str(scene), "-o", str(out),
                             *map(str, args)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "s" / ".parts"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("done-*.npz"))) >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies at once, as in a crash
    proc.wait(30)
    assert not (out / "s" / "manifest.json").exists()
    code, _, stderr = geoseg("predict", scene, "-o", out, *args)
    assert code == 0, stderr
    import json

    manifest = json.loads((out / "s" / "manifest.json").read_text())
    assert manifest["blocks_reused"] >= 4
    for name in ("classes.tif", "probabilities.tif"):
        assert (out / "s" / name).read_bytes() == (tmp_path / "ref" / "s" / name).read_bytes()
    got = gpd.read_file(out / "s" / "polygons.gpkg", engine="pyogrio")
    want = gpd.read_file(tmp_path / "ref" / "s" / "polygons.gpkg", engine="pyogrio")
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert got.geometry.geom_equals_exact(want.geometry, tolerance=0).all()
    assert not parts.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_cluster(port: int) -> list:
    """A Dask scheduler and one worker as their own processes, on 127.0.0.1."""
    import time

    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    time.sleep(2)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                               f"tcp://127.0.0.1:{port}", "--nworkers", "1", "--nthreads",
                               "1", "--no-dashboard", "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [scheduler, worker]


def _stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_a_lost_scheduler_is_one_line_per_scene_and_the_rerun_resumes(tmp_path, slow_model):
    import json
    import time

    paths = [write_raster(tmp_path / f"s{i}.tif", smooth_noise((260, 260), seed=i))
             for i in range(3)]
    out = tmp_path / "out"
    port = _free_port()
    procs = _start_cluster(port)
    try:
        run = subprocess.Popen([*GEOSEG, "predict", *map(str, paths), "-m", str(slow_model),
                                "-o", str(out), "--batch-size", "1", "--block-size", "64",
                                "--scheduler", f"tcp://127.0.0.1:{port}"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and run.poll() is None:
            if len(list(out.glob("s*/.parts/done-*.npz"))) >= 2:
                break
            time.sleep(0.01)
        assert run.poll() is None, "the batch ended before the scheduler could be killed"
        procs[0].kill()
        _, stderr = run.communicate(timeout=120)
    finally:
        _stop(procs)
    assert run.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), stderr
    assert any("lost the connection to the Dask scheduler" in line for line in lines), stderr
    for scene in out.glob("s?"):  # unfinished scenes hold parts only, no final name
        if not (scene / "manifest.json").exists():
            assert [p.name for p in scene.iterdir()] == [".parts"], list(scene.iterdir())
    procs = _start_cluster(port)
    try:
        code, _, stderr = geoseg("predict", *paths, "-m", slow_model, "-o", out,
                                 "--batch-size", 1, "--block-size", 64, "--scheduler",
                                 f"tcp://127.0.0.1:{port}")
    finally:
        _stop(procs)
    assert code == 0, stderr
    manifests = [json.loads((out / f"s{i}" / "manifest.json").read_text()) for i in range(3)]
    assert sum(m.get("blocks_reused", 0) for m in manifests) >= 1


def test_small_batches_run_in_process_with_the_same_bytes_as_on_dask(tmp_path, scenes,
                                                                     model):
    """`--runner auto` runs a small batch without starting a cluster; the outputs and the
    manifest's facts are those of the Dask runner, and a bad scene still fails alone."""
    import json

    root, good, _, truncated = scenes
    outs = {}
    for runner in ("auto", "dask"):
        out = tmp_path / runner
        code, stdout, stderr = geoseg("predict", good[0], truncated, "-m", model, "-o", out,
                                      "--vectorize", "--probabilities", "--runner", runner,
                                      "--block-size", 64)
        assert code == 1, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 2 and "may be corrupt" in lines[0], stderr
        assert ("local runner" in stdout) == (runner == "auto"), stdout
        outs[runner] = out / "good0"
    for name in ("classes.tif", "probabilities.tif", "polygons.gpkg"):
        assert (outs["auto"] / name).read_bytes() == (outs["dask"] / name).read_bytes(), name
    facts = [json.loads((o / "manifest.json").read_text()) for o in outs.values()]
    for key in ("outputs", "options", "tiles_in_grid", "tiles_run", "blocks", "class_pixels",
                "nodata_pixels", "model_sha256"):
        assert facts[0][key] == facts[1][key], key
    assert not (tmp_path / "auto" / "truncated").exists()


def test_runner_choice():
    from geoseg.errors import ConfigError
    from geoseg_pipelines.cluster import choose_cluster
    from geoseg_pipelines.session import choose_runner

    local = choose_cluster()
    assert choose_runner("auto", local, [], cluster_asked=False) == "local"
    assert choose_runner("auto", local, [], cluster_asked=True) == "dask"
    remote = choose_cluster(scheduler="tcp://127.0.0.1:8786")
    assert choose_runner("auto", remote, [], cluster_asked=False) == "dask"
    with pytest.raises(ConfigError, match="--runner local"):
        choose_runner("local", remote, [], cluster_asked=False)


def test_a_batch_larger_than_one_machine_run_goes_to_a_local_cluster(tmp_path):
    """auto keeps batches up to LOCAL_MAX_PIXELS in-process; a larger one (here one sparse
    GeoTIFF of 16384 x 16385 pixels, headers only) goes to Dask, whose part files resume."""
    import rasterio

    from geoseg_pipelines.cluster import choose_cluster
    from geoseg_pipelines.local import LOCAL_MAX_PIXELS
    from geoseg_pipelines.session import choose_runner

    def sparse(name, height):
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", height=height, width=16384, count=3,
                           dtype="uint8", tiled=True, sparse_ok=True):
            pass
        return path

    exact, larger = sparse("exact.tif", LOCAL_MAX_PIXELS // 16384), sparse("big.tif", 16385)
    local = choose_cluster()
    assert choose_runner("auto", local, [exact], cluster_asked=False) == "local"
    assert choose_runner("auto", local, [larger], cluster_asked=False) == "dask"
    assert choose_runner("auto", local, [exact, exact], cluster_asked=False) == "dask"


def test_precision_is_resolved_named_in_the_outputs_and_checked(tmp_path, scenes, model):
    import json

    import rasterio

    from geoseg.model.devices import resolve_precision

    out, scene = tmp_path / "out", scenes[1][0]
    code, _, stderr = geoseg("predict", scene, "-m", model, "-o", out)
    assert code == 0, stderr
    expected = resolve_precision("auto", "cpu")
    with rasterio.open(out / "good0" / "classes.tif") as ds:
        assert ds.tags()["GEOSEG_PRECISION"] == expected
    manifest = json.loads((out / "good0" / "manifest.json").read_text())
    assert manifest["options"]["precision"] == expected
    # float32 is another identity: the scene is predicted again
    code, _, stderr = geoseg("predict", scene, "-m", model, "-o", out, "--precision",
                             "float32", "--overwrite")
    assert code == 0, stderr
    with rasterio.open(out / "good0" / "classes.tif") as ds:
        assert ds.tags()["GEOSEG_PRECISION"] == "float32"
    code, _, stderr = geoseg("predict", scene, "-m", model, "-o", out, "--precision", "int8")
    assert code == 2 and "int8" in stderr


@pytest.mark.parametrize("debug", [False, True])
def test_gdal_errors_in_gdal_s_own_threads_stay_off_the_terminal(debug, tmp_path):
    """GDAL reports errors raised in its worker threads (multi-threaded COG compression)
    through its default handler, straight to stderr; the CLI turns that off unless
    --debug."""
    import glob
    import subprocess
    import sys

    import rasterio

    if not glob.glob(rasterio.__path__[0] + ".libs/libgdal*.so*"):
        pytest.skip("this rasterio is not a wheel with its own libgdal")
    code = (
        "import ctypes, glob, sys, threading, rasterio\n"
        "from geoseg_pipelines.cli import cli\n"
        f"cli({['--debug'] if debug else []!r} + ['info', '--help'], standalone_mode=False)\n"
        "lib = ctypes.CDLL(glob.glob(rasterio.__path__[0] + '.libs/libgdal*.so*')[0])\n"
        "job = threading.Thread(target=lambda: lib.CPLError(3, 1, b'from a GDAL thread'))\n"
        "job.start(); job.join()\n")
    env = {k: v for k, v in os.environ.items() if k != "CPL_LOG"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("from a GDAL thread" in done.stderr) == debug, done.stderr
    assert not list(tmp_path.iterdir())  # no log file left in the working folder
