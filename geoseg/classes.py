"""Class ids, names and colours, and how they travel in raster tags.

A class raster written by geoseg carries its classes as JSON in the ``GEOSEG_CLASSES`` tag
(``[{"id": 0, "name": "background", "color": "#000000"}, ...]``), so vectorize, evaluate
and other tools recover names without the model. Class ids are 0..254; 255 is nodata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

CLASSES_TAG = "GEOSEG_CLASSES"
NODATA_CLASS = 255
"""Output nodata value of every class raster (uint8)."""

BACKGROUND_NAMES = frozenset({"background", "bg", "none", "other"})

_PALETTE = ("#000000", "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33",
            "#a65628", "#f781bf", "#999999")


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """One output class: integer id (raster value), name, and colour as ``#rrggbb``."""

    id: int
    name: str
    color: str

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255

    @property
    def is_background(self) -> bool:
        return self.name.strip().lower() in BACKGROUND_NAMES


def make_classes(names: Iterable[str],
                 colors: Iterable[str] | None = None) -> tuple[ClassInfo, ...]:
    """Classes numbered 0.. in the given order, with default colours where none given."""
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ConfigError(f"class names {names!r} must be non-empty, e.g. background,building")
    if len(set(names)) != len(names):
        raise ConfigError(f"class names {names!r} repeat a name; give each class once")
    if len(names) > NODATA_CLASS:
        raise ConfigError(f"{len(names)} classes given; at most {NODATA_CLASS} fit in uint8")
    colors = list(colors or [])
    out = []
    for i, name in enumerate(names):
        color = colors[i] if i < len(colors) else _PALETTE[i % len(_PALETTE)]
        out.append(ClassInfo(i, name, color))
    return tuple(out)


def classes_to_json(classes: Iterable[ClassInfo]) -> str:
    """The tag value for a class list."""
    return json.dumps([{"id": c.id, "name": c.name, "color": c.color} for c in classes])


def classes_from_json(text: str) -> tuple[ClassInfo, ...]:
    """Inverse of :func:`classes_to_json`."""
    return tuple(ClassInfo(int(d["id"]), str(d["name"]), str(d["color"]))
                 for d in json.loads(text))


def classes_from_tags(tags: dict) -> tuple[ClassInfo, ...] | None:
    """Classes stored in a raster's tags, or None for a raster geoseg did not write."""
    text = tags.get(CLASSES_TAG)
    return classes_from_json(text) if text else None
