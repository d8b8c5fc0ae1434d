"""``geoseg model import``: a foreign model file (ONNX graph, TorchScript module,
torch.export ``.pt2`` program) wrapped in a bundle with geoseg's metadata contract.

The metadata comes from, in rising priority: the ONNX file's own metadata as QGIS Deepness
writes it (``class_names``, ``resolution`` in cm/px, ``tiles_size``, ``tiles_overlap`` in
percent, ``standardization_mean``/``_std`` after dividing by 255), the full bundle metadata
geoseg's own ONNX export carries (key ``geoseg``), a STAC MLM item (``--mlm``), and flags.
Whatever is still missing is named in one line with the flag that supplies it.

The file is then run on one random tile (:func:`inspect_program`): the output must be
(N, K, H, W) with K the classes and H x W the tile; logits or probabilities as declared
(detected when not); the batch and tile shapes it accepts, its output stride and its
receptive field (the extent of output pixels a change of one input pixel reaches) are
measured, with the runtime that will run it, on inputs in the range the network expects.

The output stride is the smallest step of tile sizes the network accepts. A traced graph
often accepts any size (smp checks sizes in eager code only), and then 1 is recorded
unless ``--output-stride`` states it (32 for smp's encoders): tiles then start at any
pixel, not at multiples of the network's downsampling. A static tile size records 1 (tiles
are always that size). geoseg's own exports carry the bundle's stride and receptive field,
so a round trip keeps its tiling exactly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import ClassInfo, make_classes
from ..errors import BundleError, ConfigError
from .meta import BundleMeta

STRIDES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Shape:
    """What a program accepts and returns, measured on a tile."""

    channels: int
    fixed_batch: int | None
    fixed_tile: bool
    output: str
    output_stride: int
    receptive_field: int


class _Program:
    """A model file, runnable on numpy arrays (N, C, H, W) float32 on the CPU."""

    def __init__(self, kind: str, data: bytes) -> None:
        self.kind = kind
        self.static: list[int | None] = [None, None, None, None]
        if kind == "onnx":
            from .onnx_graphs import ort_session

            self.session = ort_session(data, device="cpu")
            dims = self.session.get_inputs()[0].shape
            if len(dims) != 4:
                raise BundleError(f"the ONNX graph's input has rank {len(dims)}; geoseg "
                                  "needs (batch, channels, height, width)")
            self.static = [d if isinstance(d, int) and d > 0 else None for d in dims]
        else:
            from .programs import load_torch_program

            self.module = load_torch_program(kind, data, device="cpu")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "onnx":
            out = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
            return np.asarray(out)
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(x))
        if isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().numpy()

    def runs(self, x: np.ndarray) -> np.ndarray | None:
        """The output, or None when the program refuses the input's shape."""
        try:
            return self(x)
        except Exception:  # noqa: BLE001 - any runtime's shape error
            return None


Sampler = Callable[[tuple[int, int, int, int], np.random.Generator], np.ndarray]


def inspect_program(program: _Program, *, channels: int | None, classes: int,
                    tile_size: int, output: str | None, sample: Sampler) -> Shape:
    """Run the program on tiles drawn by ``sample`` (raw values in the range the network
    expects, so its outputs are not saturated) and measure what :class:`Shape` holds (see
    the module's docstring); a wrong shape or output is one BundleError line."""
    static_c = program.static[1]
    if static_c is not None and channels is not None and static_c != channels:
        raise BundleError(f"the network takes {static_c} channels; the metadata names "
                          f"{channels} bands: give --bands with {static_c} names")
    c = static_c or channels
    if c is None:
        raise ConfigError("the network's channel count is dynamic and no bands were "
                          "given: give --bands (e.g. red,green,blue) or --mlm ITEM.json")
    size = program.static[2] or tile_size
    batch = program.static[0] or 1
    rng = np.random.default_rng(0)
    x = sample((batch, c, size, size), rng)
    y = program.runs(x)
    if y is None:
        raise BundleError(f"the network does not run on a ({batch}, {c}, {size}, {size}) "
                          f"tile: its input needs other channels or another tile size "
                          f"(give --bands with its channel count, --tile-size)")
    if y.ndim != 4:
        raise BundleError(f"the network's output has shape {tuple(y.shape)} (rank "
                          f"{y.ndim}); geoseg needs (batch, classes, height, width)")
    if y.shape[1] != classes:
        raise BundleError(f"the network outputs {y.shape[1]} channels; the metadata names "
                          f"{classes} classes: give --classes with {y.shape[1]} names")
    if y.shape[2:] != (size, size):
        raise BundleError(f"the network turns a {size} x {size} tile into {y.shape[2]} x "
                          f"{y.shape[3]} outputs; geoseg needs one output per input pixel")
    if not np.isfinite(y).all():
        raise BundleError("the network's output on a random tile is not finite (NaN or "
                          "infinity)")
    output = _output_kind(y, output, classes)
    fixed_batch = program.static[0]
    if fixed_batch is None and program.kind != "onnx":
        fixed_batch = None if program.runs(np.concatenate([x, x])) is not None else batch
    step = None if program.static[2] is not None else accepted_step(program, x, sample)
    fixed_tile = step is None
    return Shape(c, fixed_batch, fixed_tile, output, step or 1, receptive_field(program, x))


def _output_kind(y: np.ndarray, declared: str | None, classes: int) -> str:
    sums = y.sum(axis=1)
    probabilities = bool(y.min() >= 0 and y.max() <= 1 and np.abs(sums - 1).max() < 1e-3)
    if declared is None:
        return "probabilities" if probabilities else "logits"
    if declared == "probabilities" and not probabilities:
        raise BundleError("the output was declared probabilities, but on a random tile "
                          "they do not lie in 0-1 and sum to 1 per pixel: give --output "
                          "logits")
    if declared == "logits" and probabilities and classes > 1:
        raise BundleError("the output was declared logits, but on a random tile every "
                          "pixel's values lie in 0-1 and sum to 1 (softmax is in the "
                          "graph): give --output probabilities")
    return declared


def accepted_step(program: _Program, x: np.ndarray, sample: Sampler) -> int | None:
    """The smallest step (1, 2, 4, ... 64 px) by which the tile may grow and still give one
    output per pixel; None when none does. A network traced to ONNX or torch.export often
    accepts any size (smp checks sizes in eager code only), so 1 says little."""
    batch, c, size, _ = x.shape
    rng = np.random.default_rng(1)
    for step in STRIDES:
        y = program.runs(sample((batch, c, size + step, size + step), rng))
        if y is not None and y.ndim == 4 and y.shape[2:] == (size + step, size + step):
            return step
    return None


def receptive_field(program: _Program, x: np.ndarray) -> int:
    """The extent in pixels of the outputs that change at all when the centre pixel of
    ``x``'s first tile changes (for a translation-equivariant network, its receptive
    field), capped at the tile."""
    base = program(x)
    centre = x.shape[2] // 2
    poked = x.copy()
    spread = float(x[0].std()) or 1.0
    poked[0, :, centre, centre] += 2 * spread
    changed = (program(poked)[0] != base[0]).any(axis=0)
    rows, cols = np.nonzero(changed)
    if len(rows) == 0:
        return 1
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def sampler(fields: dict[str, Any]) -> Sampler:
    """Raw input values like the network's: uniform over ``input_range`` per band when it
    is known, else the values the normalization maps onto a standard normal."""
    ranges = fields.get("input_range")
    norm = {k: fields.get(k) for k in ("scale", "mean", "std")}

    def per_band(values: Any, c: int, default: float) -> np.ndarray:
        v = np.asarray(values if values else [default], np.float64)
        return np.resize(v, c).reshape(1, c, 1, 1)

    def draw(shape: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
        c = shape[1]
        if ranges:
            lo = per_band([r[0] for r in ranges], c, 0.0)
            hi = per_band([r[1] for r in ranges], c, 1.0)
            x = lo + (hi - lo) * rng.random(shape)
        else:
            z = rng.standard_normal(shape)
            x = (z * per_band(norm["std"], c, 1.0) + per_band(norm["mean"], c, 0.0)) \
                / per_band(norm["scale"], c, 1.0)
        return x.astype(np.float32)

    return draw


def deepness_fields(props: dict[str, str]) -> dict[str, Any]:
    """Bundle fields from an ONNX file's metadata as QGIS Deepness writes it (values are
    JSON text): inputs divided by 255, then standardized."""
    def value(key: str) -> Any:
        try:
            return json.loads(props[key])
        except (KeyError, ValueError):
            return props.get(key)

    out: dict[str, Any] = {}
    model_type = value("model_type")
    if model_type is not None and str(model_type).lower() != "segmentor":
        raise BundleError(f"the ONNX file's Deepness metadata says model_type "
                          f"{model_type!r}; geoseg imports segmentation models (Segmentor)")
    names = value("class_names")
    if isinstance(names, dict) and names:
        ordered = sorted(names.items(), key=lambda kv: int(kv[0]))
        if [int(k) for k, _ in ordered] != list(range(len(ordered))):
            raise BundleError("the ONNX file's class_names must number the classes 0..K-1")
        out["classes"] = make_classes([str(v) for _, v in ordered])
    elif isinstance(names, list) and names:
        out["classes"] = make_classes([str(v) for v in names])
    resolution = value("resolution")
    if isinstance(resolution, (int, float)) and resolution > 0:
        out["gsd"] = float(resolution) / 100.0  # Deepness: centimetres per pixel
    size = value("tiles_size")
    if isinstance(size, (int, float)) and size > 0:
        out["tile_size"] = int(size)
    overlap = value("tiles_overlap")
    if isinstance(overlap, (int, float)) and overlap >= 0 and "tile_size" in out:
        out["overlap"] = int(round(out["tile_size"] * float(overlap) / 100.0))
    mean, std = value("standardization_mean"), value("standardization_std")
    if isinstance(mean, list) or isinstance(std, list) or "class_names" in props:
        out["deepness_norm"] = (mean if isinstance(mean, list) else None,
                                std if isinstance(std, list) else None)
    if model_type is not None or "class_names" in props:
        out["output"] = "probabilities"  # Deepness thresholds the outputs as they are
    return out


OWN_FIELDS = ("name", "arch", "bands", "classes", "scale", "mean", "std", "tile_size",
              "overlap", "gsd", "input_dtype", "input_range", "stretch", "tta", "output",
              "nodata_class", "output_stride", "receptive_field", "nodata_value")
"""The fields an export of geoseg's carries over (its input and output shapes are
checked again)."""


def own_fields(text: str) -> dict[str, Any]:
    meta = BundleMeta.from_json(text)
    fields = {k: getattr(meta, k) for k in OWN_FIELDS}
    fields["provenance"] = meta.provenance
    return fields


def pt2_fields(data: bytes) -> dict[str, Any]:
    """geoseg's own metadata from a ``.pt2`` that ``geoseg model export`` wrote (an extra
    file of the archive), or nothing."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith("/extra/geoseg.json") or name.endswith("extra/geoseg"):
                return own_fields(archive.read(name).decode())
    return {}


def onnx_fields(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields of geoseg's own metadata, Deepness fields) from an ONNX file's metadata."""
    import onnx

    model = onnx.load_model_from_string(data)
    props = {p.key: p.value for p in model.metadata_props}
    own = own_fields(props["geoseg"]) if "geoseg" in props else {}
    return own, deepness_fields(props)


def _normalization(fields: dict[str, Any], channels: int) -> dict[str, Any]:
    """scale/mean/std per band from the fields (Deepness' form turned into geoseg's)."""
    if "deepness_norm" in fields and "scale" not in fields:
        mean, std = fields["deepness_norm"]
        fields["scale"] = (1 / 255,) * channels
        fields["mean"] = tuple(float(v) for v in (mean or [0.0] * channels))
        fields["std"] = tuple(float(v) for v in (std or [1.0] * channels))
    fields.pop("deepness_norm", None)
    return fields


def import_program(path: str | os.PathLike, *, mlm: str | os.PathLike | None = None,
                   flags: dict[str, Any] | None = None) -> tuple[BundleMeta, bytes]:
    """The metadata and the file's bytes of the bundle that wraps the model at ``path``
    (see the module's docstring). ``flags``: bundle fields given on the command line
    (``classes`` as names, ``bands``, ``scale``/``mean``/``std``, ``tile_size``,
    ``overlap``, ``gsd``, ``output``, ``name``); None values are not given."""
    import datetime as _dt

    import torch

    from .. import __version__
    from .programs import sniff_kind

    path = Path(path)
    kind = sniff_kind(path)
    data = path.read_bytes()
    fields: dict[str, Any] = {}
    if kind == "onnx":
        own, deepness = onnx_fields(data)
        fields.update(deepness)
        fields.update(own)
    elif kind == "pt2":
        fields.update(pt2_fields(data))
    if mlm is not None:
        from .mlm import read_mlm

        fields.update(read_mlm(mlm, kind=kind))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if "classes" in given:
        given["classes"] = make_classes(list(given["classes"]))
    fields.update(given)
    program = _Program(kind, data)
    classes: tuple[ClassInfo, ...] | None = fields.get("classes")
    if not classes:
        raise ConfigError(f"{path}: the classes are neither in the file nor given: give "
                          "--classes (e.g. background,building) or --mlm ITEM.json")
    if not any(k in fields for k in ("scale", "mean", "std", "deepness_norm")):
        raise ConfigError(f"{path}: the input scaling is neither in the file nor given: "
                          "give --scale (and --mean, --std; e.g. --scale 1/255 --mean "
                          "0.485,0.456,0.406 --std 0.229,0.224,0.225) or --mlm ITEM.json")
    bands = fields.get("bands")
    channels = len(bands) if bands else fields.get("channels") or program.static[1]
    fields = _normalization(fields, channels or 1)
    tile = int(fields.get("tile_size") or program.static[2] or 256)
    shape = inspect_program(program, channels=channels, classes=len(classes),
                            tile_size=tile, output=fields.get("output"),
                            sample=sampler(fields))
    if shape.fixed_tile:
        tile = program.static[2] or tile
    stride = int(fields.get("output_stride") or shape.output_stride)
    field = int(fields.get("receptive_field") or shape.receptive_field)
    bands = tuple(bands) if bands else tuple(f"band{i}" for i in range(1, shape.channels + 1))
    per_band = {}
    for key, default in (("scale", 1.0), ("mean", 0.0), ("std", 1.0)):
        values = tuple(float(v) for v in fields.get(key) or (default,))
        if len(values) == 1:
            values = values * shape.channels
        if len(values) != shape.channels:
            raise ConfigError(f"--{key} has {len(values)} values; the network takes "
                              f"{shape.channels} bands")
        per_band[key] = values
    overlap = int(fields.get("overlap", min(64, tile // 4)))
    from ..tiling import check_tiling

    check_tiling(size=tile, overlap=overlap, multiple=stride)
    provenance = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "geoseg_version": __version__, "torch_version": torch.__version__,
                  "imported_from": path.name, "trained": True,
                  **({"imported_provenance": fields["provenance"]}
                     if fields.get("provenance") else {})}
    meta = BundleMeta(
        arch=str(fields.get("arch") or path.stem), encoder="-", bands=bands,
        classes=classes, scale=per_band["scale"], mean=per_band["mean"],
        std=per_band["std"], tile_size=tile, overlap=overlap,
        tta=fields.get("tta", "none"), output_stride=stride,
        receptive_field=field, name=str(fields.get("name") or path.stem),
        provenance=provenance, gsd=fields.get("gsd"), input_dtype=fields.get("input_dtype"),
        input_range=fields.get("input_range"), stretch=fields.get("stretch"), network=kind,
        nodata_value=fields.get("nodata_value"),
        output=shape.output, fixed_batch=shape.fixed_batch, fixed_tile=shape.fixed_tile)
    if meta.gsd is not None and not (meta.gsd > 0 and math.isfinite(meta.gsd)):
        raise ConfigError(f"gsd {meta.gsd!r} must be a positive number of metres per pixel")
    return meta, data
