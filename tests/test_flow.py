"""The scene flow: block spills named by the block grid, polygons from finished blocks on the
prediction's own block grid (never a re-read of classes.tif), one report for both runners."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.flow import predict_scene
from geoseg.grid import to_map
from geoseg.vector.polygonize import PieceRules, polygonize_classes
from geoseg.vector.seams import stream_regions
from geoseg.tiling import BlockGrid, TileGrid
from test_vectorize import UTM, assert_same_polygons, blobs, reference


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 400), width=st.integers(1, 400),
       size=st.sampled_from([32, 64, 96]), overlap_steps=st.integers(0, 1),
       per_block=st.integers(1, 4))
def test_sources_are_exactly_the_blocks_that_spill_into_a_block(height, width, size,
                                                               overlap_steps, per_block):
    overlap = min(overlap_steps * 32, size // 2 // 32 * 32)
    tiles = TileGrid.build(height=height, width=width, size=size, overlap=overlap)
    blocks = BlockGrid(tiles, per_block)
    receives: dict = {}
    for block in blocks.blocks():
        for key, _ in blocks.spills(block):
            receives.setdefault(key, []).append((block.row, block.col))
    for block in blocks.blocks():
        assert sorted(blocks.sources(block)) == sorted(receives.get((block.row, block.col), []))
        assert blocks.index_of(block.window) == (block.row, block.col)
        region = blocks.region(block)
        tiles_in = list(blocks.block_tiles(block))
        assert (region.row, region.col) == (tiles_in[0].read.row, tiles_in[0].read.col)
        assert region.row_stop == tiles_in[-1].read.row_stop
        assert region.col_stop == tiles_in[-1].read.col_stop


def test_regular_blocks_are_squares_of_the_block_size():
    blocks = BlockGrid.regular(height=70, width=45, block_size=20)
    windows = [b.window for b in blocks.blocks()]
    assert (blocks.n_rows, blocks.n_cols) == (4, 3)
    assert [(w.row, w.height) for w in windows[::3]] == [(0, 20), (20, 20), (40, 20), (60, 10)]
    assert sum(w.size for w in windows) == 70 * 45


@pytest.mark.parametrize("connectivity", [4, 8])
def test_polygons_on_a_prediction_block_grid_equal_one_whole_raster_call(connectivity):
    """Prediction blocks are not squares of one size: the last block of a row or column is
    up to an overlap wider than the others. Pieces merged across those seams still equal
    one whole-raster shapes call."""
    data = blobs(21, (203, 171))
    tiles = TileGrid.build(height=203, width=171, size=64, overlap=32)
    blocks = BlockGrid(tiles, 2)
    windows = [b.window for b in blocks.blocks()]
    assert max(w.height for w in windows) > blocks.step  # a wide last block is exercised
    rules = PieceRules(171, 255, None, connectivity)
    results = [polygonize_classes(data[b.window.slices()], b.window, rules)
               for b in reversed(list(blocks.blocks()))]
    from geoseg.grid import PixelGrid

    grid = PixelGrid(203, 171, UTM, None)
    pieces = [p for chunk in stream_regions(results, blocks=blocks, connectivity=connectivity)
              for p in [chunk]]
    ids = np.concatenate([p.class_ids for p in pieces])
    geoms = to_map(np.concatenate([p.geoms for p in pieces]), grid)
    assert shapely.is_valid(geoms).all()
    ref_ids, ref_geoms = reference(data, transform=UTM, connectivity=connectivity)
    assert_same_polygons(ref_ids, ref_geoms, ids, geoms)


def test_vectorize_in_predict_never_reads_the_class_raster_back(tmp_path, make_bundle,
                                                                monkeypatch):
    """Polygons come from the blocks prediction finished: classes.tif and
    probabilities.tif are written, never opened for reading; the polygons equal
    `geoseg vectorize` of the published class raster."""
    from geoseg.vector.layer import vectorize_raster

    scene = write_raster(tmp_path / "s.tif", smooth_noise((150, 130), seed=4))
    opened = []
    real_open = rasterio.open

    def recording_open(path, mode="r", *args, **kwargs):
        opened.append((str(path), mode))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", recording_open)
    # (preview.png, a separate output, reads the published raster's overviews: left out)
    summary = predict_scene(scene, tmp_path / "out", model=make_bundle(),
                            options=PredictOptions(vectorize=True, probabilities=True,
                                                   block_size=64, preview=False))
    monkeypatch.undo()
    reads = [p for p, mode in opened if mode == "r"]
    assert reads and all(p == str(scene) for p in reads), reads
    assert summary["outputs"]["polygons"].endswith("polygons.gpkg")
    folder = tmp_path / "out" / "s"
    vectorize_raster(folder / "classes.tif", tmp_path / "again.gpkg",
                     probabilities_path=folder / "probabilities.tif", block_size=50)
    got = gpd.read_file(folder / "polygons.gpkg", engine="pyogrio")
    want = gpd.read_file(tmp_path / "again.gpkg", engine="pyogrio")
    assert len(got) == len(want) > 0
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert got.geometry.geom_equals_exact(want.geometry, tolerance=0).all()


def test_the_summary_is_the_scene_report(tmp_path, make_bundle):
    """predict_scene's summary and the manifest come from one SceneReport."""
    from geoseg.prediction.scene_report import SceneReport

    scene = write_raster(tmp_path / "s.tif", smooth_noise((100, 90), seed=2))
    summary = predict_scene(scene, tmp_path / "out", model=make_bundle())
    fields = set(SceneReport.__dataclass_fields__)
    assert set(summary) <= fields
    assert sum(summary["class_pixels"].values()) + summary["nodata_pixels"] == 100 * 90


@pytest.mark.parametrize("batch", [7, 20_000])
def test_vector_file_bytes_do_not_depend_on_the_block_grid(tmp_path, monkeypatch, batch):
    """Features reach the GeoPackage in batches of a fixed size, so the file's bytes, not
    only its features, are the same for any block size (DESIGN.md promise 2)."""
    import geoseg.vector.gpkg
    from geoseg.vector.layer import vectorize_raster
    from test_vectorize import write_classes

    monkeypatch.setattr(geoseg.vector.gpkg, "BATCH_FEATURES", batch)
    path = write_classes(tmp_path / "c.tif", blobs(5, (90, 70)))
    outputs = []
    for block_size in (16, 33, 90):
        out = tmp_path / f"p{block_size}.gpkg"
        summary = vectorize_raster(path, out, block_size=block_size)
        outputs.append(out.read_bytes())
    assert summary["features"] > 2 * 7
    assert outputs[0] == outputs[1] == outputs[2]


def test_block_steps_list_every_block_after_its_sources(tmp_path, make_bundle):
    from geoseg.prediction.flow import block_steps, plan_flow
    from geoseg.model import read_meta
    from geoseg.inputs.scene import open_scene

    scene = open_scene(write_raster(tmp_path / "s.tif", smooth_noise((300, 250))))
    model = make_bundle()
    flow = plan_flow(scene, tmp_path / "out", meta=read_meta(model), model_sha256="x",
                     options=PredictOptions(block_size=64, vectorize=True))
    steps = block_steps(flow)
    assert [s.key for s in steps] == [(b.row, b.col) for b in flow.plan.blocks.blocks()]
    seen = set()
    for step in steps:
        assert set(step.sources) <= seen
        seen.add(step.key)
    assert any(len(s.sources) == 3 for s in steps)
    assert flow.vector is not None and flow.vector.blocks == flow.plan.blocks


@pytest.mark.parametrize("readers, alongside", [(1, True), (3, False), (3, True)])
def test_reader_and_finisher_threads_change_no_byte(tmp_path, make_bundle, monkeypatch,
                                                    readers, alongside):
    """The local runner with several readers (a dataset each) and the finisher thread
    writes what one reader and inline finishing write (this 2-core machine finishes inline
    by default: both paths are forced here)."""
    import geoseg.prediction.flow as flow

    scene = write_raster(tmp_path / "scene.tif", smooth_noise((230, 190), seed=7))
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, seed=5)
    options = PredictOptions(block_size=64, probabilities=True, vectorize=True)

    def run(name, readers, alongside):
        monkeypatch.setattr(flow, "reader_threads", lambda: readers)
        monkeypatch.setattr(flow, "finish_alongside", lambda device: alongside)
        out = tmp_path / name
        predict_scene(scene, out, model=model, options=options)
        return [(out / "scene" / n).read_bytes()
                for n in ("classes.tif", "probabilities.tif", "polygons.gpkg")]

    assert run("threads", readers, alongside) == run("plain", 1, False)


def test_a_scenes_tail_publishes_while_the_next_scenes_blocks_run(tmp_path, make_bundle,
                                                                   monkeypatch):
    """The local batch runner publishes scene i (COGs, overviews, vector file) on its tail
    thread while scene i+1's tiles go through the model; a tail that fails fails its scene
    alone (one line, nothing under a final name) and the batch goes on."""
    import threading
    import time

    from geoseg.prediction import blocks, flow
    from geoseg_pipelines.local import run_batch_local

    scenes = [write_raster(tmp_path / f"s{i}.tif", smooth_noise((96, 96), seed=i))
              for i in range(3)]
    model = make_bundle()
    events, publish, add = [], flow._publish, blocks.TileBatcher.add

    def slow_publish(writer, staging):
        name = writer.flow.outputs.folder.name
        events.append(("tail", name, threading.current_thread().name))
        time.sleep(0.5)
        if name == "s1":
            with staging:  # leaving with the error removes the staging files
                raise OSError("disk gone while publishing")
        out = publish(writer, staging)
        events.append(("published", name, threading.current_thread().name))
        return out

    def recording_add(self, block, pixels, valid):
        events.append(("block", self.plan.scene.path, threading.current_thread().name))
        return add(self, block, pixels, valid)

    monkeypatch.setattr(flow, "_publish", slow_publish)
    monkeypatch.setattr(blocks.TileBatcher, "add", recording_add)
    failed = []
    outcomes = run_batch_local(scenes, tmp_path / "out", model=model,
                               options=PredictOptions(vectorize=True),
                               on_failure=failed.append)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "disk gone while publishing" in outcomes[1].error and failed == [outcomes[1]]
    assert not (tmp_path / "out" / "s1").exists()
    for stem in ("s0", "s2"):
        assert (tmp_path / "out" / stem / "manifest.json").is_file()
        assert (tmp_path / "out" / stem / "polygons.gpkg").is_file()
    # s1's blocks ran on the model's thread while s0 was publishing on the tail thread
    order = [(kind, str(name)) for kind, name, _ in events]
    assert order.index(("block", str(scenes[1]))) < order.index(("published", "s0"))
    assert {t for kind, _, t in events if kind == "tail"} != \
        {t for kind, _, t in events if kind == "block"}
    assert outcomes[0].seconds < 5  # the scene's time ends with its tail, not the next one
