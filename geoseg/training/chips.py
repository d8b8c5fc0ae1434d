"""Training data: labelled scenes in memory, train/validation regions, chips, augmentation.

A :class:`LabelledScene` is one scene's pixels (C, H, W, its dtype), validity (H, W) and
class ids (H, W, uint8, 255 = no label) on the scene's grid. Training scenes are held in
memory whole: training sets are small, unlike the scenes prediction streams through.

Train and validation never share a pixel: either whole scenes are held apart, or each
scene is cut into square blocks and every block goes to one side; a training chip is only
drawn where it lies entirely in training blocks, and validation reads only validation
blocks. Chip sampling is random (seeded ``numpy.random.Generator``), optionally centred on a
pixel of a rare class; augmentation is flips, 90-degree rotations and a mild per-band gain
and offset applied to the normalized values of valid pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .. import tiling
from ..classes import NODATA_CLASS, ClassInfo
from ..errors import InvalidInputError
from ..grid import PixelGrid, Window, intersect
from ..inputs.scene import open_raster, open_scene, read_window, select_bands
from .labels import LabelSpec, labels_on_grid

SCALE_BY_DTYPE = {"uint8": 1 / 255, "uint16": 1 / 65535}


@dataclass(frozen=True, eq=False)
class LabelledScene:
    """One scene in memory with its labels; ``region`` marks pixels this split may use."""

    path: str
    labels_path: str
    pixels: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    region: np.ndarray
    bands: tuple[int, ...] = ()
    """The file's bands ``pixels`` holds, in order (1-based; empty: all of them)."""

    @property
    def height(self) -> int:
        return self.labels.shape[0]

    @property
    def width(self) -> int:
        return self.labels.shape[1]


def load_labelled_scene(image: str | os.PathLike, labels: str | os.PathLike, *,
                        spec: LabelSpec, classes: tuple[ClassInfo, ...],
                        bands: Sequence[int] = (),
                        band_names: Sequence[str] = (), gsd: float = 0.0) -> LabelledScene:
    """Read a whole scene and burn its labels on its grid; nodata pixels get no label.
    With ``gsd`` (metres per pixel) a scene at another pixel size is read resampled onto a
    grid of that size over the same extent (:func:`model_grid`; area average), and its
    labels are burnt on that grid."""
    scene = open_scene(image)
    band_idx = select_bands(scene, bands, expected=len(band_names), names=band_names)
    grid = model_grid(scene.grid, gsd) if gsd else scene.grid
    with open_raster(scene.path) as ds:
        if grid == scene.grid:
            pixels, valid = read_window(ds, grid.window, bands=band_idx)
        else:
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width,
                           height=grid.height, resampling=Resampling.average) as vrt:
                pixels, valid = read_window(vrt, grid.window, bands=band_idx)
    ids = labels_on_grid(labels, grid, spec, classes)
    ids = np.where(valid, ids, NODATA_CLASS).astype(np.uint8)
    return LabelledScene(str(image), str(labels), pixels, valid, ids,
                         np.ones(ids.shape, bool), tuple(band_idx))


def model_grid(grid: PixelGrid, gsd: float, *, tolerance: float = 0.01) -> PixelGrid:
    """``grid``'s extent at ``gsd`` metres per pixel (the same grid when its pixels are
    within ``tolerance`` of that already)."""
    from affine import Affine

    from ..inputs.fit import metres_per_pixel

    size = metres_per_pixel(grid)
    if size is None or abs(size / gsd - 1) <= tolerance:
        return grid
    factor = gsd / size
    height, width = max(1, round(grid.height / factor)), max(1, round(grid.width / factor))
    transform = grid.transform * Affine.scale(grid.width / width, grid.height / height)
    return PixelGrid(height, width, transform, grid.crs)


def split_blocks(scene: LabelledScene, *, block_size: int, fraction: float,
                 rng: np.random.Generator) -> tuple[LabelledScene, LabelledScene]:
    """The scene as (train, validation) halves by square blocks of ``block_size`` pixels
    (:func:`geoseg.tiling.split_blocks` chooses them)."""
    val = tiling.split_blocks(height=scene.height, width=scene.width, block_size=block_size,
                              fraction=fraction, rng=rng)
    return (replace(scene, region=scene.region & ~val),
            replace(scene, region=scene.region & val))


def band_statistics(scenes: Sequence[LabelledScene], *,
                    scale: tuple[float, ...]) -> tuple[tuple, tuple]:
    """Per-band mean and std of ``value * scale`` over valid pixels of the scenes' regions."""
    n_bands = scenes[0].pixels.shape[0]
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = 0
    for s in scenes:
        use = s.valid & s.region
        values = s.pixels[:, use].astype(np.float64) * np.asarray(scale).reshape(-1, 1)
        total += values.sum(axis=1)
        total_sq += (values ** 2).sum(axis=1)
        count += values.shape[1]
    if count == 0:
        raise InvalidInputError("no valid pixels in the training scenes; check their nodata "
                                "value and masks")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def default_scale(dtype: str, n_bands: int) -> tuple[float, ...]:
    return (SCALE_BY_DTYPE.get(dtype, 1.0),) * n_bands


@dataclass(frozen=True, slots=True)
class ChipSampler:
    """Where training chips may start, per scene, and where rare-class pixels are.

    ``origins[i]``: flat indexes (row * width + col) of chip origins whose whole chip lies
    in scene i's training region; ``rare[i][k]``: flat pixel indexes of class k.
    """

    size: int
    origins: tuple
    rare: tuple
    rare_classes: tuple


def make_sampler(scenes: Sequence[LabelledScene], *, size: int, num_classes: int,
                 background: int | None, inside: float = 1.0) -> ChipSampler:
    """Precompute chip origins: chips with at least ``inside`` of their pixels in the
    training region (1.0: the whole chip). The rest of a chip is masked when it is cut
    (:func:`cut`: invalid and unlabelled), so a smaller share lets small scenes split into
    held-out blocks still give chips without the chips seeing a held-out pixel."""
    origins, rare = [], []
    for s in scenes:
        inside_ok = _windows_inside(s.region, size, share=inside)
        origins.append(np.flatnonzero(inside_ok))
        per_class: dict[int, np.ndarray] = {}
        for k in range(num_classes):
            if k == background:
                continue
            pixels = np.flatnonzero((s.labels == k) & s.region)
            if len(pixels):
                per_class[k] = pixels
        rare.append(per_class)
    if not any(len(o) for o in origins):
        raise InvalidInputError(f"no {size} x {size} chip fits inside the training area; use "
                                "a smaller chip_size or larger blocks")
    present = sorted({k for r in rare for k in r})
    return ChipSampler(size, tuple(origins), tuple(rare), tuple(present))


def _windows_inside(region: np.ndarray, size: int, *, share: float = 1.0) -> np.ndarray:
    """Boolean (H, W): at least ``share`` of the chip at (row, col) lies inside ``region``
    (scene padded to size)."""
    h, w = region.shape
    ph, pw = max(h, size), max(w, size)
    padded = np.zeros((ph, pw), bool)
    padded[:h, :w] = region
    if (ph, pw) != (h, w):  # a scene smaller than a chip: its padding counts as inside
        padded[h:, :] = True
        padded[:, w:] = True
    integral = np.zeros((ph + 1, pw + 1), np.int64)
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    n_r, n_c = ph - size + 1, pw - size + 1
    sums = (integral[size:size + n_r, size:size + n_c] - integral[:n_r, size:size + n_c]
            - integral[size:size + n_r, :n_c] + integral[:n_r, :n_c])
    inside = np.zeros((h, w), bool)
    inside[:n_r, :n_c] = sums >= np.ceil(share * size * size)
    return inside


def sample_chip(scenes: Sequence[LabelledScene], sampler: ChipSampler, rng: np.random.Generator, *,
                balance: float) -> tuple[int, int, int]:
    """(scene index, row, col) of a chip origin; with probability ``balance`` the chip
    contains a pixel of a rare class chosen uniformly among the classes present."""
    size = sampler.size
    weights = np.array([len(o) for o in sampler.origins], float)
    if sampler.rare_classes and rng.random() < balance:
        k = sampler.rare_classes[rng.integers(len(sampler.rare_classes))]
        holders = [i for i, r in enumerate(sampler.rare) if k in r and weights[i] > 0]
        for _ in range(20):
            i = holders[rng.integers(len(holders))] if holders else None
            if i is None:
                break
            pixel = sampler.rare[i][k][rng.integers(len(sampler.rare[i][k]))]
            row, col = divmod(int(pixel), scenes[i].width)
            row = int(row - rng.integers(size))
            col = int(col - rng.integers(size))
            row = min(max(row, 0), max(scenes[i].height - size, 0))
            col = min(max(col, 0), max(scenes[i].width - size, 0))
            origin = row * scenes[i].width + col
            if _is_origin(sampler.origins[i], origin):
                return i, row, col
    i = int(rng.choice(len(weights), p=weights / weights.sum()))
    origin = sampler.origins[i][rng.integers(len(sampler.origins[i]))]
    row, col = divmod(int(origin), scenes[i].width)
    return i, row, col


def _is_origin(sorted_origins: np.ndarray, origin: int) -> bool:
    j = np.searchsorted(sorted_origins, origin)
    return bool(j < len(sorted_origins) and sorted_origins[j] == origin)


def cut(scene: LabelledScene, window: Window, *,
        use_region: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (C, h, w), valid (h, w), labels (h, w) for ``window``, padded past the scene
    (padding invalid, label 255). With ``use_region``, pixels outside the scene's region
    (the other split) are invalid and unlabelled too, so a split never sees the other."""
    c = scene.pixels.shape[0]
    pixels = np.zeros((c, window.height, window.width), scene.pixels.dtype)
    valid = np.zeros((window.height, window.width), bool)
    labels = np.full((window.height, window.width), NODATA_CLASS, np.uint8)
    inner = intersect(window, Window(0, 0, scene.height, scene.width))
    if inner is None:
        return pixels, valid, labels
    dst, src = inner.slices(within=window), inner.slices()
    pixels[(slice(None),) + dst] = scene.pixels[(slice(None),) + src]
    ok, lab = scene.valid[src], scene.labels[src]
    if use_region:
        ok = ok & scene.region[src]
        lab = np.where(scene.region[src], lab, NODATA_CLASS)
    valid[dst] = ok
    labels[dst] = lab
    return pixels, valid, labels


def augment(x: np.ndarray, y: np.ndarray, valid: np.ndarray, rng: np.random.Generator, *,
            jitter: float, gamma: float = 0.0, blur: float = 0.0,
            mean: np.ndarray | None = None,
            std: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random flip / 90-degree rotation of a normalized chip ``x`` (C, H, W) and its labels
    ``y`` (H, W); then radiometric jitter on valid pixels only (masked pixels stay exactly 0
    as in prediction): a gain ``1 +- jitter`` and an offset ``+- jitter`` (in std units)
    shared by all bands (brightness, contrast: scenes of other dates and sensors), plus a
    third of that per band (colour balance). ``gamma``: the 0-1 scaled values (``x * std +
    mean``) raised to a power in ``[1/(1+gamma), 1+gamma]`` (sensor response curves);
    ``blur``: the probability of a Gaussian blur of sigma 0.5-1.5 px (other resolutions,
    optics, compression)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    if gamma > 0 and mean is not None and std is not None:
        power = float(np.exp(rng.uniform(-np.log1p(gamma), np.log1p(gamma))))
        scaled = np.clip(x * std + mean, 0, 1) ** power
        x = ((scaled - mean) / std).astype(np.float32) * valid
    if blur > 0 and rng.random() < blur:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0, *(2 * [float(rng.uniform(0.5, 1.5))]))) * valid
    if jitter > 0:
        c = x.shape[0]
        gain = (1 + rng.uniform(-jitter, jitter)
                + rng.uniform(-jitter / 3, jitter / 3, (c, 1, 1))).astype(np.float32)
        offset = (rng.uniform(-jitter, jitter)
                  + rng.uniform(-jitter / 3, jitter / 3, (c, 1, 1))).astype(np.float32)
        x = (x * gain + offset) * valid
    if x.shape[1] == x.shape[2]:
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
    if flip:
        x, y = x[:, :, ::-1], y[:, ::-1]
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y)


def resize_chip(x: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A normalized chip ``x`` (C, h, w) with its validity and labels resized to ``size``:
    pixels as prediction resamples tiles of a scene off the model's GSD (area average when
    shrinking, bilinear when enlarging: :func:`geoseg.model.inference.resize_tiles`),
    validity and labels by nearest pixel; pixels that become invalid are 0 again, as in
    prediction (random zoom in training)."""
    import torch
    import torch.nn.functional as F

    from ..model.inference import resize_tiles

    out = resize_tiles(torch.from_numpy(np.ascontiguousarray(x))[None], size)[0].numpy()
    masks = torch.from_numpy(np.stack([valid.astype(np.uint8), labels]))[None]
    valid_out, labels_out = F.interpolate(masks, size=(size, size),
                                          mode="nearest-exact")[0].numpy()
    valid_out = valid_out.astype(bool)
    return (out * valid_out).astype(np.float32), valid_out, labels_out.astype(labels.dtype)


def validation_windows(scene: LabelledScene, *, size: int) -> list[Window]:
    """Non-overlapping ``size`` windows covering the scene that hold validation labels."""
    out = []
    for row in range(0, scene.height, size):
        for col in range(0, scene.width, size):
            w = Window(row, col, size, size)
            lab = scene.labels[row:row + size, col:col + size]
            reg = scene.region[row:row + size, col:col + size]
            if ((lab != NODATA_CLASS) & reg).any():
                out.append(w)
    return out
