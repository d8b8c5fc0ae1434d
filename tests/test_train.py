"""Training on tiny synthetic scenes: loss goes down, bundles load and predict, runs repeat
and resume exactly, bad input is one clear line; plus the shipped model on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.model import load_bundle
from geoseg.training.recipe import load_recipe
from geoseg_pipelines.cli_train import train_command

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
TRANSFORM = Affine(1.0, 0, 300000.0, 0, -1.0, 5000000.0)
HOUSES = [(8, 10, 24, 30), (40, 50, 60, 62), (70, 8, 88, 26), (12, 64, 28, 90)]
"""(row0, col0, row1, col1) of bright 'buildings' in the 96 x 96 scene."""


def make_scene(tmp_path, *, bands=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    coarse = rng.random((bands, 14, 14))
    data = (40 + 60 * np.kron(coarse, np.ones((1, 8, 8)))[:, :96, :96]
            + 15 * rng.random((bands, 96, 96)))
    for r0, c0, r1, c1 in HOUSES:
        data[:, r0:r1, c0:c1] = 210 + 20 * rng.random((bands, r1 - r0, c1 - c0))
    path = tmp_path / f"scene{bands}.tif"
    with rasterio.open(path, "w", driver="GTiff", height=96, width=96, count=bands,
                       dtype="uint8", crs="EPSG:32618", transform=TRANSFORM) as ds:
        ds.write(data.astype(np.uint8))
    return path


def house_boxes():
    return [box(300000 + c0, 5000000 - r1, 300000 + c1, 5000000 - r0)
            for r0, c0, r1, c1 in HOUSES]


def make_labels(tmp_path, *, geoms=None, crs="EPSG:32618", values=None, name="labels.gpkg"):
    import geopandas as gpd

    geoms = geoms or house_boxes()
    values = values or ["house"] * len(geoms)
    path = tmp_path / name
    gpd.GeoDataFrame({"kind": values}, geometry=geoms, crs=crs).to_file(path)
    return path


def make_recipe(tmp_path, scene, labels_path, **overrides) -> Path:
    recipe = {
        "name": "tiny", "classes": ["background", "building"],
        "labels": {"attribute": "kind", "mapping": {"house": "building"}},
        "train": [{"image": str(scene), "labels": str(labels_path)}],
        "split": "blocks", "block_size": 32, "val_fraction": 0.25,
        "arch": "tinycnn", "encoder": "-", "arch_kwargs": {"depth": 3, "width": 8},
        "tile_size": 64, "overlap": 32, "chip_size": 32, "batch_size": 4, "steps": 40,
        "lr": 0.05, "schedule": "constant", "dice_weight": 0.5, "balance": 0.5,
        "val_every": 10, "patience": 10, "seed": 3, "threads": 1,
        "checkpoint_dir": str(tmp_path / "ckpt"), "output": str(tmp_path / "model.safetensors"),
    }
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_training_lowers_loss_and_writes_a_bundle_that_predicts(tmp_path):
    from geoseg.training.recipe import load_recipe
    from geoseg.training.loop import train

    scene = make_scene(tmp_path)
    result = train(load_recipe(make_recipe(tmp_path, scene, make_labels(tmp_path))),
                   progress=False)
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    bundle = load_bundle(result.bundle)
    meta = bundle.meta
    assert [c.name for c in meta.classes] == ["background", "building"]
    assert (meta.tile_size, meta.overlap) == (64, 32)
    assert meta.provenance["trained"] and meta.provenance["metrics"]["validation_miou"] > 0
    assert meta.provenance["recipe"]["arch"] == "tinycnn"
    assert all(0 < s < 1 for s in meta.std)  # statistics from the scene, scaled by 1/255

    from geoseg.prediction.options import PredictOptions
    from geoseg.training.evaluate import evaluate_prediction
    from geoseg.prediction.flow import predict_scene

    summary = predict_scene(scene, tmp_path / "out", model=bundle, options=PredictOptions())
    report = evaluate_prediction(summary["outputs"]["classes"], make_labels(tmp_path),
                                 options=_options())
    assert report["classes"]["building"]["iou"] > 0.6


def _options():
    from geoseg.training.evaluate import EvaluateOptions
    from geoseg.training.labels import LabelSpec

    return EvaluateOptions(labels=LabelSpec(attribute="kind", mapping={"house": "building"}))


@pytest.mark.parametrize("ema", [0.0, 0.5], ids=["weights", "moving-average"])
def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path, monkeypatch, ema):
    import geoseg.training.loop as gtrain

    scene, labels = make_scene(tmp_path), make_labels(tmp_path)
    recipe_a = load_recipe(make_recipe(tmp_path, scene, labels, steps=10, val_every=5,
                                              ema=ema,
                                              checkpoint_dir=str(tmp_path / "a"),
                                              output=str(tmp_path / "a.safetensors")))
    gtrain.train(recipe_a, progress=False)

    # the same recipe, interrupted after the first checkpoint, then resumed
    recipe_b = load_recipe(make_recipe(tmp_path, scene, labels, steps=10, val_every=5,
                                              ema=ema,
                                              checkpoint_dir=str(tmp_path / "b"),
                                              output=str(tmp_path / "b.safetensors")))
    real_validate, calls = gtrain.validate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(gtrain, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train(recipe_b, progress=False)
    assert (tmp_path / "b" / "last.pt").is_file()
    monkeypatch.setattr(gtrain, "validate", real_validate)
    resumed = gtrain.train(recipe_b, progress=False)
    assert resumed.steps == 10

    a = load_bundle(tmp_path / "a.safetensors").network.state_dict()
    b = load_bundle(tmp_path / "b.safetensors").network.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # the last step's weights (and moving average) too, not only the best validated ones
    last_a, last_b = (torch.load(tmp_path / run / "last.pt", weights_only=True)
                      for run in ("a", "b"))
    for part in ("network", "averaged") if ema else ("network",):
        for key in last_a[part]:
            torch.testing.assert_close(last_a[part][key], last_b[part][key], rtol=0, atol=0)


def test_the_moving_average_is_what_is_validated_and_shipped(tmp_path):
    import geoseg.training.loop as gtrain

    scene, labels = make_scene(tmp_path), make_labels(tmp_path)
    recipe = load_recipe(make_recipe(tmp_path, scene, labels, steps=8, val_every=8,
                                            ema=0.5))
    gtrain.train(recipe, progress=False)
    shipped = load_bundle(recipe.output).network.state_dict()
    last = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in last["averaged"].items()
                if k.startswith("module.")}
    floats = [k for k, v in shipped.items() if v.is_floating_point()]
    for key in floats:
        torch.testing.assert_close(shipped[key], averaged[key], rtol=0, atol=0)
    assert any(not torch.equal(shipped[k], last["network"][k]) for k in floats)


def test_checkpoints_from_before_a_new_recipe_field_still_resume():
    from geoseg.training.recipe import Recipe, SceneEntry
    from geoseg.training.loop import _fingerprint

    recipe = Recipe(name="m", classes=("a", "b"), train=(SceneEntry("s.tif", "l.gpkg"),),
                    output="m.safetensors", validation=(SceneEntry("v.tif", "l.gpkg"),))
    full = recipe.to_dict()
    older = {k: v for k, v in full.items() if k not in ("ema", "tta")}
    assert _fingerprint(older) == _fingerprint(full)
    assert _fingerprint({**full, "tta": "d4"}) == _fingerprint(full)  # bundle metadata only
    assert _fingerprint({**full, "ema": 0.99}) != _fingerprint(full)


def test_a_moving_average_that_would_keep_the_random_start_is_refused(tmp_path):
    recipe = make_recipe(tmp_path, make_scene(tmp_path), make_labels(tmp_path), steps=100,
                         ema=0.999)
    code, lines = run_train(recipe)
    assert_one_error_line(code, lines, "ema 0.999", "90%", "more steps", exit_code=2)


def run_train(recipe) -> tuple[int, list[str]]:
    result = CliRunner().invoke(train_command, [str(recipe), "--no-progress"])
    return result.exit_code, result.output.strip().splitlines()


def assert_one_error_line(code, lines, *fragments, exit_code=1):
    assert code == exit_code, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_labels_that_do_not_overlap_the_scene(tmp_path):
    labels = make_labels(tmp_path, geoms=[box(0, 0, 50, 50)])
    code, lines = run_train(make_recipe(tmp_path, make_scene(tmp_path), labels))
    assert_one_error_line(code, lines, "labels.gpkg", "overlaps the scene")


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_labels_without_a_crs(tmp_path):
    labels = make_labels(tmp_path, crs=None)
    code, lines = run_train(make_recipe(tmp_path, make_scene(tmp_path), labels))
    assert_one_error_line(code, lines, "labels.gpkg", "no CRS")


def test_class_attribute_that_does_not_exist_lists_the_others(tmp_path):
    recipe = make_recipe(tmp_path, make_scene(tmp_path), make_labels(tmp_path),
                         labels={"attribute": "Niveau_2", "mapping": {"house": "building"}})
    code, lines = run_train(recipe)
    assert_one_error_line(code, lines, "'Niveau_2'", "attributes are: kind")


def test_label_value_without_class_mapping(tmp_path):
    labels = make_labels(tmp_path, values=["house", "house", "shed", "house"])
    code, lines = run_train(make_recipe(tmp_path, make_scene(tmp_path), labels))
    assert_one_error_line(code, lines, "'shed'", "no class mapping")


def test_scene_bands_differ_from_the_recipe(tmp_path):
    scene = make_scene(tmp_path, bands=2)
    code, lines = run_train(make_recipe(tmp_path, scene, make_labels(tmp_path)))
    assert_one_error_line(code, lines, "scene2.tif", "has 2 bands", "expects 3")


def test_unknown_recipe_field(tmp_path):
    recipe = make_recipe(tmp_path, make_scene(tmp_path), make_labels(tmp_path), epocs=3)
    code, lines = run_train(recipe)
    assert_one_error_line(code, lines, "epocs", exit_code=2)


MASSACHUSETTS = SHARED / "massachusetts"
SHIPPED = REPO / "models" / "buildings.safetensors"
SHIPPED_IOU = 0.431  # measured building IoU of the shipped model (held out), models/README.md
SPACENET = SHARED / "spacenet"

real_data = [
    pytest.mark.integration,
    pytest.mark.skipif(not MASSACHUSETTS.is_dir(),
                       reason="real data ../shared/data/massachusetts (relative to the repo "
                              "root) is absent"),
    pytest.mark.skipif(not SHIPPED.is_file(),
                       reason="models/buildings.safetensors is not there"),
]


@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory):
    """The shipped model through geoseg predict with its defaults (tta flips), scored by
    geoseg evaluate (once)."""
    from geoseg.prediction.options import PredictOptions
    from geoseg.training.evaluate import evaluate_prediction
    from geoseg.prediction.flow import predict_scene

    scene = MASSACHUSETTS / "23429155_15_uint8_clipped.tif"
    summary = predict_scene(scene, tmp_path_factory.mktemp("shipped"), model=SHIPPED,
                            options=PredictOptions(device="cpu", threads=2))
    return evaluate_prediction(summary["outputs"]["classes"],
                               MASSACHUSETTS / "23429155_15.gpkg")


def _marks(function):
    for mark in reversed(real_data):
        function = mark(function)
    return function


@_marks
def test_shipped_model_keeps_its_measured_quality(shipped_report):
    """Regression guard: the IoU measured when the model was shipped, within 0.02."""
    assert SHIPPED.stat().st_size <= 15 * 1024 * 1024
    assert shipped_report["classes"]["building"]["iou"] >= SHIPPED_IOU - 0.02


@_marks
def test_shipped_model_reaches_building_iou_half_on_a_source_it_never_saw(tmp_path):
    """The SpaceNet Atlanta chip (0.5 m, another city and sensor) was neither trained on
    nor used to choose the checkpoint: predicted at 1 m on the fly, building IoU >= 0.5
    (measured 0.555; the first model, trained on one scene: 0.399)."""
    from geoseg.prediction.options import PredictOptions
    from geoseg.training.evaluate import evaluate_prediction
    from geoseg.prediction.flow import predict_scene

    if not SPACENET.is_dir():
        pytest.skip(f"{SPACENET} is absent")
    summary = predict_scene(SPACENET / "SN4_Atlanta_PS-RGB_732701_3729639_clipped.tif",
                            tmp_path, model=SHIPPED,
                            options=PredictOptions(device="cpu", threads=2))
    report = evaluate_prediction(summary["outputs"]["classes"],
                                 SPACENET / "SN4_Atlanta_buildings_732701_3729639.geojson")
    assert report["classes"]["building"]["iou"] >= 0.5


# --- several sources at one GSD, held-out selection, a safe output ------------------------

def test_scenes_are_read_at_the_recipes_gsd(tmp_path):
    """A 1 m scene read with gsd 2: pixels at 2 m (the area average of 2 x 2 pixels), its
    labels burnt on that grid (the houses keep their share)."""
    from geoseg.training.chips import load_labelled_scene, model_grid
    from geoseg.classes import make_classes
    from geoseg.grid import PixelGrid
    from geoseg.training.labels import LabelSpec

    scene = make_scene(tmp_path)
    classes = make_classes(["background", "building"])
    spec = LabelSpec(attribute="kind", mapping={"house": "building"})
    at_1m = load_labelled_scene(scene, make_labels(tmp_path), spec=spec, classes=classes,
                                band_names=("r", "g", "b"), gsd=TRANSFORM.a * 2)
    plain = load_labelled_scene(scene, make_labels(tmp_path), spec=spec, classes=classes,
                                band_names=("r", "g", "b"))
    assert at_1m.pixels.shape == (3, 48, 48) and plain.pixels.shape == (3, 96, 96)
    averaged = plain.pixels.reshape(3, 48, 2, 48, 2).astype(float).mean(axis=(2, 4))
    assert np.abs(at_1m.pixels.astype(float) - averaged).max() <= 1
    assert abs((at_1m.labels == 1).mean() - (plain.labels == 1).mean()) < 0.02
    grid = PixelGrid(96, 96, TRANSFORM, rasterio.crs.CRS.from_epsg(32618))
    assert model_grid(grid, TRANSFORM.a) == grid  # already at that size


def test_each_scene_may_label_its_own_way(tmp_path):
    """Two sources: one with kind=house polygons, one whose every polygon is a building."""
    scene = make_scene(tmp_path)
    first = make_labels(tmp_path)
    second = make_labels(tmp_path, values=["whatever"] * len(house_boxes()),
                         name="plain.gpkg")
    recipe = make_recipe(tmp_path, scene, first, steps=4, val_every=2,
                         train=[{"image": str(scene), "labels": str(first)},
                                {"image": str(scene), "labels": str(second),
                                 "attribute": None, "mapping": {}}])
    code, lines = run_train(recipe)
    assert code == 0, lines
    bad = make_recipe(tmp_path, scene, first,
                      train=[{"image": str(scene), "labels": str(first), "colour": "red"}])
    code, lines = run_train(bad)
    assert_one_error_line(code, lines, "optionally its own attribute, mapping", exit_code=2)


def test_missing_data_is_named_before_training(tmp_path):
    recipe = make_recipe(tmp_path, tmp_path / "shared" / "data" / "nope.tif",
                         make_labels(tmp_path))
    code, lines = run_train(recipe)
    assert_one_error_line(code, lines, "nope.tif not found", "SOURCES.md")


def test_training_never_silently_replaces_a_bundle(tmp_path):
    scene, labels = make_scene(tmp_path), make_labels(tmp_path)
    recipe = make_recipe(tmp_path, scene, labels, steps=2, val_every=1)
    (tmp_path / "model.safetensors").write_bytes(b"shipped")
    code, lines = run_train(recipe)
    assert_one_error_line(code, lines, "model.safetensors exists (the recipe output)",
                          "--out NEW.safetensors", "--overwrite", exit_code=2)
    assert (tmp_path / "model.safetensors").read_bytes() == b"shipped"
    result = CliRunner().invoke(train_command, [str(recipe), "--no-progress", "--out",
                                                str(tmp_path / "new.safetensors")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(train_command, [str(recipe), "--no-progress", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.safetensors").read_bytes() != b"shipped"


def test_stretch_in_a_recipe_trains_on_stretched_scenes_and_records_it(tmp_path):
    """stretch: [2, 98] maps each training scene as prediction will map every scene; the
    bundle records it; a half-contrast copy of the scene then scores like the scene."""
    from geoseg.prediction.options import PredictOptions
    from geoseg.training.evaluate import evaluate_prediction
    from geoseg.prediction.flow import predict_scene
    from geoseg.training.recipe import load_recipe
    from geoseg.training.loop import train

    scene = make_scene(tmp_path)
    labels = make_labels(tmp_path)
    result = train(load_recipe(make_recipe(tmp_path, scene, labels, stretch=[2, 98])),
                   progress=False)
    meta = load_bundle(result.bundle).meta
    assert meta.stretch == (2.0, 98.0) and meta.provenance["recipe"]["stretch"] == [2.0, 98.0]
    with rasterio.open(scene) as ds:
        profile, data = ds.profile, ds.read()
    profile.update(dtype="float32", nodata=None)
    dull = tmp_path / "dull.tif"
    with rasterio.open(dull, "w", **profile) as ds:
        ds.write(data.astype(np.float32) / 2 + 20)
    ious = []
    for path in (scene, dull):
        summary = predict_scene(path, tmp_path / "out", model=result.bundle,
                                options=PredictOptions())
        ious.append(evaluate_prediction(summary["outputs"]["classes"], labels,
                                        options=_options())["classes"]["building"]["iou"])
    assert ious[0] > 0.6 and abs(ious[0] - ious[1]) < 0.02
    from geoseg.errors import ConfigError

    bad = make_recipe(tmp_path, scene, labels, stretch=[98, 2])
    with pytest.raises(ConfigError, match="stretch"):
        load_recipe(bad)


def test_gamma_and_blur_touch_valid_pixels_only():
    from geoseg.training.chips import augment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 32, 32)).astype(np.float32)
    valid = np.ones((32, 32), bool)
    valid[:8] = False
    x[:, ~valid] = 0
    mean = np.full((3, 1, 1), 0.5, np.float32)
    std = np.full((3, 1, 1), 0.25, np.float32)
    out, _ = augment(x, np.zeros((32, 32), np.uint8), valid, rng, jitter=0.0, gamma=0.5,
                     blur=1.0, mean=mean, std=std)
    assert not np.allclose(out, x)
    # masked pixels stay exactly 0 (as in prediction), whatever the flips did
    assert (out == 0).sum() >= 3 * 8 * 32


def test_chips_may_reach_into_held_out_blocks_without_seeing_them():
    """chip_inside 0.5: a chip needs half its pixels in the training area; the rest is cut
    out (invalid, unlabelled), so small scenes split into blocks still give chips."""
    from geoseg.training.chips import LabelledScene, cut, make_sampler
    from geoseg.grid import Window

    region = np.ones((96, 96), bool)
    region[:, 40:56] = False  # a held-out band through the middle
    pixels = np.full((3, 96, 96), 100, np.uint8)
    scene = LabelledScene("s", "l", pixels, np.ones((96, 96), bool),
                          np.ones((96, 96), np.uint8), region)
    from geoseg.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no 64 x 64 chip fits"):
        make_sampler([scene], size=64, num_classes=2, background=0)  # whole chips only
    half = make_sampler([scene], size=64, num_classes=2, background=0, inside=0.5)
    assert len(half.origins[0]) > 0
    origin = int(half.origins[0][len(half.origins[0]) // 2])
    row, col = divmod(origin, 96)
    chip, valid, labels = cut(scene, Window(row, col, 64, 64))
    held = ~region[row:row + 64, col:col + 64]
    assert held.any() and not valid[held].any() and (labels[held] == 255).all()
    assert (chip[:, held] == 100).all()  # raw values stay; validity masks them (normalize -> 0)


def test_zoomed_chips_keep_masks_labels_and_the_held_out_area_out():
    """zoom: a window 1/z the chip's side around the same centre, resized to the chip;
    pixels bilinear, validity and labels nearest, invalid pixels exactly 0."""
    from geoseg.training.chips import resize_chip

    x = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64) / 1000
    valid = np.ones((64, 64), bool)
    valid[:, :16] = False
    x[:, ~valid] = 0
    labels = np.zeros((64, 64), np.uint8)
    labels[32:, :] = 1
    labels[:, :16] = 255
    for size in (32, 128):
        out, v, lab = resize_chip(x, valid, labels, size)
        assert out.shape == (2, size, size) and v.shape == lab.shape == (size, size)
        assert (out[:, ~v] == 0).all() and set(np.unique(lab)) == {0, 1, 255}
        assert (lab[:, : size // 4] == 255).all() and not v[:, : size // 4].any()
        assert lab[size - 1, size - 1] == 1 and lab[0, size - 1] == 0


def test_zoom_in_a_recipe_trains_and_is_checked(tmp_path):
    from geoseg.training.chips import LabelledScene, make_sampler
    from geoseg.model.bundle import create_bundle
    from geoseg.classes import make_classes
    from geoseg.errors import ConfigError
    from geoseg.training.recipe import Recipe, load_recipe
    from geoseg.training.loop import make_batch

    region = np.ones((96, 96), bool)
    region[:, 48:] = False  # held out: never seen, whatever the zoom
    pixels = np.full((3, 96, 96), 100, np.uint8)
    pixels[:, :, 48:] = 200
    labels = np.zeros((96, 96), np.uint8)
    labels[:, 48:] = 1
    scene = LabelledScene("s", "l", pixels, np.ones((96, 96), bool), labels, region)
    sampler = make_sampler([scene], size=32, num_classes=2, background=0, inside=0.5)
    meta = create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                         bands=("r", "g", "b"), scale=(1 / 255,) * 3, mean=(0.5,) * 3,
                         std=(0.25,) * 3).meta
    recipe = Recipe(name="z", classes=("bg", "fg"), bands=("r", "g", "b"), train=(),
                    output=str(tmp_path / "z.safetensors"), chip_size=32, batch_size=16,
                    zoom=0.5, jitter=0.0)
    x, y = make_batch([scene], sampler, np.random.default_rng(0), meta, recipe)
    assert tuple(x.shape) == (16, 3, 32, 32) and tuple(y.shape) == (16, 32, 32)
    assert not (y == 1).any()  # the only building pixels are held out
    bright = (200 / 255 - 0.5) / 0.25
    assert not np.isclose(x.numpy(), bright).any()
    sizes = set()  # the zoom varies what a chip covers: the 100-valued part's width
    for _ in range(20):
        _, y = make_batch([scene], sampler, np.random.default_rng(_), meta, recipe)
        sizes |= {int((y[k] == 0).sum()) for k in range(len(y))}
    assert len(sizes) > 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "classes": ["bg", "fg"], "split": "blocks",
                                   "train": [{"image": "a.tif", "labels": "a.gpkg"}],
                                   "output": "b.safetensors", "zoom": -1}))
    with pytest.raises(ConfigError, match="zoom"):
        load_recipe(bad)
