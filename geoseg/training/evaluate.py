"""Accuracy of a class raster against reference labels.

Pixel metrics come from one confusion matrix (rows: truth, columns: prediction) over pixels
where both truth and prediction are known (neither is :data:`NODATA_CLASS`): per-class IoU,
precision, recall, F1, mIoU and pixel accuracy. A class absent from both truth and
prediction has no IoU (None) and does not count in mIoU. The report says how much of the
prediction was scored (``scored_fraction``: pixels scored / pixels the prediction classifies,
i.e. that are not nodata), so a metric computed on a shrunken area never passes unnoticed;
``warnings`` carries what reading the truth decided (one line each, for the CLI to print).

For building-like classes, object-level F1 is the SpaceNet metric: predicted polygons
(connected regions of the class, from ``rasterio.features.shapes``) and true polygons
(the label polygons, or regions of a label raster) are matched one to one, greedily by
decreasing IoU, when their IoU is at least 0.5; objects smaller than ``min_area`` pixels
are left out of both sides, as SpaceNet does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import replacing
from ..classes import NODATA_CLASS, ClassInfo, make_classes
from ..errors import InvalidInputError
from ..grid import PixelGrid
from ..inputs.scene import open_raster, read_band
from .labels import LabelSpec, is_vector, polygon_classes, read_labels, read_vector_labels

if TYPE_CHECKING:
    import shapely

OBJECT_CLASS_HINTS = ("building", "bâtiment", "batiment", "house", "roof")
SCORED_FRACTION_DEFINITION = ("pixels scored (truth label and prediction both known) / "
                              "predicted pixels (the prediction's pixels that are not nodata)")


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, *, num_classes: int,
                     ignore: int = NODATA_CLASS) -> np.ndarray:
    """(K, K) int64 counts, rows truth, columns prediction; pixels where either side is
    ``ignore`` (or outside 0..K-1) are left out."""
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(prediction).ravel().astype(np.int64)
    keep = (t != ignore) & (p != ignore) & (t < num_classes) & (p < num_classes)
    keep &= (t >= 0) & (p >= 0)
    idx = t[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes,
                                                                         num_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def pixel_metrics(cm: np.ndarray, classes: tuple[ClassInfo, ...]) -> dict:
    """Per-class and overall metrics from a confusion matrix (see module docstring)."""
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(float)
    true_n = cm.sum(axis=1).astype(float)
    pred_n = cm.sum(axis=0).astype(float)
    per_class = {}
    for c in classes:
        k = c.id
        precision = _ratio(tp[k], pred_n[k])
        recall = _ratio(tp[k], true_n[k])
        f1 = _ratio(2 * tp[k], true_n[k] + pred_n[k])
        per_class[c.name] = {"id": k, "iou": _ratio(tp[k], true_n[k] + pred_n[k] - tp[k]),
                             "precision": precision, "recall": recall, "f1": f1,
                             "true_pixels": int(true_n[k]), "predicted_pixels": int(pred_n[k])}
    ious = [m["iou"] for m in per_class.values() if m["iou"] is not None]
    total = cm.sum()
    return {"pixel_accuracy": _ratio(tp.sum(), total),
            "miou": float(np.mean(ious)) if ious else None,
            "pixels": int(total), "classes": per_class,
            "confusion_matrix": cm.tolist()}


def mean_iou(cm: np.ndarray) -> float:
    """mIoU over classes present in truth or prediction (0.0 if none)."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


def match_objects(predicted: Iterable[shapely.Geometry | None],
                  truth: Iterable[shapely.Geometry | None], *,
                  iou_threshold: float = 0.5) -> dict:
    """One-to-one matching of two polygon lists at IoU >= threshold (greedy by IoU).

    Returns counts (tp, fp, fn) and precision, recall, f1 (None when undefined).
    """
    import shapely
    from shapely import STRtree

    predicted = [g for g in predicted if g is not None and not g.is_empty]
    truth = [g for g in truth if g is not None and not g.is_empty]
    pairs: list[tuple[Any, Any, Any]] = []
    if predicted and truth:
        tree = STRtree(truth)
        p_idx, t_idx = tree.query(predicted, predicate="intersects")
        if len(p_idx):
            p_geoms = np.array(predicted, dtype=object)[p_idx]
            t_geoms = np.array(truth, dtype=object)[t_idx]
            inter = shapely.area(shapely.intersection(p_geoms, t_geoms))
            union = shapely.area(p_geoms) + shapely.area(t_geoms) - inter
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
            pairs = sorted(zip(iou, p_idx, t_idx, strict=True), key=lambda x: -x[0])
    used_p: set[np.integer] = set()
    used_t: set[np.integer] = set()
    for iou, p, t in pairs:
        if iou < iou_threshold:
            break
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
    tp = len(used_p)
    fp, fn = len(predicted) - tp, len(truth) - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall,
            "f1": f1, "iou_threshold": iou_threshold}


def raster_polygons(class_ids: np.ndarray, grid: PixelGrid, class_id: int) -> list:
    """Connected regions (4-connected) of ``class_id`` as shapely polygons in map units."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    mask = class_ids == class_id
    if not mask.any():
        return []
    return [shape(geom) for geom, _ in shapes(mask.astype(np.uint8), mask=mask,
                                                transform=grid.transform, connectivity=4)]


def object_classes(classes: Sequence[ClassInfo],
                   names: Iterable[str] | None = None) -> list[ClassInfo]:
    """Classes scored at object level: ``names`` if given, else building-like names."""
    if names:
        wanted = {n.lower() for n in names}
        unknown = wanted - {c.name.lower() for c in classes}
        if unknown:
            raise InvalidInputError(f"object class(es) {', '.join(sorted(unknown))} are not "
                                    f"among the classes ({', '.join(c.name for c in classes)})")
        return [c for c in classes if c.name.lower() in wanted]
    return [c for c in classes
            if any(h in c.name.lower() for h in OBJECT_CLASS_HINTS)]


@dataclass(frozen=True)
class EvaluateOptions:
    """How to read the truth and what to score. ``labels``: how vector truth or a label
    raster maps to class names (see :class:`~geoseg.training.labels.LabelSpec`); ``min_area`` in
    pixels; ``object_classes``: names (None: building-like names)."""

    labels: LabelSpec = field(default_factory=LabelSpec)
    object_classes: tuple[str, ...] | None = None
    iou_threshold: float = 0.5
    min_area: float = 20.0


def read_prediction(path: str | os.PathLike) -> tuple[np.ndarray, PixelGrid, tuple[ClassInfo, ...]]:
    """A class raster written by geoseg: ids (H, W), grid, classes (from its tag, else
    numbered class_0.. from the largest value). Checked like vectorize's input (one integer
    band; see ``class_raster.open_class_raster``)."""
    from ..outputs.class_raster import open_class_raster

    raster = open_class_raster(path, allow_no_crs=True)
    with open_raster(raster.path) as ds:
        ids = read_band(ds, 1, raster.grid.window)
    if raster.nodata is not None and raster.nodata != NODATA_CLASS:
        ids = np.where(ids == raster.nodata, NODATA_CLASS, ids)
    ids = ids.astype(np.int64)
    classes = raster.classes
    if classes is None:
        top = int(ids[ids != NODATA_CLASS].max(initial=0))
        classes = make_classes([f"class_{i}" for i in range(top + 1)])
    return ids, raster.grid, classes


def evaluate_prediction(prediction: str | os.PathLike, truth: str | os.PathLike, *,
                        options: EvaluateOptions = EvaluateOptions()
                        ) -> dict:
    """Pixel metrics and, for object classes, object-level F1 of a class raster against
    vector or raster truth (reprojected / resampled onto the prediction's grid).

    Besides the metrics: ``predicted_pixels`` (not nodata in the prediction),
    ``scored_fraction`` (``pixels`` / ``predicted_pixels``, None when nothing is predicted),
    ``truth_nodata`` (the label-raster value read as no label, None for none or vectors) and
    ``warnings`` (one-line notes from reading the truth)."""
    ids, grid, classes = read_prediction(prediction)
    spec = options.labels
    read = read_labels(truth, grid, spec, classes)
    truth_ids = read.ids
    cm = confusion_matrix(truth_ids, ids, num_classes=len(classes))
    report: dict[str, Any] = {"prediction": str(prediction), "truth": str(truth),
                              "truth_nodata": read.nodata, "warnings": list(read.warnings),
                              **pixel_metrics(cm, classes)}
    predicted = int(np.count_nonzero(ids != NODATA_CLASS))
    report["predicted_pixels"] = predicted
    report["scored_fraction"] = _ratio(report["pixels"], predicted)
    report["scored_fraction_definition"] = SCORED_FRACTION_DEFINITION
    report["objects"] = {}
    min_area = options.min_area * grid.pixel_area
    known = (truth_ids != NODATA_CLASS) & (ids != NODATA_CLASS)
    scored = np.where(known, ids, NODATA_CLASS)
    labelled = None  # the labelled part of the grid, polygonized once for all classes
    for c in object_classes(classes, options.object_classes):
        pred_polys = raster_polygons(scored, grid, c.id)
        if is_vector(truth) and labelled is None:
            labelled = _labelled_area(truth_ids, grid)
        true_polys = _true_polygons(truth, truth_ids, grid, spec, classes, c.id, labelled)
        pred_polys = [g for g in pred_polys if g.area >= min_area]
        true_polys = [g for g in true_polys if g.area >= min_area]
        report["objects"][c.name] = match_objects(pred_polys, true_polys,
                                                  iou_threshold=options.iou_threshold)
        report["objects"][c.name]["min_area_pixels"] = options.min_area
    return report


def _labelled_area(truth_ids: np.ndarray, grid: PixelGrid) -> shapely.Geometry | None:
    """The part of the grid that holds truth labels, as one geometry (None when empty)."""
    from shapely.ops import unary_union

    parts = raster_polygons((truth_ids != NODATA_CLASS).astype(np.uint8), grid, 1)
    return unary_union(parts) if parts else None


def _true_polygons(truth: str | os.PathLike, truth_ids: np.ndarray, grid: PixelGrid,
                   spec: LabelSpec, classes: tuple[ClassInfo, ...], class_id: int,
                   labelled: shapely.Geometry | None) -> list:
    """True objects: the label polygons themselves (clipped to ``labelled``, the labelled
    part of the grid) for vector truth, connected regions for raster truth."""
    if not is_vector(truth):
        return raster_polygons(truth_ids, grid, class_id)
    import shapely

    frame = read_vector_labels(truth, layer=spec.layer)
    ids = polygon_classes(frame, spec, classes, source=Path(truth).name)
    geoms = frame.to_crs(grid.crs).geometry.values[ids == class_id]
    if labelled is None or len(geoms) == 0:
        return []
    clipped = shapely.intersection(np.asarray(geoms, dtype=object), labelled)
    return [g for g in clipped if not g.is_empty]


def format_table(report: dict) -> str:
    """The report as a plain-text table (per class, then overall and object scores)."""
    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.4f}"

    lines = [f"{'class':<16}{'IoU':>8}{'prec':>8}{'recall':>8}{'F1':>8}{'true px':>10}"
             f"{'pred px':>10}"]
    for name, m in report["classes"].items():
        lines.append(f"{name:<16}{f(m['iou']):>8}{f(m['precision']):>8}{f(m['recall']):>8}"
                     f"{f(m['f1']):>8}{m['true_pixels']:>10}{m['predicted_pixels']:>10}")
    lines.append(f"mIoU {f(report['miou'])}   pixel accuracy {f(report['pixel_accuracy'])}"
                 f"   pixels {report['pixels']}")
    if "predicted_pixels" in report:
        lines.append(scored_line(report["pixels"], report["predicted_pixels"]))
    for name, o in report.get("objects", {}).items():
        lines.append(f"objects {name}: F1 {f(o['f1'])}  precision {f(o['precision'])}  "
                     f"recall {f(o['recall'])}  (tp {o['tp']}, fp {o['fp']}, fn {o['fn']}, "
                     f"IoU >= {o['iou_threshold']})")
    return "\n".join(lines)


def scored_line(scored: int, predicted: int) -> str:
    """``scored 97.3% of the 386496 predicted pixels``, never rounding a shortfall away."""
    if predicted == 0:
        return "scored 0 pixels: the prediction has no pixel that is not nodata"
    share = 100 * scored / predicted
    text = f"{share:.1f}%"
    if scored < predicted and text == "100.0%":
        text = ">99.9%"
    elif 0 < scored and text == "0.0%":
        text = "<0.1%"
    line = f"scored {text} of the {predicted} predicted pixels"
    if scored < predicted:
        line += " (the rest have no truth label and are not counted)"
    return line


def write_report(report: dict, path: str | os.PathLike) -> None:
    """The report as JSON (written via a temporary name)."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
