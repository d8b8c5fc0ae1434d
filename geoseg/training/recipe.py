"""Training recipes: YAML into a frozen, validated :class:`Recipe` (scenes, labels, split,
network, optimisation). Unknown fields are refused by name; names checked against the
training registries (schedules) and the tiling and test-time augmentation rules."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..classes import make_classes
from ..config import load_yaml
from ..errors import ConfigError, InputNotFoundError
from ..model.tta import check_tta
from .labels import LabelSpec
from .schedules import SCHEDULES

LABEL_OVERRIDES = ("attribute", "mapping", "unlabelled", "layer")
"""Label-spec fields a scene entry may set for its own labels (sources label differently)."""


@dataclass(frozen=True)
class SceneEntry:
    """One labelled scene: image path, label path (vector or raster), and label-spec fields
    of its own (:data:`LABEL_OVERRIDES`) over the recipe's ``labels``."""

    image: str
    labels: str
    label_spec: tuple[tuple[str, Any], ...] = ()

    def spec(self, base: LabelSpec) -> LabelSpec:
        """The recipe's label spec with this scene's own fields."""
        return dataclasses.replace(base, **dict(self.label_spec)) if self.label_spec else base


@dataclass(frozen=True)
class Recipe:
    """A training recipe; sizes in pixels, ``max_minutes`` in wall-clock minutes."""

    name: str
    classes: tuple[str, ...]
    train: tuple[SceneEntry, ...]
    output: str
    validation: tuple[SceneEntry, ...] = ()
    colors: tuple[str, ...] = ()
    bands: tuple[str, ...] = ("red", "green", "blue")
    band_indexes: tuple[int, ...] = ()
    labels: LabelSpec = field(default_factory=LabelSpec)
    split: str = "scene"             # scene | blocks
    block_size: int = 256
    val_fraction: float = 0.25
    arch: str = "unet"
    encoder: str = "mobilenet_v2"
    arch_kwargs: dict = field(default_factory=dict)
    tile_size: int = 256
    overlap: int = 64
    tta: str = "none"                # the shipped model's default test-time augmentation
    chip_size: int = 256
    batch_size: int = 8
    steps: int = 400
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] = ()
    balance: float = 0.5
    chip_inside: float = 1.0         # share of a training chip that must be training area
    jitter: float = 0.1
    gamma: float = 0.0               # random gamma in [1/(1+g), 1+g] on the 0-1 scaled values
    blur: float = 0.0                # probability of a Gaussian blur (sigma 0.5-1.5 px)
    zoom: float = 0.0                # random zoom in [1/(1+z), 1+z] (buildings of other sizes)
    stretch: tuple[float, ...] = ()  # (LOW, HIGH): each scene's percentiles onto the range
    gsd: float = 0.0                 # metres per pixel every scene is read at (0: as it is)
    ema: float = 0.0                 # decay of an exponential moving average of the weights
    val_every: int = 50
    patience: int = 4
    seed: int = 0
    threads: int = 2
    max_minutes: float = 0.0
    checkpoint_dir: str = ""
    float16: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_recipe(path: str | os.PathLike, *, overrides: dict | None = None) -> Recipe:
    """A :class:`Recipe` from YAML, with ``overrides`` (field -> value) applied on top.

    Relative paths in the recipe are relative to the current directory (the repo root).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: recipe not found; see configs/train/ for examples")
    data = load_yaml(path)
    data.update(overrides or {})
    return recipe_from_dict(data, source=path.name)


def recipe_from_dict(data: dict, *, source: str = "recipe") -> Recipe:
    """Validate a plain dict into a :class:`Recipe`; unknown fields are refused by name."""
    data = dict(data)
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(names))}")
    for key in ("name", "classes", "train", "output"):
        if key not in data:
            raise ConfigError(f"{source}: missing field {key!r}")
    try:
        data["train"] = _entries(data["train"], source)
        data["validation"] = _entries(data.get("validation") or (), source)
        labels = data.get("labels") or {}
        if isinstance(labels, LabelSpec):
            data["labels"] = labels
        else:
            data["labels"] = LabelSpec(**labels)
        for key in ("classes", "colors", "bands", "band_indexes", "class_weights", "stretch"):
            if key in data:
                data[key] = tuple(data[key] or ())
        recipe = Recipe(**data)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return check_recipe(recipe, source=source)


def _entries(items: Any, source: str) -> tuple[SceneEntry, ...]:
    out = []
    for item in items:
        if isinstance(item, SceneEntry):
            out.append(item)
        elif isinstance(item, dict) and {"image", "labels"} <= set(item) \
                and not set(item) - {"image", "labels", *LABEL_OVERRIDES}:
            own = tuple((k, _frozen(item[k])) for k in LABEL_OVERRIDES if k in item)
            out.append(SceneEntry(str(item["image"]), str(item["labels"]), own))
        else:
            raise ConfigError(f"{source}: each scene is {{image: PATH, labels: PATH}} and "
                              f"optionally its own {', '.join(LABEL_OVERRIDES)}; got {item!r}")
    return tuple(out)


def _frozen(value: Any) -> Any:
    """A mapping from YAML kept as a dict (LabelSpec's type); other values as they are."""
    return dict(value) if isinstance(value, dict) else value


def missing_data(recipe: Recipe, *, source: str = "recipe") -> None:
    """Refuse a recipe whose scenes or labels are not there, naming the first missing path
    and where the data is expected (paths are relative to the working folder)."""
    for entry in (*recipe.train, *recipe.validation):
        for path in (entry.image, entry.labels):
            if "://" in path or path.startswith("/vsi") or Path(path).exists():
                continue
            hint = (" (the recipe expects the shared data beside the repository, run from "
                    "the repository's root; see ../shared/data/SOURCES.md)"
                    if "shared/data" in path else "")
            raise InputNotFoundError(f"{source}: {path} not found; paths are relative to "
                                     f"{Path.cwd()}{hint}")


def check_recipe(r: Recipe, *, source: str = "recipe") -> Recipe:
    from ..tiling import check_tiling

    if not r.train:
        raise ConfigError(f"{source}: no training scenes")
    if r.split not in ("scene", "blocks"):
        raise ConfigError(f"{source}: split {r.split!r} is not one of scene, blocks")
    if r.split == "scene" and not r.validation:
        raise ConfigError(f"{source}: split: scene needs validation scenes; list some or "
                          "use split: blocks")
    if r.schedule not in SCHEDULES:
        raise ConfigError(f"{source}: schedule {r.schedule!r} is not one of "
                          f"{', '.join(SCHEDULES)}")
    if r.chip_size % 32 or r.chip_size <= 0:
        raise ConfigError(f"{source}: chip_size {r.chip_size} must be a positive multiple "
                          "of 32")
    if r.band_indexes and len(r.band_indexes) != len(r.bands):
        raise ConfigError(f"{source}: {len(r.band_indexes)} band_indexes for "
                          f"{len(r.bands)} bands ({', '.join(r.bands)})")
    if r.class_weights and len(r.class_weights) != len(r.classes):
        raise ConfigError(f"{source}: class_weights needs one value per class")
    if not 0 < r.chip_inside <= 1:
        raise ConfigError(f"{source}: chip_inside {r.chip_inside} must be in (0, 1]")
    if min(r.gamma, r.gsd, r.zoom) < 0 or not 0 <= r.blur <= 1:
        raise ConfigError(f"{source}: gamma ({r.gamma}), gsd ({r.gsd}) and zoom ({r.zoom}) "
                          f"must be >= 0 and blur ({r.blur}) a probability in [0, 1]")
    if r.stretch:
        from ..model.radiometry import check_stretch

        try:
            check_stretch(r.stretch)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if not 0 <= r.ema < 1:
        raise ConfigError(f"{source}: ema {r.ema} must be in [0, 1) (0: off; e.g. 0.995)")
    if r.ema and r.ema ** r.steps > 0.01:
        # the average starts from the random initial weights; after n steps they keep
        # ema^n of it: refuse recipes that would ship (or validate) mostly noise
        raise ConfigError(f"{source}: with ema {r.ema} the initial random weights keep "
                          f"{r.ema ** r.steps:.0%} of the average after {r.steps} steps; "
                          f"use ema <= {0.01 ** (1 / r.steps):.4f} or more steps")
    if min(r.steps, r.batch_size, r.val_every) <= 0:
        raise ConfigError(f"{source}: steps, batch_size and val_every must be positive")
    check_tiling(size=r.tile_size, overlap=r.overlap)
    check_tta(r.tta)
    make_classes(r.classes, r.colors)
    return r
