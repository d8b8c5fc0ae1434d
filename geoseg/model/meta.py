"""A bundle's metadata: what prediction needs besides the weights, read from the safetensors
header without torch (the client of a batch plans scenes from it and never imports torch)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..classes import NODATA_CLASS, ClassInfo
from ..errors import BundleError, InputNotFoundError
from .tta import check_tta

FORMAT = "geoseg-bundle/1"
META_KEY = "geoseg"
OUTPUTS = ("logits", "probabilities")
NETWORK_TENSOR = "geoseg.network"
"""The tensor that holds an imported program's file (uint8 bytes) in a bundle."""


@dataclass(frozen=True)
class BundleMeta:
    """Everything prediction needs besides the weights. Sizes in pixels."""

    arch: str
    encoder: str
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    scale: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tile_size: int = 256
    overlap: int = 64
    tta: str = "none"                # default test-time augmentation (see TTA)
    output_stride: int = 32
    receptive_field: int = 0
    arch_kwargs: dict = field(default_factory=dict)
    nodata_class: int = NODATA_CLASS
    name: str = "model"
    provenance: dict = field(default_factory=dict)
    gsd: float | None = None
    """Ground sample distance the model was trained at, metres per pixel (None: unknown, a
    bundle from before geoseg recorded it)."""
    input_dtype: str | None = None
    """Pixel type of the training scenes (None: unknown)."""
    input_range: tuple[tuple[float, float], ...] | None = None
    """Per band (low, high) raw values seen in training (None: unknown; then a bundle whose
    scale is 1/255 is taken to expect 0-255)."""
    stretch: tuple[float, float] | None = None
    """(LOW, HIGH) percentiles: the model was trained on scenes whose bands were each mapped
    from their LOW-th..HIGH-th percentile onto ``input_range``, and prediction maps every
    scene so (as ``--stretch LOW,HIGH`` would). None: scenes are read as they are."""
    network: str = "smp"
    """The network's kind (:data:`geoseg.model.runtimes.NETWORK_KINDS`): smp weights, or a
    program imported with ``geoseg model import`` (its file's bytes are in the bundle)."""
    output: str = "logits"
    """What the network returns per class: ``logits`` (softmax follows) or
    ``probabilities`` (used as they are)."""
    fixed_batch: int | None = None
    """The only batch size the network takes (an exported program with a static batch);
    None: any."""
    fixed_tile: bool = False
    """The network takes ``tile_size`` tiles only (a static input shape)."""
    nodata_value: tuple[float, ...] | None = None
    """Per band, the raw value that nodata pixels are given before the network sees them;
    None: the value the normalization maps to 0 (the band mean: no signal). An exported
    program that normalizes inside its graph keeps the band means here."""

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    def to_json(self) -> str:
        d = asdict(self)
        d["format"] = FORMAT
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BundleMeta":
        d = json.loads(text)
        if d.pop("format", None) != FORMAT:
            raise BundleError(f"metadata format is not {FORMAT}")
        d["classes"] = tuple(ClassInfo(**c) for c in d["classes"])
        for key in ("bands", "scale", "mean", "std"):
            d[key] = tuple(d[key])
        if d.get("input_range") is not None:
            d["input_range"] = tuple((float(lo), float(hi)) for lo, hi in d["input_range"])
        if d.get("nodata_value") is not None:
            d["nodata_value"] = tuple(float(v) for v in d["nodata_value"])
        if d.get("stretch") is not None:
            d["stretch"] = (float(d["stretch"][0]), float(d["stretch"][1]))
        check_tta(d.get("tta", "none"))  # a ConfigError is a ValueError: read_meta names the file
        from .runtimes import check_kind

        check_kind(d.get("network", "smp"))
        if d.get("output", "logits") not in OUTPUTS:
            raise BundleError(f"output {d['output']!r} is none of {', '.join(OUTPUTS)}")
        return cls(**d)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(path: str | os.PathLike) -> BundleMeta:
    """The metadata of a bundle file without building its network."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: model file not found; create one with "
                                 "`geoseg model create` or train one with `geoseg train`")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise BundleError(f"{path}: not a geoseg model bundle (not a safetensors file: "
                          f"{str(exc).splitlines()[0]}); create one with `geoseg model "
                          "create`") from exc
    if META_KEY not in header:
        raise BundleError(f"{path}: a safetensors file without geoseg metadata; wrap its "
                          "weights with `geoseg model create --weights`")
    try:
        return BundleMeta.from_json(header[META_KEY])
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: geoseg metadata is unreadable ({exc})") from exc


def with_provenance(meta: BundleMeta, **extra: Any) -> BundleMeta:
    """A copy of ``meta`` with provenance entries added or replaced."""
    return replace(meta, provenance={**meta.provenance, **extra})
