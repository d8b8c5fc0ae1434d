"""A model's input radiometry as values: the raw value range it expects per band and the
percentiles a scene's bands are stretched from onto it.

Checked once wherever they enter: a bundle's metadata (``geoseg model create``, training),
a recipe's ``stretch`` and the ``--stretch``/``--input-range`` options; whether a scene's
values fit them is :mod:`geoseg.inputs.fit`'s question.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .meta import BundleMeta

Ranges = tuple[tuple[float, float], ...]
"""Per band ``(low, high)`` raw values."""


def check_input_range(value: Sequence[Sequence[float]] | Sequence[float] | None, *,
                      bands: int) -> Ranges | None:
    """``(low, high)`` for every band, or one ``(low, high)`` per band -> per band ranges;
    refused unless each low < high."""
    if value is None:
        return None
    items = list(value)
    if len(items) == 2 and all(isinstance(v, (int, float)) for v in items):
        items = [items] * bands
    elif len(items) == 1:
        items = items * bands
    message = f"input range {value!r} must be LOW,HIGH or one LOW,HIGH per band"
    try:
        ranges = tuple((float(pair[0]), float(pair[1]))  # type: ignore[index]
                       for pair in items if len(pair) == 2)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(message) from None
    if len(ranges) != len(items):
        raise ConfigError(message)
    if len(ranges) != bands:
        raise ConfigError(f"input range has {len(ranges)} band ranges; the model has "
                          f"{bands} bands")
    bad = [r for r in ranges if not r[0] < r[1]]
    if bad:
        raise ConfigError(f"input range {bad[0][0]:g},{bad[0][1]:g}: LOW must be below HIGH")
    return ranges


def parse_pair(text: str | Sequence[float] | None, *, what: str) -> tuple[float, float] | None:
    """``"2,98"`` or ``[2, 98]`` -> ``(2.0, 98.0)``; None stays None."""
    if text is None or text == "":
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        low, high = (float(v) for v in items)
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be two numbers LOW,HIGH") from None
    if not low < high:
        raise ConfigError(f"{what} {text!r}: LOW must be below HIGH")
    return low, high


def check_stretch(value: str | Sequence[float]) -> tuple[float, float]:
    """``--stretch``, a recipe's or a bundle's ``stretch``: two percentiles 0 <= LOW < HIGH
    <= 100 -> ``(LOW, HIGH)``; the one check all three go through."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if len(items) != 2:
        raise ConfigError(f"stretch {value!r} must be two percentiles LOW,HIGH, e.g. 2,98")
    low, high = parse_pair(value, what="stretch") or (0.0, 0.0)
    if not 0 <= low < high <= 100:
        raise ConfigError(f"stretch {low:g},{high:g} must be percentiles 0 <= LOW < HIGH "
                          "<= 100, e.g. 2,98")
    return low, high


def expected_range(meta: BundleMeta) -> Ranges | None:
    """The raw values the model expects per band (see the module's docstring)."""
    if meta.input_range is not None:
        return meta.input_range
    if all(math.isclose(s, 1 / 255, rel_tol=1e-6) for s in meta.scale):
        return ((0.0, 255.0),) * meta.in_channels
    return None
