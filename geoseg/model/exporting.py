"""``geoseg model export``: a bundle's network as a portable file other tools run, with
the bundle's normalization and the softmax in the graph, and a STAC MLM item beside it.

The exported program takes raw band values (float32, the bundle's band order) and returns
class probabilities (N, K, H, W): ``softmax(network(value * scale / std - mean / std))``,
the same float32 operations prediction runs. An ``.onnx`` carries two sets of metadata: the
bundle's own (key ``geoseg``: ``geoseg model import`` restores every field from it) and the
keys QGIS Deepness reads (model_type, class_names, resolution in cm/px, tiles_size,
tiles_overlap in percent, standardization_mean/std). Deepness divides inputs by 255 and then
standardizes; a mean of 0 and a std of 1/255 hand the graph the raw values it expects.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..atomic import replacing
from ..errors import ConfigError
from .bundle import ModelBundle
from .meta import BundleMeta

FORMATS = ("onnx", "pt2")


class Exported(nn.Module):
    """The network between the bundle's normalization and (for logits) the softmax."""

    gain: torch.Tensor
    offset: torch.Tensor

    def __init__(self, network: nn.Module, meta: BundleMeta) -> None:
        super().__init__()
        self.network = network
        scale, mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                            for v in (meta.scale, meta.mean, meta.std))
        self.register_buffer("gain", scale / std)
        self.register_buffer("offset", mean / std)
        self.softmax = meta.output == "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x * self.gain - self.offset)
        return torch.softmax(out, dim=1) if self.softmax else out


def exported_meta(meta: BundleMeta, kind: str) -> BundleMeta:
    """The metadata of the exported program: raw values in (scale 1, mean 0, std 1: the
    graph normalizes), probabilities out."""
    n = meta.in_channels
    # nodata pixels: the raw value the graph's normalization maps to 0, as before export
    fill = meta.nodata_value or tuple(m / s for m, s in zip(meta.mean, meta.scale,
                                                             strict=True))
    return replace(meta, scale=(1.0,) * n, mean=(0.0,) * n, std=(1.0,) * n, network=kind,
                   nodata_value=fill,
                   output="probabilities", encoder="-" if meta.network != "smp"
                   else meta.encoder)


def deepness_metadata(meta: BundleMeta) -> dict[str, str]:
    """The ONNX metadata QGIS Deepness reads (values as JSON text)."""
    n = meta.in_channels
    props = {"model_type": "Segmentor",
             "class_names": {str(c.id): c.name for c in meta.classes},
             "tiles_size": meta.tile_size,
             "tiles_overlap": int(round(100 * meta.overlap / meta.tile_size)),
             "standardization_mean": [0.0] * n,
             "standardization_std": [1 / 255] * n}
    if meta.gsd:
        props["resolution"] = round(meta.gsd * 100, 4)  # centimetres per pixel
    return {k: json.dumps(v) for k, v in props.items()}


def export_bundle(bundle: ModelBundle, *, fmt: str, out_dir: str | os.PathLike,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``OUT/<name>.<fmt>`` and its STAC MLM item ``OUT/<name>.json`` (each under a
    temporary name, then renamed); returns both paths. ``bundle``: loaded with torch (an
    smp network, a TorchScript module or a torch.export program)."""
    from .mlm import mlm_item

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    meta = bundle.meta
    out = Path(out_dir)
    name = meta.name
    target, item_path = out / f"{name}.{fmt}", out / f"{name}.json"
    for existing in (target, item_path):
        if existing.exists() and not overwrite:
            raise ConfigError(f"{existing} exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    wrapper = Exported(bundle.network.to("cpu"), meta).eval()
    new_meta = exported_meta(meta, fmt)
    if fmt == "onnx":
        data = _onnx_with_metadata(wrapper, meta, new_meta)
        with replacing(target) as tmp:
            Path(tmp).write_bytes(data)
    else:
        program = _export_program(wrapper, meta)
        with replacing(target, suffix=".pt2") as tmp:
            torch.export.save(program, str(tmp), extra_files={"geoseg": new_meta.to_json()})
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    item = mlm_item(new_meta, kind=fmt, href=f"./{target.name}",
                    framework_version=torch.__version__.split("+")[0], created=created)
    with replacing(item_path) as tmp:
        Path(tmp).write_text(json.dumps(item, indent=2) + "\n")
    return target, item_path


def _onnx_with_metadata(wrapper: nn.Module, meta: BundleMeta, new_meta: BundleMeta) -> bytes:
    import onnx

    from .onnx_graphs import to_onnx

    graph = to_onnx(wrapper, in_channels=meta.in_channels, size=meta.tile_size,
                    dynamic=not meta.fixed_tile and meta.fixed_batch is None)
    model = onnx.load_model_from_string(graph)
    props = {"geoseg": new_meta.to_json(), **deepness_metadata(meta)}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "geoseg"
    return model.SerializeToString()


def _export_program(wrapper: nn.Module, meta: BundleMeta) -> torch.export.ExportedProgram:
    example = torch.zeros(2, meta.in_channels, meta.tile_size, meta.tile_size)
    dynamic = not meta.fixed_tile and meta.fixed_batch is None
    dims = ({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
             3: torch.export.Dim.DYNAMIC},) if dynamic else None
    try:
        return torch.export.export(wrapper, (example,), dynamic_shapes=dims)
    except Exception as exc:  # noqa: BLE001 - torch.export's errors are many
        raise ConfigError(f"torch.export cannot export the network ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]})") from exc
