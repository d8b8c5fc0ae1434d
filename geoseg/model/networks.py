"""Networks by name: every smp architecture and encoder, plus two tiny ones geoseg adds for
tests and pipeline benchmarks; the receptive field measured by gradients."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class Pixelwise(nn.Module):
    """A 1x1 convolution: the trivial network, for pipeline-ceiling benchmarks and tests."""

    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TinyCNN(nn.Module):
    """``depth`` 3x3 convolutions: a small network with receptive field ``2 * depth + 1``."""

    def __init__(self, in_channels: int, classes: int, depth: int = 3,
                 width: int = 8) -> None:
        super().__init__()
        layers, c = [], in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        layers.append(nn.Conv2d(c, classes, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def receptive_field(network: nn.Module, *, in_channels: int, probe: int = 256) -> int:
    """Measured receptive field in pixels: the extent of input pixels whose gradient reaches
    the centre output pixel, on a ``probe`` x ``probe`` input (capped at ``probe``)."""
    net = network.eval()
    x = torch.randn(1, in_channels, probe, probe, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    with torch.enable_grad():
        out = net(x)
        out[0, :, probe // 2, probe // 2].sum().backward()
    assert x.grad is not None  # x is a leaf that requires grad: backward() sets it
    touched = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    if len(touched) == 0:
        return 1
    span = touched.max(dim=0).values - touched.min(dim=0).values + 1
    return int(span.max())
