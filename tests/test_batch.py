"""The Dask pipeline against the in-process path: byte-identical rasters, equal polygons,
for 1 and 2 worker processes, a worker in the client's process, and two block sizes (one
scene of one block: a whole-scene task); the model loads once per worker; a worker killed
mid-run changes nothing."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
import signal
import threading
import time

import geopandas as gpd
import pytest

from conftest import smooth_noise, write_raster
from geoseg.classes import make_classes
from geoseg.prediction.options import PredictOptions
from geoseg.model import create_bundle, save_bundle
from geoseg.prediction.flow import predict_scene
from geoseg_pipelines import tasks
from geoseg_pipelines.run import run_batch
from geoseg_pipelines.manifest import read_manifest

RASTERS = ("classes.tif", "probabilities.tif")


@pytest.fixture(scope="module", params=[1, 2, "in-process"],
                ids=["1-worker", "2-workers", "in-process"])
def client(request):
    """Worker processes (a GPU machine's layout, or --workers), or a CPU machine's default:
    one worker in this process with two threads (pipelines.hardware)."""
    from distributed import Client, LocalCluster

    in_process = request.param == "in-process"
    with LocalCluster(n_workers=1 if in_process else request.param,
                      threads_per_worker=2 if in_process else 1, processes=not in_process,
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny 2 m model, two scenes and their in-process outputs: one at 2 m, one at 1 m
    with a nodata corner (predicted at the model's 2 m: tiles of 128 px shrunk to 64)."""
    from affine import Affine

    root = tmp_path_factory.mktemp("batch")
    bundle = create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                           bands=("r", "g", "b"), tile_size=64, overlap=32, name="tiny",
                           gsd=2.0)
    model = root / "tiny.safetensors"
    save_bundle(bundle, model)
    pixels = smooth_noise((150, 170), seed=3)
    pixels[:, :40, :50] = 0
    scenes = [write_raster(root / "alpha.tif", smooth_noise((200, 130), seed=1)),
              write_raster(root / "beta.tif", pixels, nodata=0,
                           transform=Affine(1.0, 0, 500000.0, 0, -1.0, 4000000.0))]
    # flips: test-time augmentation travels with the plan to the workers
    options = PredictOptions(probabilities=True, vectorize=True, tta="flips")
    for scene in scenes:
        predict_scene(scene, root / "reference", model=model, options=options)
    return root, model, scenes, options


def assert_same_outputs(reference, out, stems, *, polygons=True):
    for stem in stems:
        for name in RASTERS:
            assert (out / stem / name).read_bytes() == (reference / stem / name).read_bytes(), \
                f"{stem}/{name} differs from the in-process output"
        if polygons:
            got = gpd.read_file(out / stem / "polygons.gpkg", engine="pyogrio")
            want = gpd.read_file(reference / stem / "polygons.gpkg", engine="pyogrio")
            assert len(got) == len(want) > 0
            assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
            assert got.geometry.geom_equals_exact(want.geometry, tolerance=0).all()


@pytest.mark.parametrize("block_size", [64, 128])
def test_dask_outputs_equal_the_in_process_path(client, data, block_size, tmp_path):
    from dataclasses import replace

    root, model, scenes, options = data
    options = replace(options, block_size=block_size)
    outcomes = run_batch(client, scenes, tmp_path, model=model, options=options)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    assert_same_outputs(root / "reference", tmp_path, ["alpha", "beta"])
    for stem in ("alpha", "beta"):  # its picture summed from other blocks, or read in strips
        assert (tmp_path / stem / "preview.png").read_bytes() == \
            (root / "reference" / stem / "preview.png").read_bytes()
    manifest = read_manifest(tmp_path / "beta")
    # device and precision "auto" are resolved once for the batch (no CUDA on the test
    # machine): the manifest names what ran
    assert manifest["options"] == options.resolved("cpu").identity()
    assert manifest["options"]["precision"] != "auto"
    assert manifest["tiles_in_grid"] == outcomes[1].tiles
    assert manifest["tile_size"] == 128  # beta: at the model's GSD
    assert manifest["class_pixels"]["bg"] + manifest["class_pixels"]["fg"] \
        + manifest["nodata_pixels"] == 150 * 170
    assert manifest["nodata_pixels"] == 40 * 50
    assert not (tmp_path / "beta" / ".parts").exists()
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == [
        "classes.qml", "classes.tif", "classes.tif.aux.xml", "item.json", "manifest.json",
        "polygons.gpkg", "preview.png", "probabilities.tif"]


def test_a_one_block_scene_is_one_task_unless_its_model_task_needs_a_gpu(data, tmp_path):
    """No spill strips, part files or assembling task for a scene of one block on CPU
    workers; with the GPU resource the model task stays apart, so the GPU is held only while
    the model runs, and a block an interrupted run finished is still read back."""
    from geoseg.model.meta import file_sha256, read_meta
    from geoseg_pipelines.graph import submit_scene
    from geoseg_pipelines.resume import plan_scenes

    root, model, scenes, options = data
    options = replace(options, block_size=128).resolved("cpu")
    job = plan_scenes([scenes[1]], tmp_path, model_path=model, meta=read_meta(model),
                      model_sha256=file_sha256(model), options=options)[0].job
    assert job is not None and len(job.flow.plan.blocks) == 1

    class Recording:
        def __init__(self):
            self.submitted = []

        def submit(self, fn, *args, key, priority, resources=None, **kwargs):
            self.submitted.append((fn.__name__, resources))
            return key

    def graph(**kwargs):
        recording = Recording()
        made, _ = submit_scene(recording, job, token="t", priority=0, **kwargs)
        return made, recording.submitted

    cpu, submitted = graph(resources=None)
    assert cpu.whole and cpu.blocks == 1 and cpu.watched == [cpu.final]
    assert submitted == [("scene_task", None)]
    gpu, submitted = graph(resources={"GPU": 1})
    assert not gpu.whole and gpu.blocks == 1
    assert [name for name, _ in submitted] == ["predict_task", "spills_task", "finish_task",
                                               "rasters_task", "polygons_task", "outputs_task"]
    assert [r for name, r in submitted if name == "predict_task"] == [{"GPU": 1}]
    resumed, submitted = graph(resources=None, finished=frozenset({(0, 0)}))
    assert not resumed.whole and submitted[0][0] == "saved_spills_task"


def test_model_is_loaded_once_per_worker(client, data, tmp_path):
    root, model, scenes, options = data
    run_batch(client, scenes, tmp_path, model=model, options=options)
    loads = client.run(tasks.model_loads)
    assert all(loads.values()), loads
    assert all(len(set(shas)) == len(shas) for shas in loads.values()), loads


def test_rerun_skips_complete_scenes_and_overwrite_redoes_them(client, data, tmp_path):
    from dataclasses import replace

    root, model, scenes, options = data
    run_batch(client, scenes[:1], tmp_path, model=model, options=options)
    before = (tmp_path / "alpha" / "manifest.json").read_bytes()
    outcomes = run_batch(client, scenes, tmp_path, model=model, options=options)
    assert [o.status for o in outcomes] == ["skipped", "done"]
    assert (tmp_path / "alpha" / "manifest.json").read_bytes() == before
    changed = replace(options, stitch="center")
    outcomes = run_batch(client, scenes[:1], tmp_path, model=model, options=changed)
    assert outcomes[0].status == "failed" and "--overwrite" in outcomes[0].error
    outcomes = run_batch(client, scenes[:1], tmp_path, model=model,
                         options=replace(changed, overwrite=True))
    assert outcomes[0].status == "done"
    assert read_manifest(tmp_path / "alpha")["options"]["stitch"] == "center"


@pytest.mark.parametrize("vectorize", [False, True], ids=["rasters", "vectorizing"])
def test_a_worker_killed_mid_run_changes_nothing(client, data, tmp_path, vectorize):
    """Killed while blocks are predicted, finished and polygonized: the scheduler reruns
    what was lost; rasters are byte-identical and polygons equal."""
    from dataclasses import replace

    started = len(client.cluster.workers)  # the fixture's workers, rejoined or not
    if started < 2:
        pytest.skip("needs two workers: one survives the kill")
    client.wait_for_workers(started, timeout=60)  # the worker an earlier test killed
    root, model, scenes, options = data
    options = replace(options, block_size=32, vectorize=vectorize, batch_size=1)
    kind = "vector" if vectorize else "classes"
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_batch(
        client, scenes, tmp_path, model=model, options=options)))
    runner.start()
    parts = tmp_path / "alpha" / ".parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runner.is_alive():
        if parts.is_dir() and len(list(parts.glob(f"{kind}-*.npz"))) >= 3:
            break
        time.sleep(0.01)
    assert runner.is_alive(), "the run ended before a worker could be killed"
    pids = client.run(os.getpid)
    os.kill(sorted(pids.values())[0], signal.SIGKILL)
    runner.join(120)
    assert not runner.is_alive()
    assert [o.status for o in outcome["result"]] == ["done", "done"], \
        [o.error for o in outcome["result"]]
    assert_same_outputs(root / "reference", tmp_path, ["alpha", "beta"], polygons=vectorize)


def test_vectorize_polygonizes_in_finish_on_the_prediction_block_grid(data, tmp_path):
    """--vectorize adds no task per block and never reads classes.tif back: each finish
    task takes exactly its BlockGrid.sources' spills and saves its own pieces; one
    polygons task merges them, beside (not after) the rasters task; one outputs task
    joins both."""
    from dataclasses import replace

    from geoseg.model import file_sha256, read_meta
    from geoseg_pipelines.graph import submit_scene
    from geoseg_pipelines.resume import plan_scenes

    root, model, scenes, options = data
    options = replace(options, block_size=64)
    job = plan_scenes([scenes[0]], tmp_path, model_path=model, meta=read_meta(model),
                      model_sha256=file_sha256(model), options=options)[0].job

    class Recorder:
        def __init__(self):
            self.calls = []

        def submit(self, fn, *args, key, **kwargs):
            self.calls.append((fn.__name__, key, args))
            return key

    rec = Recorder()
    graph, _ = submit_scene(rec, job, resources=None, token="t", priority=0)
    names = [name for name, _, _ in rec.calls]
    blocks = job.flow.plan.blocks
    assert len(blocks) > 1 and job.flow.vector.blocks == blocks
    assert names.count("finish_task") == names.count("predict_task") == len(blocks)
    assert names.count("polygons_task") == names.count("rasters_task") == 1
    assert not {"vectorize_plan_task", "polygonize_task"} & set(names)
    finishes = [k for n, k, _ in rec.calls if n == "finish_task"]
    for name, key, args in rec.calls:
        if name in ("rasters_task", "polygons_task"):
            assert list(args[1:]) == finishes
        if name == "finish_task":
            block = blocks.block(*map(int, key.rsplit("-", 2)[1:]))
            assert list(args[2:]) == [f"spills-alpha-t-{r}-{c}"
                                      for r, c in blocks.sources(block)]
    name, key, args = rec.calls[-1]
    assert name == "outputs_task" and key == graph.final
    assert list(args) == ["rasters-alpha-t", "polygons-alpha-t"]


def test_auto_device_is_resolved_once_for_the_whole_cluster(client):
    from geoseg.model.devices import probe_capabilities
    from geoseg_pipelines.run import resolve_on_workers, worker_capabilities

    reports = worker_capabilities(client)
    assert len(reports) == len(client.scheduler_info()["workers"])
    expected = "cuda" if probe_capabilities().cuda else "cpu"
    assert resolve_on_workers(PredictOptions(), reports).device == expected
    assert resolve_on_workers(PredictOptions(device="cpu"), reports).device == "cpu"


def test_manifests_from_before_a_new_option_still_count_as_complete(tmp_path):
    from geoseg_pipelines.manifest import manifest_path, write_json
    from geoseg_pipelines.resume import scene_state

    identity = PredictOptions().identity()
    older = {k: v for k, v in identity.items() if k != "tta"}
    (tmp_path / "classes.tif").write_bytes(b"written by a complete run")
    write_json(manifest_path(tmp_path), {"status": "complete", "model_sha256": "abc",
                                         "options": older,
                                         "outputs": {"classes": "classes.tif"}})
    assert scene_state(tmp_path, model_sha256="abc", identity=identity) == "complete"
    assert scene_state(tmp_path, model_sha256="abc",
                       identity={**identity, "tta": "d4"}) == "different"


def test_each_scenes_seconds_run_from_its_first_block(data, tmp_path):
    """All scenes are submitted at once, so a scene's seconds are counted from the moment
    its first block began on a worker (carried by the block's done record), not from the
    submission."""
    import time

    from geoseg.prediction.options import PredictOptions
    from geoseg.prediction.flow import finish_block, plan_flow
    from geoseg.model.loading import load_for_prediction
    from geoseg.prediction.blocks import predict_block, read_block
    from geoseg.inputs.scene import open_raster, open_scene
    from geoseg_pipelines.resume import PlannedScene
    from geoseg_pipelines.outcomes import SceneOutcome
    from geoseg_pipelines.run import _Running

    root, model, scenes, _ = data
    bundle = load_for_prediction(model, device="cpu")
    flow = plan_flow(open_scene(scenes[0]), tmp_path, meta=bundle.meta,
                     model_sha256=bundle.sha256, options=PredictOptions().resolved("cpu"))
    block = next(flow.plan.blocks.blocks())
    before = time.time()
    with open_raster(scenes[0]) as ds:
        pixels, valid = read_block(ds, flow.plan, block)
    predicted = predict_block(bundle, flow.plan, block, pixels, valid, batch_size=8)
    done = finish_block(flow, predicted, []).done
    assert before <= done.started <= time.time()
    state = _Running(PlannedScene(SceneOutcome("s")), started=time.perf_counter() - 100)
    state.first_block = time.time() - 2.0
    assert 1.9 < time.perf_counter() - state.own_start() < 2.5  # not the 100 s since submit


REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "buildings.safetensors"
DEMO = REPO / "data" / "demo" / "23429155_15_uint8_clipped.tif"


@pytest.fixture(scope="module")
def shipped_in_process(tmp_path_factory):
    """The shipped model on the demo scene in-process, blocks of one tile (192 px: 12
    blocks, as many forward passes before batches spanned blocks) and of the whole scene;
    torch on two threads, here and in the test cluster's workers (a CPU convolution's bits
    depend on its thread count: README, "Byte identities"; on one thread this network's
    batch of one takes the same path as its batch of eight)."""
    import torch

    root = tmp_path_factory.mktemp("shipped")
    options = PredictOptions(probabilities=True, tta="none", batch_size=8, threads=2)
    outputs, threads = {}, torch.get_num_threads()
    try:
        for block in (192, 1024):
            predict_scene(DEMO, root / str(block), model=SHIPPED,
                          options=replace(options, block_size=block))
            outputs[block] = [(root / str(block) / DEMO.stem / n).read_bytes()
                              for n in RASTERS]
    finally:
        torch.set_num_threads(threads)
    return options, outputs


def test_the_shipped_model_writes_the_same_bytes_across_block_sizes_and_runners(
        client, shipped_in_process, tmp_path):
    """A real network on two CPU threads: a batch of one tile takes another convolution
    path than a batch of several (probabilities 3e-7 apart, some bytes of
    probabilities.tif differ), so the identity across block sizes holds only because every
    forward pass has the same size (batches fill across blocks, the last one padded). The
    Dask runner, on workers with as many torch threads, writes the same bytes."""
    options, outputs = shipped_in_process
    assert outputs[192] == outputs[1024]
    outcomes = run_batch(client, [DEMO], tmp_path, model=SHIPPED,
                         options=replace(options, block_size=1024))
    assert [o.status for o in outcomes] == ["done"], [o.error for o in outcomes]
    assert [(tmp_path / DEMO.stem / n).read_bytes() for n in RASTERS] == outputs[1024]


def test_the_scheduler_holds_a_bounded_graph_however_many_scenes(client, tmp_path,
                                                                  monkeypatch):
    """Scenes go in with backpressure (pipelines.run.BLOCKS_AHEAD blocks a worker thread,
    one here): at no submission does the scheduler hold more than a few scenes' tasks,
    where the 30 one-block scenes here were all submitted at once before."""
    from geoseg_pipelines import run as run_module

    model = tmp_path / "tiny.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("a", "b")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32), model)
    scenes = [write_raster(tmp_path / f"s{i:02d}.tif", smooth_noise((40, 40), seed=i))
              for i in range(30)]
    seen, submit = [], run_module.submit_scene

    def counting_submit(client_, *args, **kwargs):
        seen.append(client_.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
        return submit(client_, *args, **kwargs)

    monkeypatch.setattr(run_module, "submit_scene", counting_submit)
    monkeypatch.setattr(run_module, "BLOCKS_AHEAD", 1)  # 2 or 3 scenes in flight
    outcomes = run_batch(client, scenes, tmp_path / "out", model=model,
                         options=PredictOptions(tta="none"))
    assert [o.status for o in outcomes] == ["done"] * 30
    # at most 3 scenes in flight and the last ones being released (all at once, the
    # scheduler held over 100 tasks at the last submissions; a one-block scene is 1 task
    # on these workers, 5 where its model task needs a GPU)
    assert len(seen) == 30 and max(seen) <= 40, seen


def test_the_local_schedulers_logs_hold_a_bounded_number_of_scenes(tmp_path, monkeypatch):
    """Each message the scheduler sends a worker carries the task with its scene's plan, and
    Dask keeps the last ``low-level-log-length`` messages per worker stream for debugging
    (1000 by default: that many scenes' plans in the client's process). The local cluster
    keeps ``cluster.LOG_LENGTH``; set to 4 here, 30 scenes leave only a few plans alive."""
    import gc

    from geoseg_pipelines import cluster
    from geoseg_pipelines.tasks import SceneJob

    model = tmp_path / "tiny.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("a", "b")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32), model)
    scenes = [write_raster(tmp_path / f"s{i:02d}.tif", smooth_noise((40, 40), seed=i))
              for i in range(30)]
    monkeypatch.setattr(cluster, "LOG_LENGTH", 4)
    with cluster.connect(cluster.choose_cluster(dashboard="none"),
                         echo=lambda _: None) as client:
        outcomes = run_batch(client, scenes, tmp_path / "out", model=model,
                             options=PredictOptions(tta="none"))
        assert [o.status for o in outcomes] == ["done"] * 30
        del outcomes
        gc.collect()
        out = tmp_path / "out"  # this batch's (other tests' clusters keep their own)
        alive = sum(isinstance(o, SceneJob) and o.flow.outputs.folder.parent == out
                    for o in gc.get_objects())
    assert alive <= 12, f"{alive} scenes' jobs still held after the batch"


def test_the_end_of_run_table_is_aligned_a_line_at_a_time():
    from geoseg_pipelines.outcomes import SceneOutcome, align, status_counts, table_lines

    outcomes = [SceneOutcome("/data/a.tif", "done", 1.5, 2.25, folder="/out/a"),
                SceneOutcome("/data/north/tile.tif", "failed", 12.0, 0.5,
                             error="tile.tif: not a raster", folder="/out/north_tile"),
                SceneOutcome("/data/b.tif", "interrupted", folder="/out/b")]
    lines = list(table_lines(outcomes))
    assert "\n".join(lines) == align([
        ("scene", "status", "MPix", "seconds", "error"),
        ("a.tif", "done", "1.50", "2.2", ""),
        ("tile.tif (north_tile)", "failed", "12.00", "0.5", "tile.tif: not a raster"),
        ("b.tif", "interrupted", "0.00", "0.0", "")])
    assert lines[2].index("failed") == lines[0].index("status") == len("tile.tif (north_tile)  ")
    assert status_counts(outcomes) == {"done": 1, "skipped": 0, "failed": 1, "interrupted": 1}
