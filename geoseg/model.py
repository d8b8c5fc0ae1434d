"""ModelBundle: one safetensors file with an smp network's weights and all it needs to predict.

The metadata (architecture, bands, normalization, classes, tiling, receptive field,
provenance) travels as JSON in the safetensors header, so loading a bundle executes no
code (DESIGN.md promise 8). This module owns building networks by name, saving, loading,
normalization and the batched forward pass; it is one of the two modules that import torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import replacing
from .classes import ClassInfo, NODATA_CLASS
from .config import check_tta
from .errors import BundleError, ConfigError, InputNotFoundError

FORMAT = "geoseg-bundle/1"
META_KEY = "geoseg"


class Pixelwise(nn.Module):
    """A 1x1 convolution: the trivial network, for pipeline-ceiling benchmarks and tests."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, classes, 1)

    def forward(self, x):
        return self.conv(x)


class TinyCNN(nn.Module):
    """``depth`` 3x3 convolutions: a small network with receptive field ``2 * depth + 1``."""

    def __init__(self, in_channels: int, classes: int, depth: int = 3, width: int = 8):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        layers.append(nn.Conv2d(c, classes, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


EXTRA_ARCHITECTURES = {"pixelwise": Pixelwise, "tinycnn": TinyCNN}
"""Networks geoseg adds to smp's, by lower-case name; their ``encoder`` is ignored."""


def build_network(arch: str, *, encoder: str, in_channels: int, classes: int,
                  arch_kwargs: dict | None = None) -> nn.Module:
    """An untrained network: any smp architecture/encoder by name, or a geoseg extra.

    Never downloads weights (``encoder_weights=None``): geoseg trains what it ships.
    """
    kwargs = dict(arch_kwargs or {})
    extra = EXTRA_ARCHITECTURES.get(arch.lower())
    if extra is not None:
        return extra(in_channels, classes, **kwargs)
    import segmentation_models_pytorch as smp

    smp_arch = smp.MODEL_ARCHITECTURES_MAPPING.get(arch.lower())
    if smp_arch is None:
        valid = sorted([m.__name__ for m in smp.MODEL_ARCHITECTURES_MAPPING.values()]
                       + [e.__name__ for e in EXTRA_ARCHITECTURES.values()])
        raise ConfigError(f"unknown architecture {arch!r}; valid: {', '.join(valid)}")
    try:
        return smp_arch(encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                        classes=classes, **kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build {arch} with encoder {encoder!r}: "
                          f"{str(exc).splitlines()[0]}") from exc


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
        check_tta(d.get("tta", "none"))  # a ConfigError is a ValueError: read_meta names the file
        return cls(**d)


@dataclass(frozen=True)
class ModelBundle:
    """A network in eval mode with its metadata; ``sha256`` is the bundle file's hash."""

    meta: BundleMeta
    network: nn.Module
    sha256: str = ""
    device: str = "cpu"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; refuse unknown names clearly."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is available: use "
                          "--device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    return device


def receptive_field(network: nn.Module, *, in_channels: int, probe: int = 256) -> int:
    """Measured receptive field in pixels: the extent of input pixels whose gradient reaches
    the centre output pixel, on a ``probe`` x ``probe`` input (capped at ``probe``)."""
    net = network.eval()
    x = torch.randn(1, in_channels, probe, probe, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    with torch.enable_grad():
        out = net(x)
        out[0, :, probe // 2, probe // 2].sum().backward()
    touched = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    if len(touched) == 0:
        return 1
    span = touched.max(dim=0).values - touched.min(dim=0).values + 1
    return int(span.max())


def create_bundle(*, arch: str, encoder: str, classes: tuple[ClassInfo, ...],
                  bands: tuple[str, ...], scale=None, mean=None, std=None,
                  tile_size: int = 256, overlap: int = 64, tta: str = "none",
                  arch_kwargs: dict | None = None,
                  state_dict: dict | None = None, name: str = "model",
                  provenance: dict | None = None, seed: int = 0) -> ModelBundle:
    """A bundle around a new network (seeded random weights) or a given smp state_dict."""
    from .tiling import check_tiling

    n = len(bands)
    per_band = lambda v, default: tuple(float(x) for x in (v if v is not None else [default] * n))  # noqa: E731
    scale, mean, std = per_band(scale, 1 / 255), per_band(mean, 0.5), per_band(std, 0.25)
    if not (len(scale) == len(mean) == len(std) == n):
        raise ConfigError(f"scale/mean/std need one value per band ({n} bands: {', '.join(bands)})")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std values {std} must all be positive")
    check_tiling(size=tile_size, overlap=overlap)
    check_tta(tta)
    torch.manual_seed(seed)
    network = build_network(arch, encoder=encoder, in_channels=n, classes=len(classes),
                            arch_kwargs=arch_kwargs)
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise BundleError(f"the weights do not fit {arch}/{encoder} with {n} bands and "
                              f"{len(classes)} classes: {first}") from exc
    network.eval()
    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "geoseg_version": __version__, "torch_version": torch.__version__,
            "trained": state_dict is not None}
    prov.update(provenance or {})
    meta = BundleMeta(arch=arch, encoder=encoder, bands=tuple(bands), classes=tuple(classes),
                      scale=scale, mean=mean, std=std, tile_size=tile_size, overlap=overlap,
                      tta=tta, receptive_field=receptive_field(network, in_channels=n),
                      arch_kwargs=dict(arch_kwargs or {}), name=name, provenance=prov)
    return ModelBundle(meta, network)


def save_bundle(bundle: ModelBundle, path, *, float16: bool = False) -> str:
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
        os.chmod(tmp, 0o666 & ~_umask())
    return file_sha256(path)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(path) -> BundleMeta:
    """The metadata of a bundle file without building its network."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: model file not found; create one with "
                                 "`geoseg model create` or train one with `geoseg train`")
    try:
        with safe_open(str(path), framework="pt") as f:
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


def load_bundle(path, *, device: str = "cpu") -> ModelBundle:
    """Load a bundle's metadata and weights (safetensors: no code runs) onto ``device``."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    network = build_network(meta.arch, encoder=meta.encoder, in_channels=meta.in_channels,
                            classes=len(meta.classes), arch_kwargs=meta.arch_kwargs)
    try:
        network.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not match {meta.arch}/{meta.encoder}: "
                          f"{str(exc).splitlines()[0]}") from exc
    network = network.eval().to(device).to(memory_format=torch.channels_last)
    return ModelBundle(meta, network, file_sha256(path), device)


def load_state_dict(path) -> dict:
    """A plain torch state_dict from ``path`` (safetensors or torch.load weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
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


def normalize(pixels: np.ndarray, valid: np.ndarray, meta: BundleMeta,
              out: np.ndarray | None = None) -> np.ndarray:
    """Raw band values (C, H, W) -> float32 model input; invalid pixels become 0.

    ``(value * scale - mean) / std`` per band; 0 after normalization is the band mean, so
    masked pixels carry no signal (the same as the network's own zero padding).
    """
    c = pixels.shape[0]
    scale = np.asarray(meta.scale, np.float32).reshape(c, 1, 1)
    mean = np.asarray(meta.mean, np.float32).reshape(c, 1, 1)
    std = np.asarray(meta.std, np.float32).reshape(c, 1, 1)
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    np.multiply(pixels, scale / std, out=out, casting="unsafe")
    out -= mean / std
    # assignment, not multiplication: NaN * 0 is NaN, and nodata must carry no signal
    np.copyto(out, 0, where=~valid)
    return out


TTA = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, flip) for k in range(4) for flip in (False, True)),
}
"""Test-time augmentation: (quarter turns, horizontal flip) views of each tile; their class
probabilities are averaged. ``flips``: identity, horizontal, vertical, both (4 passes);
``d4``: every rotation and reflection of the square (8 passes)."""


def _view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(2, 3)) if k else x
    return x.flip(3) if flip else x


def _unview(p: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    p = p.flip(3) if flip else p
    return torch.rot90(p, -k, dims=(2, 3)) if k else p


def forward_probabilities(bundle: ModelBundle, batch: torch.Tensor, *,
                          tta: str = "none") -> torch.Tensor:
    """Class probabilities (N, K, H, W) float32 on the CPU for a normalized batch.

    inference_mode, channels_last; on CUDA non-blocking copies and autocast (bf16 where
    supported, else fp16). The network sees whole tiles; softmax runs in float32. With
    ``tta`` (see :data:`TTA`) the mean of the views' probabilities, summed in a fixed order.
    """
    device = bundle.device
    views = TTA[check_tta(tta)]
    with torch.inference_mode():
        x = batch.to(device, non_blocking=True)
        total = None
        for k, flip in views:
            xv = _view(x, k, flip).contiguous(memory_format=torch.channels_last)
            if device.startswith("cuda"):
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    logits = bundle.network(xv)
            else:
                logits = bundle.network(xv)
            # softmax over classes is twice as fast on a contiguous (NCHW) tensor on the CPU
            p = _unview(torch.softmax(logits.float().contiguous(), dim=1), k, flip)
            total = p if total is None else total.add_(p)
        if len(views) > 1:
            total = total.div_(len(views)).contiguous()
        return total.to("cpu")


def with_provenance(meta: BundleMeta, **extra) -> BundleMeta:
    """A copy of ``meta`` with provenance entries added or replaced."""
    return replace(meta, provenance={**meta.provenance, **extra})
