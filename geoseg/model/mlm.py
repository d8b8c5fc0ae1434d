"""STAC Machine Learning Model items (the MLM extension, v1.5): the metadata of a model
file other tools write and read.

:func:`read_mlm` turns an item's first input and output into a bundle's metadata fields
(bands, value scaling as scale/mean/std, tile size, classes); :func:`mlm_item` describes an
exported model. Plain JSON both ways, no torch.

Value scaling maps onto geoseg's ``(value * scale - mean) / std`` per band: ``z-score``
(mean, stddev), ``min-max`` ((value - minimum) / (maximum - minimum)), ``scale`` (value /
value) and ``offset`` (value - value); one object for every band or one per band. Others
(clips, processing expressions) are refused in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..classes import ClassInfo
from ..errors import BundleError, InputNotFoundError

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.5.0/schema.json"
STAC_VERSION = "1.1.0"
ARTIFACT_TYPES = {"onnx": "onnx", "pt2": "torch.export.save", "torchscript": "torch.jit.save"}
"""``mlm:artifact_type`` of each network kind's file."""
MEDIA_TYPES = {"onnx": "application/octet-stream; application=onnx",
               "pt2": "application/octet-stream; application=pytorch",
               "torchscript": "application/octet-stream; application=pytorch"}


def read_mlm(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """The bundle fields an MLM item states: ``bands``, ``scale``/``mean``/``std``,
    ``tile_size``, ``classes``, ``name``, ``arch``; what it does not state is absent. An
    item whose model asset's artifact type is not ``kind``'s is refused."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: MLM item not found")
    try:
        item = json.loads(path.read_text())
        props = item["properties"]
        first_in, first_out = props["mlm:input"][0], props["mlm:output"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BundleError(f"{path}: not a STAC item with the MLM extension (needs properties "
                          f"mlm:input and mlm:output; {type(exc).__name__}: {exc})") from exc
    out: dict[str, Any] = {}
    if props.get("mlm:name"):
        out["name"] = str(props["mlm:name"])
    if props.get("mlm:architecture"):
        out["arch"] = str(props["mlm:architecture"])
    bands = [b["name"] if isinstance(b, dict) else str(b) for b in first_in.get("bands") or []]
    if bands:
        out["bands"] = tuple(bands)
    shape = (first_in.get("input") or {}).get("shape") or []
    order = (first_in.get("input") or {}).get("dim_order") or []
    dims = dict(zip(order, shape, strict=False))
    if isinstance(dims.get("height"), int) and dims["height"] > 0:
        out["tile_size"] = int(dims["height"])
    channels = dims.get("bands", dims.get("channel"))
    if isinstance(channels, int) and channels > 0 and not bands:
        out["channels"] = int(channels)
    scaling = first_in.get("value_scaling")
    if "value_scaling" in first_in and scaling is None:  # stated: no scaling (raw values)
        count = len(bands) or out.get("channels") or 1
        out.update({"scale": (1.0,) * count, "mean": (0.0,) * count, "std": (1.0,) * count})
    elif scaling:
        count = len(bands) or out.get("channels") or len(scaling)
        out.update(_scaling(scaling, count, path))
    classes = first_out.get("classification:classes") or []
    if classes:
        out["classes"] = _classes(classes, path)
    if kind is not None:
        for asset in (item.get("assets") or {}).values():
            if "mlm:model" in (asset.get("roles") or []):
                artifact = asset.get("mlm:artifact_type")
                if artifact and artifact != ARTIFACT_TYPES.get(kind) and \
                        not (kind == "onnx" and "onnx" in str(artifact).lower()):
                    raise BundleError(f"{path}: its model asset is a {artifact!r} artifact; "
                                      f"the file given is a {kind} file ("
                                      f"{ARTIFACT_TYPES[kind]}): give the item of that file")
    return out


def _scaling(scaling: list, count: int, path: Path) -> dict[str, tuple[float, ...]]:
    if len(scaling) not in (1, count):
        raise BundleError(f"{path}: value_scaling has {len(scaling)} entries; MLM gives one "
                          f"for every band or one per band ({count})")
    per_band = scaling * count if len(scaling) == 1 else scaling
    scale, mean, std = [], [], []
    for entry in per_band:
        kind = entry.get("type")
        if kind == "z-score":
            s, m, d = 1.0, float(entry["mean"]), float(entry["stddev"])
        elif kind == "min-max":
            span = float(entry["maximum"]) - float(entry["minimum"])
            s, m, d = 1.0 / span, float(entry["minimum"]) / span, 1.0
        elif kind == "scale":
            s, m, d = 1.0 / float(entry["value"]), 0.0, 1.0
        elif kind == "offset":
            s, m, d = 1.0, float(entry["value"]), 1.0
        else:
            raise BundleError(f"{path}: value_scaling type {kind!r} is not one geoseg "
                              "applies (z-score, min-max, scale, offset); give --scale, "
                              "--mean and --std instead")
        scale.append(s)
        mean.append(m)
        std.append(d)
    return {"scale": tuple(scale), "mean": tuple(mean), "std": tuple(std)}


def _classes(entries: list, path: Path) -> tuple[ClassInfo, ...]:
    from ..classes import make_classes

    ordered = sorted(entries, key=lambda c: int(c["value"]))
    if [int(c["value"]) for c in ordered] != list(range(len(ordered))):
        raise BundleError(f"{path}: classification classes must have the values 0..K-1 "
                          "of the network's output channels")
    names = [str(c.get("name") or c.get("description") or f"class{c['value']}")
             for c in ordered]
    colors = [c.get("color_hint") for c in ordered]
    if all(isinstance(c, str) and len(c.lstrip("#")) == 6 for c in colors):
        return make_classes(names, ["#" + c.lstrip("#").lower() for c in colors])
    return make_classes(names)


def mlm_item(meta: Any, *, kind: str, href: str, framework_version: str,
             created: str) -> dict:
    """A STAC Item (MLM v1.5) for an exported network: the bundle's bands and classes, an
    input of raw band values (the graph applies the bundle's normalization, so no value
    scaling is left to the reader) and an output of class probabilities."""
    size = meta.tile_size if meta.fixed_tile else -1
    batch = meta.fixed_batch or -1
    from .. import __version__

    return {
        "stac_version": STAC_VERSION,
        "stac_extensions": [MLM_SCHEMA],
        "type": "Feature",
        "id": meta.name,
        "geometry": None,
        "properties": {
            "datetime": created,
            "description": f"{meta.name}: semantic segmentation exported by geoseg "
                           f"{__version__}",
            "mlm:name": meta.name,
            "mlm:architecture": meta.arch if meta.encoder in ("", "-") else
            f"{meta.arch} ({meta.encoder})",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:framework": "PyTorch",
            "mlm:framework_version": framework_version,
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": False,
            "mlm:batch_size_suggestion": 8,
            "bands": [{"name": b} for b in meta.bands],  # STAC 1.1 common metadata
            "mlm:input": [{
                "name": "bands",
                "bands": list(meta.bands),
                "input": {"shape": [batch, meta.in_channels, size, size],
                          "dim_order": ["batch", "bands", "height", "width"],
                          "data_type": "float32"},
                "description": "Raw band values as float32, in this band order; the "
                               "graph normalizes them. Tiles of "
                               f"{meta.tile_size} px with {meta.overlap} px overlap.",
                "value_scaling": None,
                "resize_type": None,
            }],
            "mlm:output": [{
                "name": "classes",
                "tasks": ["semantic-segmentation"],
                "result": {"shape": [batch, len(meta.classes), size, size],
                           "dim_order": ["batch", "class", "height", "width"],
                           "data_type": "float32"},
                "description": "Probability of each class per pixel (softmax applied); "
                               "the class is the argmax.",
                "classification:classes": [
                    {"value": c.id, "name": c.name, "description": c.name,
                     "color_hint": c.color.lstrip("#").upper()} for c in meta.classes],
            }],
            **({"gsd": meta.gsd} if meta.gsd else {}),
        },
        "assets": {"model": {
            "href": href,
            "title": f"{meta.name} ({kind})",
            "type": MEDIA_TYPES[kind],
            "roles": ["mlm:model"],
            "mlm:artifact_type": ARTIFACT_TYPES[kind],
        }},
        "links": [],
    }
