"""Test-time augmentation modes by name: the one list the CLI, YAML validation and the forward
pass use. Pure data, no torch, so checking a config stays light."""

from __future__ import annotations

from ..errors import ConfigError

TTA = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, flip) for k in range(4) for flip in (False, True)),
}
"""Test-time augmentation: (quarter turns, horizontal flip) views of each tile; their class
probabilities are averaged. ``flips``: identity, horizontal, vertical, both (4 passes);
``d4``: every rotation and reflection of the square (8 passes)."""

TTA_MODES = tuple(TTA)


def check_tta(tta: str) -> str:
    """Refuse an unknown mode with the list of valid ones."""
    if tta not in TTA:
        raise ConfigError(f"tta {tta!r} is not one of {', '.join(TTA)}")
    return tta
