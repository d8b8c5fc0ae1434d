"""The bundle file: one safetensors file with an smp network's weights and, as JSON in its
header, all prediction needs (architecture, bands, normalization, classes, tiling, receptive
field, provenance). Loading one executes no code (DESIGN.md promise 8)."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..atomic import replacing, shared_mode
from ..classes import ClassInfo
from ..errors import BundleError, ConfigError, InputNotFoundError
from .meta import META_KEY, BundleMeta, file_sha256, read_meta
from .tta import check_tta

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelBundle:
    """A network in eval mode with its metadata; ``sha256`` is the bundle file's hash.

    ``prepared``: the network is the inference form prediction runs
    (:func:`geoseg.model.optimize.for_inference`); ``fixed_batch``: every batch must have
    this many tiles (a compiled network, a program with a static batch), shorter ones are
    padded; ``runtime``: what runs ``network`` (an ONNX Runtime session behind
    :class:`~geoseg.model.onnx_graphs.OnnxNetwork` for ``onnxruntime``, which takes and
    gives numpy arrays). Building, loading and training a network import torch; a bundle
    on onnxruntime does not."""

    meta: BundleMeta
    network: nn.Module | Any
    sha256: str = ""
    device: str = "cpu"
    prepared: bool = False
    fixed_batch: int | None = None
    runtime: str = "torch"

    @property
    def xp(self) -> Any:
        """The array namespace prediction computes in around this network (see
        :mod:`geoseg.arrays`): numpy for onnxruntime, torch for torch."""
        from ..arrays import namespace

        return namespace(self.runtime)

    @property
    def array_device(self) -> str:
        """Where :attr:`xp`'s arrays live: the model's device for torch, host memory for
        numpy."""
        from ..arrays import array_device

        return array_device(self.xp, self.device)


def create_bundle(*, arch: str, encoder: str, classes: tuple[ClassInfo, ...],
                  bands: tuple[str, ...], scale: Sequence[float] | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  tile_size: int = 256, overlap: int = 64, tta: str = "none",
                  arch_kwargs: dict | None = None,
                  state_dict: dict | None = None, name: str = "model",
                  provenance: dict | None = None, seed: int = 0, gsd: float | None = None,
                  input_dtype: str | None = None,
                  input_range: Sequence[Sequence[float]] | None = None,
                  stretch: Sequence[float] | None = None) -> ModelBundle:
    """A bundle around a new network (seeded random weights) or a given smp state_dict.

    ``gsd`` (metres per pixel), ``input_dtype`` and ``input_range`` (per band, or one
    (low, high) for every band) describe the data it was trained on, ``stretch`` the
    percentiles each scene's bands were mapped from onto that range (see
    :mod:`geoseg.inputs.fit`)."""
    import torch

    from ..tiling import check_tiling
    from .networks import build_network, receptive_field
    from .radiometry import check_input_range, check_stretch, expected_range

    n = len(bands)
    per_band = lambda v, default: tuple(float(x) for x in (v if v is not None else [default] * n))  # noqa: E731
    scale, mean, std = per_band(scale, 1 / 255), per_band(mean, 0.5), per_band(std, 0.25)
    if not (len(scale) == len(mean) == len(std) == n):
        raise ConfigError(f"scale/mean/std need one value per band ({n} bands: {', '.join(bands)})")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std values {std} must all be positive")
    check_tiling(size=tile_size, overlap=overlap)
    check_tta(tta)
    ranges = check_input_range(input_range, bands=n)
    percentiles = None if stretch is None else check_stretch(stretch)
    if gsd is not None and not gsd > 0:
        raise ConfigError(f"gsd {gsd!r} must be a positive number of metres per pixel")
    torch.manual_seed(seed)
    network = build_network(arch, encoder=encoder, in_channels=n, classes=len(classes),
                            arch_kwargs=arch_kwargs)
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise BundleError(f"the weights do not fit {arch}/{encoder} with {n} bands and "
                              f"{len(classes)} classes: {_load_problem(exc)}") from exc
    network.eval()
    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "geoseg_version": __version__, "torch_version": torch.__version__,
            "trained": state_dict is not None}
    prov.update(provenance or {})
    meta = BundleMeta(arch=arch, encoder=encoder, bands=tuple(bands), classes=tuple(classes),
                      scale=scale, mean=mean, std=std, tile_size=tile_size, overlap=overlap,
                      tta=tta, receptive_field=receptive_field(network, in_channels=n),
                      arch_kwargs=dict(arch_kwargs or {}), name=name, provenance=prov,
                      gsd=None if gsd is None else float(gsd), input_dtype=input_dtype,
                      input_range=ranges, stretch=percentiles)
    if meta.stretch is not None and expected_range(meta) is None:
        raise ConfigError("a stretch maps each scene onto the model's input range: give the "
                          "range too (--input-range LOW,HIGH)")
    return ModelBundle(meta, network)


def save_bundle(bundle: ModelBundle, path: str | os.PathLike, *, float16: bool = False) -> str:
    """Write the bundle to ``path`` (via a temporary name); return the file's sha256.

    ``float16`` stores floating-point weights in half precision (half the file size);
    :func:`load_bundle` copies them back into the float32 network.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in bundle.network.state_dict().items()}
    if float16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with replacing(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: bundle.meta.to_json()})
        # safetensors creates files readable by their owner only; a bundle is shared with
        # workers and colleagues like any other output: the mode the umask gives
        os.chmod(tmp, shared_mode())
    return file_sha256(path)


def load_bundle(path: str | os.PathLike, *, device: str = "cpu") -> ModelBundle:
    """Load a bundle's metadata and weights (safetensors: no code runs) onto ``device``;
    an imported TorchScript or torch.export program is loaded as its network (an ONNX
    graph runs on onnxruntime: :func:`geoseg.model.loading.load_for_prediction`)."""
    import torch
    from safetensors.torch import load_file

    from .networks import build_network

    meta = read_meta(path)
    if meta.network != "smp":
        if meta.network == "onnx":
            raise BundleError(f"{path}: its network is an ONNX graph, which runs on "
                              "onnxruntime only (predict with --runtime onnxruntime or "
                              "auto); it cannot be trained or loaded into torch")
        from .programs import load_torch_program, read_program

        program = load_torch_program(meta.network, read_program(path), device=device)
        return ModelBundle(meta, program, file_sha256(path), device)
    network = build_network(meta.arch, encoder=meta.encoder, in_channels=meta.in_channels,
                            classes=len(meta.classes), arch_kwargs=meta.arch_kwargs)
    try:
        network.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not match {meta.arch}/{meta.encoder}: "
                          f"{str(exc).splitlines()[0]}") from exc
    network = network.eval().to(device).to(memory_format=torch.channels_last)
    return ModelBundle(meta, network, file_sha256(path), device)


def _load_problem(exc: RuntimeError) -> str:
    """torch's load_state_dict error in one line: its first specific complaint (missing or
    unexpected keys, a size mismatch), not its header."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    text = lines[0] if lines else str(exc).splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


def load_state_dict(path: str | os.PathLike) -> dict:
    """A plain torch state_dict from ``path`` (safetensors or torch.load weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{path}: not a torch state_dict readable with weights_only=True "
                          f"({str(exc).splitlines()[0]})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BundleError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    return state
