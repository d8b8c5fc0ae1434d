"""Prediction's options: frozen and validated, loaded from YAML and overridden by the CLI.

``configs/predict.yaml`` holds the defaults; a user's ``--config FILE.yaml`` replaces any of
them and command-line options replace those. Unknown keys are refused with the valid ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from ..config import load_yaml
from ..errors import ConfigError
from ..model.devices import Capabilities, check_device, check_precision, device_kind
from ..model.runtimes import check_runtime
from ..model.tta import check_tta

RASTER_FORMATS = ("cog", "zarr")
"""The raster outputs' formats (``--raster-format``)."""

__all__ = ["PredictOptions", "load_predict_options", "options_from", "parse_bands"]

@dataclass(frozen=True)
class PredictOptions:
    """How to predict a scene. Sizes in pixels; ``None`` takes the model bundle's value."""

    tile_size: int | None = None
    overlap: int | None = None
    stitch: str = "blend"
    tta: str | None = None
    block_size: int = 1024
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    """auto, torch or onnxruntime (geoseg.model.runtimes); auto: decided where the model
    runs."""
    threads: int | None = None
    compile: bool = False
    bands: tuple[int, ...] | None = None
    stretch: tuple[float, float] | None = None
    """Percentiles (low, high) of each band mapped onto the model's input range."""
    input_range: tuple[float, float] | None = None
    """The scene's raw value range (low, high), mapped onto the model's input range."""
    resample: str = "auto"
    """auto: scenes at another pixel size than the model's are predicted at the model's;
    off: at their own pixel size (see geoseg.inputs.fit)."""
    probabilities: bool = False
    vectorize: bool = False
    preview: bool = True
    """preview.png beside the outputs: the scene, its classes and a legend
    (geoseg.outputs.preview)."""
    vector_format: str = "gpkg"
    """The polygons' file format with ``vectorize``: gpkg, fgb, parquet, geojson or shp."""
    creation_options: tuple[str, ...] = ()
    """GDAL COG creation options of the output rasters, ``NAME=VALUE`` (``--co``)."""
    raster_format: str = "cog"
    """cog: classes.tif (+ probabilities.tif); zarr: one Zarr v3 group, prediction.zarr
    (geoseg.outputs.zarr_rasters)."""
    overwrite: bool = False
    allow_no_crs: bool = False

    def __post_init__(self) -> None:
        from .stitch import check_stitch

        check_stitch(self.stitch)
        if self.tta is not None:
            check_tta(self.tta)
        for name, minimum in (("block_size", 1), ("batch_size", 1), ("threads", 1),
                              ("tile_size", 1), ("overlap", 0)):
            value = getattr(self, name)
            if value is None and name in ("threads", "tile_size", "overlap"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} {value!r} must be an integer >= {minimum}")
        for name in ("probabilities", "vectorize", "preview", "overwrite", "allow_no_crs",
                     "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} {getattr(self, name)!r} must be true or false")
        check_device(self.device)
        check_precision(self.precision)
        check_runtime(self.runtime)
        from ..inputs.fit import RESAMPLE_MODES
        from ..model.radiometry import check_stretch, parse_pair

        if self.stretch is not None:
            object.__setattr__(self, "stretch", check_stretch(self.stretch))
        if self.input_range is not None:
            object.__setattr__(self, "input_range",
                               parse_pair(self.input_range, what="input range"))
        if self.stretch is not None and self.input_range is not None:
            raise ConfigError("give --stretch or --input-range, not both")
        from ..outputs.rasters import check_creation_options
        from ..vector.files import format_suffix

        object.__setattr__(self, "creation_options",
                           check_creation_options(self.creation_options))

        object.__setattr__(self, "vector_format", format_suffix(self.vector_format)[1:])
        fmt = str(self.raster_format).lower()
        if fmt not in RASTER_FORMATS:
            raise ConfigError(f"unknown raster format {self.raster_format!r}; valid: "
                              f"{', '.join(RASTER_FORMATS)}")
        object.__setattr__(self, "raster_format", fmt)
        if fmt == "zarr" and self.creation_options:
            raise ConfigError("--co sets GDAL COG creation options; it does not apply to "
                              "--raster-format zarr")
        if self.resample not in RESAMPLE_MODES:
            raise ConfigError(f"unknown resample mode {self.resample!r}; valid: "
                              f"{', '.join(RESAMPLE_MODES)}")

    def resolved(self, device: str | None = None,
                 capabilities: Capabilities | None = None, *,
                 network: str = "smp") -> PredictOptions:
        """These options with ``auto`` decided where the model runs: the device (``device``
        when the caller chose it already), the runtime for that device and the model's
        ``network`` kind, and the precision, from ``capabilities`` (what the model's
        process reported; default: this process), so a batch's plans, manifests and tags
        name what really ran. ONNX Runtime runs float32."""
        from ..model.devices import probe_capabilities, resolve_device, resolve_precision
        from ..model.runtimes import resolve_runtime

        if capabilities is None and "auto" in (device or self.device, self.precision,
                                               self.runtime):
            capabilities = probe_capabilities()  # once, for device, runtime and precision
        device = device or resolve_device(self.device, capabilities)
        precision = resolve_precision(self.precision, device, capabilities)
        runtime = resolve_runtime(self.runtime, kind=network, device=device,
                                  precision=self.precision, auto_precision=precision,
                                  compile=self.compile,
                                  onnxruntime=capabilities.onnxruntime if capabilities
                                  else None)
        return replace(self, device=device, runtime=runtime,
                       precision="float32" if runtime == "onnxruntime" else precision)

    def identity(self) -> dict:
        """The options that change output bytes (for manifests and resume checks)."""
        return {"tile_size": self.tile_size, "overlap": self.overlap, "stitch": self.stitch,
                "tta": self.tta,
                "device": device_kind(self.device), "precision": self.precision,
                "runtime": self.runtime,
                "compile": self.compile,
                "bands": list(self.bands) if self.bands else None,
                "stretch": list(self.stretch) if self.stretch else None,
                "input_range": list(self.input_range) if self.input_range else None,
                "resample": self.resample,
                "probabilities": self.probabilities, "vectorize": self.vectorize,
                "vector_format": self.vector_format if self.vectorize else None,
                "preview": self.preview,
                "creation_options": list(self.creation_options),
                "raster_format": self.raster_format}


def parse_bands(value: str | Iterable[int | str] | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` or ``[3, 2, 1]`` -> ``(3, 2, 1)``; empty -> None."""
    if value in (None, "", ()):
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(int(str(b).strip()) for b in items)
    except ValueError as exc:
        raise ConfigError(f"bands {value!r} must be 1-based band numbers like 3,2,1") from exc


def options_from(mapping: dict, base: PredictOptions | None = None) -> PredictOptions:
    """Options from a dict (YAML or CLI), on top of ``base``; None values are skipped."""
    valid = {f.name for f in fields(PredictOptions)}
    unknown = sorted(set(mapping) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(valid))}")
    # an empty repeatable option (--co given no times) leaves the base's value
    changes = {k: v for k, v in mapping.items() if v is not None and v != ()}
    if "creation_options" in changes:
        changes["creation_options"] = tuple(changes["creation_options"])
    if "bands" in changes:
        changes["bands"] = parse_bands(changes["bands"])
    return replace(base or PredictOptions(), **changes)


def load_predict_options(path: str | os.PathLike) -> PredictOptions:
    """Options from a YAML file; a ``predict:`` section is used when present."""
    data = load_yaml(path)
    data = data.get("predict", data)
    try:
        return options_from(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
