"""The model: the bundle file and its metadata, the network registry, the model's input
radiometry, inference with test-time augmentation, and devices.

May import: the shared modules only (errors, config, classes, grid, tiling, names,
atomic). Every later stage may import the model; its metadata comes before the inputs
because whether a scene fits is asked of the model's GSD and radiometry.

Names are imported from their modules on first use (PEP 562), so ``geoseg.model.tta``,
``geoseg.model.devices`` (name lists that configs are checked against) and
``geoseg.model.meta`` (a bundle's metadata, what a batch's client plans with) stay free of
torch;
``from geoseg.model import load_bundle`` imports torch, as loading a network must.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_HOMES = {
    "bundle": ("ModelBundle", "create_bundle", "save_bundle", "load_bundle",
               "load_state_dict"),
    "meta": ("BundleMeta", "read_meta", "file_sha256", "with_provenance", "FORMAT",
             "META_KEY"),
    "networks": ("Pixelwise", "TinyCNN", "EXTRA_ARCHITECTURES", "build_network",
                 "receptive_field"),
    "inference": ("normalize", "normalize_region", "to_device", "forward_probabilities"),
    "tta": ("TTA", "TTA_MODES", "check_tta"),
    "devices": ("DEVICES", "check_device", "device_kind", "resolve_device"),
    "optimize": ("fold_batch_norm", "for_inference"),
    "loading": ("load_for_prediction",),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["BundleMeta", "DEVICES", "EXTRA_ARCHITECTURES", "FORMAT", "META_KEY",
           "ModelBundle", "Pixelwise", "TTA", "TTA_MODES", "TinyCNN", "build_network",
           "check_device", "check_tta", "create_bundle", "device_kind", "file_sha256",
           "fold_batch_norm", "for_inference", "forward_probabilities", "load_bundle",
           "load_for_prediction", "load_state_dict", "normalize",
           "normalize_region", "read_meta", "receptive_field", "resolve_device", "save_bundle",
           "to_device", "with_provenance"]

if TYPE_CHECKING:
    from .bundle import ModelBundle, create_bundle, load_bundle, load_state_dict, save_bundle
    from .devices import DEVICES, check_device, device_kind, resolve_device
    from .inference import forward_probabilities, normalize, normalize_region, to_device
    from .meta import FORMAT, META_KEY, BundleMeta, file_sha256, read_meta, with_provenance
    from .networks import EXTRA_ARCHITECTURES, Pixelwise, TinyCNN, build_network, receptive_field
    from .loading import load_for_prediction
    from .optimize import fold_batch_norm, for_inference
    from .tta import TTA, TTA_MODES, check_tta


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
