"""Metrics against hand-computed confusion matrices; object F1; the evaluate command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.classes import CLASSES_TAG, NODATA_CLASS, classes_to_json, make_classes
from geoseg.training.evaluate import (confusion_matrix, evaluate_prediction, match_objects,
                             pixel_metrics)
from geoseg_pipelines.cli_train import evaluate_command

N = NODATA_CLASS
CLASSES = make_classes(["background", "building", "water"])
TRANSFORM = Affine(1.0, 0, 1000.0, 0, -1.0, 2000.0)


def test_confusion_matrix_by_hand_with_nodata():
    truth = np.array([[0, 0, 1, 1],
                      [0, 1, 1, N],
                      [2, 2, 0, 0]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 1],
                     [2, N, 0, 2]])
    cm = confusion_matrix(truth, pred, num_classes=3)
    # pixels with nodata on either side are left out: (1, 3) truth N, (2, 1) pred N
    expected = np.array([[3, 1, 1],
                         [1, 3, 0],
                         [0, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    m = pixel_metrics(cm, CLASSES)
    assert m["pixels"] == 10
    assert m["pixel_accuracy"] == pytest.approx(7 / 10)
    assert m["classes"]["background"]["iou"] == pytest.approx(3 / (5 + 4 - 3))
    assert m["classes"]["building"]["iou"] == pytest.approx(3 / (4 + 4 - 3))
    assert m["classes"]["water"]["iou"] == pytest.approx(1 / (1 + 2 - 1))
    assert m["classes"]["building"]["precision"] == pytest.approx(3 / 4)
    assert m["classes"]["water"]["recall"] == pytest.approx(1.0)
    assert m["classes"]["water"]["f1"] == pytest.approx(2 * 1 / (1 + 2))
    assert m["miou"] == pytest.approx(np.mean([3 / 6, 3 / 5, 1 / 2]))


def test_absent_class_has_no_iou_and_is_left_out_of_miou():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    m = pixel_metrics(confusion_matrix(truth, pred, num_classes=3), CLASSES)
    assert m["classes"]["water"]["iou"] is None
    assert m["classes"]["water"]["precision"] is None
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_object_matching_at_iou_half():
    truth = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    predicted = [box(0, 0, 10, 9),        # IoU 0.9: match
                 box(20, 0, 30, 4),       # IoU 0.4: no match
                 box(60, 0, 70, 10)]      # nothing there
    r = match_objects(predicted, truth)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 2)
    assert r["f1"] == pytest.approx(2 / (2 + 2 + 2))
    # one prediction cannot match two truths
    r = match_objects([box(0, 0, 30, 10)], [box(0, 0, 15, 10), box(15, 0, 30, 10)])
    assert r["tp"] == 1 and r["fn"] == 1


def write_prediction(path, ids):
    with rasterio.open(path, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1],
                       count=1, dtype="uint8", crs="EPSG:32633", transform=TRANSFORM,
                       nodata=N) as ds:
        ds.write(ids.astype(np.uint8), 1)
        ds.update_tags(**{CLASSES_TAG: classes_to_json(CLASSES[:2])})
    return path


def test_evaluate_against_vector_truth(tmp_path):
    import geopandas as gpd

    pred = np.zeros((40, 40), np.uint8)
    pred[5:15, 5:15] = 1      # matches building A
    pred[25:35, 25:30] = 1    # half of building B: IoU 0.5 -> matched
    pred[0, :] = N            # nodata row ignored
    write_prediction(tmp_path / "classes.tif", pred)
    # building A rows 5..14 cols 5..14; B rows 25..34 cols 25..34 (y = 2000 - row)
    a = box(1005, 2000 - 15, 1015, 2000 - 5)
    b = box(1025, 2000 - 35, 1035, 2000 - 25)
    gpd.GeoDataFrame({"class": [1, 1]}, geometry=[a, b], crs="EPSG:32633").to_file(
        tmp_path / "truth.gpkg")
    report = evaluate_prediction(tmp_path / "classes.tif", tmp_path / "truth.gpkg")
    building = report["classes"]["building"]
    assert building["iou"] == pytest.approx(150 / 200)
    assert report["pixels"] == 40 * 39
    assert report["objects"]["building"]["tp"] == 2
    assert report["objects"]["building"]["f1"] == pytest.approx(1.0)

    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(evaluate_command, [str(tmp_path / "classes.tif"), "--truth",
                                                   str(tmp_path / "truth.gpkg"), "--attribute",
                                                   "class", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "building" in result.output and "0.7500" in result.output
    assert json.loads(out.read_text())["classes"]["building"]["iou"] == pytest.approx(0.75)


def test_evaluate_against_raster_truth(tmp_path):
    pred = np.zeros((10, 10), np.uint8)
    pred[:5] = 1
    truth = np.zeros((10, 10), np.uint8)
    truth[:4] = 1
    truth[9] = N
    write_prediction(tmp_path / "p.tif", pred)
    write_prediction(tmp_path / "t.tif", truth)
    report = evaluate_prediction(tmp_path / "p.tif", tmp_path / "t.tif")
    assert report["pixels"] == 90
    assert report["classes"]["building"]["iou"] == pytest.approx(40 / 50)


def test_evaluate_command_bad_attribute_is_one_line(tmp_path):
    import geopandas as gpd

    write_prediction(tmp_path / "p.tif", np.zeros((10, 10), np.uint8))
    gpd.GeoDataFrame({"kind": [1]}, geometry=[box(1000, 1990, 1005, 2000)],
                     crs="EPSG:32633").to_file(tmp_path / "t.gpkg")
    result = CliRunner().invoke(evaluate_command, [str(tmp_path / "p.tif"), "--truth",
                                                   str(tmp_path / "t.gpkg"), "--attribute",
                                                   "klass"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "kind" in lines[0]
    assert "Traceback" not in result.output


def test_a_scene_given_as_the_prediction_is_refused_in_one_line(tmp_path):
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", height=10, width=10, count=3,
                       dtype="uint8", crs="EPSG:32633", transform=TRANSFORM) as ds:
        ds.write(np.zeros((3, 10, 10), np.uint8))
    truth = tmp_path / "t.tif"
    write_prediction(truth, np.zeros((10, 10), np.uint8))
    result = CliRunner().invoke(evaluate_command, [str(scene), "--truth", str(truth)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "has 3 bands" in lines[0] and "classes.tif" in lines[0], lines
    missing = CliRunner().invoke(evaluate_command, [str(tmp_path / "nope.tif"), "--truth",
                                                    str(truth)])
    assert missing.exit_code == 1 and "not found" in missing.output


# --- label rasters whose nodata tag is also a class value (NRCan tiled_label_*.tif) ---

def write_label_raster(path, ids, *, nodata):
    """A bare label raster (class ids, no classes tag), as NRCan ships them."""
    with rasterio.open(path, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1],
                       count=1, dtype="uint8", crs="EPSG:32633", transform=TRANSFORM,
                       nodata=nodata) as ds:
        ds.write(ids.astype(np.uint8), 1)
    return path


@pytest.fixture
def nodata_zero_case(tmp_path):
    """Prediction: rows 0..9 building. Truth: rows 0..3 building, the rest background (0),
    tagged nodata=0. True building IoU 80 / 200 = 0.4; ignoring 0 would make it 1.0."""
    pred = np.zeros((20, 20), np.uint8)
    pred[:10] = 1
    truth = np.zeros((20, 20), np.uint8)
    truth[:4] = 1
    return (write_prediction(tmp_path / "p.tif", pred),
            write_label_raster(tmp_path / "tiled_label_7.tif", truth, nodata=0),
            write_label_raster(tmp_path / "untagged.tif", truth, nodata=None))


def test_label_raster_nodata_that_is_a_class_value_is_read_as_the_class(nodata_zero_case):
    from geoseg.training.evaluate import EvaluateOptions
    from geoseg.training.labels import LabelSpec

    pred, tagged, untagged = nodata_zero_case
    report = evaluate_prediction(pred, tagged)
    honest = evaluate_prediction(pred, untagged)
    assert report["classes"]["building"]["iou"] == pytest.approx(80 / 200)
    assert report["classes"]["building"]["iou"] == honest["classes"]["building"]["iou"]
    assert report["classes"]["background"]["iou"] == honest["classes"]["background"]["iou"]
    assert report["objects"]["building"]["f1"] == honest["objects"]["building"]["f1"] == 0
    assert report["pixels"] == 400 and report["scored_fraction"] == pytest.approx(1.0)
    assert report["predicted_pixels"] == 400 and report["truth_nodata"] is None
    assert len(report["warnings"]) == 1
    warning = report["warnings"][0]
    assert "tiled_label_7.tif" in warning and "nodata value 0" in warning
    assert "background" in warning and "--truth-nodata 0" in warning
    assert honest["warnings"] == []

    # asking for nodata 0 explicitly restores ignoring it, and says how little is scored
    ignoring = evaluate_prediction(pred, tagged,
                                   options=EvaluateOptions(labels=LabelSpec(nodata=0)))
    assert ignoring["classes"]["building"]["iou"] == pytest.approx(1.0)
    assert ignoring["warnings"] == [] and ignoring["truth_nodata"] == 0
    assert ignoring["pixels"] == 80 and ignoring["scored_fraction"] == pytest.approx(0.2)


def _invoke(*args):
    return CliRunner().invoke(evaluate_command, [str(a) for a in args])


def test_evaluate_command_warns_once_and_prints_the_scored_fraction(nodata_zero_case,
                                                                    tmp_path):
    pred, tagged, _ = nodata_zero_case
    out = tmp_path / "m.json"
    result = _invoke(pred, "--truth", tagged, "--json", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), warnings
    assert "tiled_label_7.tif" in warnings[0] and "--truth-nodata 0" in warnings[0]
    assert "warning" not in result.stdout
    assert "0.4000" in result.stdout
    assert "scored 100.0% of the 400 predicted pixels" in result.stdout
    data = json.loads(out.read_text())
    assert data["scored_fraction"] == pytest.approx(1.0)
    assert data["classes"]["building"]["iou"] == pytest.approx(0.4)
    assert data["warnings"] == [warnings[0].removeprefix("warning: ")]
    assert "predicted pixels" in data["scored_fraction_definition"]


def test_truth_nodata_option_overrides_the_tag(nodata_zero_case, tmp_path):
    pred, tagged, _ = nodata_zero_case
    out = tmp_path / "m.json"
    ignoring = _invoke(pred, "--truth", tagged, "--truth-nodata", "0", "--json", out)
    assert ignoring.exit_code == 0, ignoring.output
    assert ignoring.stderr == ""
    assert "1.0000" in ignoring.stdout
    assert "scored 20.0% of the 400 predicted pixels" in ignoring.stdout
    assert json.loads(out.read_text())["scored_fraction"] == pytest.approx(0.2)

    none = _invoke(pred, "--truth", tagged, "--truth-nodata", "none")
    assert none.exit_code == 0, none.output
    assert none.stderr == "" and "0.4000" in none.stdout
    assert "scored 100.0% of the 400 predicted pixels" in none.stdout

    bad = _invoke(pred, "--truth", tagged, "--truth-nodata", "zero")
    assert bad.exit_code == 2  # an option the command cannot run with
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'zero'" in lines[0]
    assert "none" in lines[0] and "Traceback" not in bad.output


def test_label_raster_nodata_that_is_no_class_keeps_ignoring_it(tmp_path):
    pred = np.zeros((20, 20), np.uint8)
    pred[:10] = 1
    truth = np.full((20, 20), 9, np.uint8)   # 9: not a class id; a tenth of the raster
    truth[2:] = 0
    truth[2:6] = 1
    write_prediction(tmp_path / "p.tif", pred)
    write_label_raster(tmp_path / "t.tif", truth, nodata=9)
    report = evaluate_prediction(tmp_path / "p.tif", tmp_path / "t.tif")
    assert report["warnings"] == [] and report["truth_nodata"] == 9
    assert report["pixels"] == 360 and report["scored_fraction"] == pytest.approx(0.9)
    assert report["classes"]["building"]["iou"] == pytest.approx(80 / 160)
