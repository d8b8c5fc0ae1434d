"""Training a segmentation model from labelled scenes into a geoseg bundle.

A recipe (YAML, :func:`load_recipe`) names the scenes and labels, the split, the network
and the optimisation; :func:`train` runs it: labels rasterized on each scene's grid, band
statistics from the training split, random (optionally rare-class balanced) augmented
chips, cross-entropy (+ Dice), AdamW with a one-cycle or cosine schedule, validation mIoU
every ``val_every`` steps with early stopping, a checkpoint after each validation (a rerun
resumes from it), and finally the best weights saved as a bundle with the recipe, the data
and the validation metrics in its provenance. Same seed, same data -> same weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..atomic import replacing
from ..classes import NODATA_CLASS, ClassInfo, make_classes
from ..errors import ConfigError, InvalidInputError
from ..grid import Window
from ..inputs.fit import training_gsd, training_radiometry
from ..model.bundle import create_bundle, save_bundle
from ..model.inference import normalize
from ..model.meta import BundleMeta, file_sha256
from .chips import (
    SCALE_BY_DTYPE,
    ChipSampler,
    LabelledScene,
    augment,
    band_statistics,
    cut,
    default_scale,
    load_labelled_scene,
    make_sampler,
    resize_chip,
    sample_chip,
    split_blocks,
    validation_windows,
)
from .evaluate import confusion_matrix, mean_iou, pixel_metrics
from .labels import background_id
from .recipe import Recipe, SceneEntry, missing_data
from .schedules import SCHEDULES


@dataclass
class TrainResult:
    """What :func:`train` did: the bundle path, steps run, seconds, best metrics."""

    bundle: str
    steps: int
    seconds: float
    best_step: int
    metrics: dict
    history: list


def prepare_data(recipe: Recipe, classes: tuple[ClassInfo, ...]
                 ) -> tuple[list[LabelledScene], list[LabelledScene]]:
    """(train scenes, validation scenes) in memory; regions split by scene or by blocks."""
    def load(entries: Iterable[SceneEntry]) -> list[LabelledScene]:
        return [load_labelled_scene(e.image, e.labels, spec=e.spec(recipe.labels),
                                    classes=classes, bands=recipe.band_indexes,
                                    band_names=recipe.bands, gsd=recipe.gsd)
                for e in entries]

    train_scenes, val_scenes = load(recipe.train), load(recipe.validation)
    if recipe.split == "blocks":
        rng = np.random.default_rng(recipe.seed + 1)
        halves = [split_blocks(s, block_size=recipe.block_size, fraction=recipe.val_fraction,
                               rng=rng) for s in train_scenes]
        train_scenes = [t for t, _ in halves]
        val_scenes = val_scenes + [v for _, v in halves if v.region.any()]
    dtypes = {s.pixels.dtype.name for s in train_scenes + val_scenes}
    if len(dtypes) > 1:
        raise InvalidInputError(f"the scenes mix pixel types ({', '.join(sorted(dtypes))}); "
                                "one model normalizes one type: convert them alike")
    return train_scenes, val_scenes


def stretch_scenes(scenes: Sequence[LabelledScene], recipe: Recipe,
                   expected: Sequence[tuple[float, float]]) -> list[LabelledScene]:
    """Each scene's bands mapped from their ``recipe.stretch`` percentiles onto ``expected``
    and clipped, measured on the file as prediction measures a scene
    (:func:`geoseg.inputs.fit.scene_stretch`) and kept in the scene's pixel type."""
    from ..inputs.fit import rescale_terms, scene_stretch

    stretched: dict[int, np.ndarray] = {}  # the halves of a split share one pixel array
    out = []
    for scene in scenes:
        if id(scene.pixels) not in stretched:
            bands = scene.bands or tuple(range(1, scene.pixels.shape[0] + 1))
            terms = rescale_terms(scene_stretch(scene.path, bands, recipe.stretch),
                                  tuple(expected))
            pixels = np.empty_like(scene.pixels)
            for i, (gain, offset, low, high) in enumerate(terms):
                band = np.clip(scene.pixels[i].astype(np.float32) * gain + offset, low, high)
                pixels[i] = np.rint(band) if pixels.dtype.kind in "iu" else band
            stretched[id(scene.pixels)] = pixels
        out.append(dataclasses.replace(scene, pixels=stretched[id(scene.pixels)]))
    return out


def _loss_fn(recipe: Recipe,
             num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    weight = torch.tensor(recipe.class_weights, dtype=torch.float32) if recipe.class_weights \
        else None
    ce = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=NODATA_CLASS)
    dice = None
    if recipe.dice_weight > 0:
        from segmentation_models_pytorch.losses import DiceLoss

        dice = DiceLoss("multiclass", ignore_index=NODATA_CLASS)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = ce(logits, target)
        if dice is not None:
            value = value + recipe.dice_weight * dice(logits, target)
        return value

    return loss


def make_batch(scenes: Sequence[LabelledScene], sampler: ChipSampler, rng: np.random.Generator,
               meta: BundleMeta, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented batch: x (N, C, S, S) float32 normalized, y (N, S, S) int64."""
    size = recipe.chip_size
    stats = (np.asarray(meta.mean, np.float32).reshape(-1, 1, 1),
             np.asarray(meta.std, np.float32).reshape(-1, 1, 1))
    # gamma needs values scaled into 0-1: the integer types' default scale does that
    gamma = recipe.gamma if scenes[0].pixels.dtype.name in SCALE_BY_DTYPE else 0.0
    xs, ys = [], []
    for _ in range(recipe.batch_size):
        i, row, col = sample_chip(scenes, sampler, rng, balance=recipe.balance)
        factor = float(np.exp(rng.uniform(-np.log1p(recipe.zoom), np.log1p(recipe.zoom)))) \
            if recipe.zoom else 1.0
        side = max(1, round(size / factor))  # the window that becomes the chip, same centre
        shift = (size - side) // 2
        pixels, valid, labels = cut(scenes[i], Window(row + shift, col + shift, side, side))
        x = normalize(pixels, valid, meta)
        if side != size:
            x, valid, labels = resize_chip(x, valid, labels, size)
        x, y = augment(x, labels, valid, rng, jitter=recipe.jitter, gamma=gamma,
                       blur=recipe.blur, mean=stats[0], std=stats[1])
        xs.append(x)
        ys.append(y)
    batch = torch.from_numpy(np.stack(xs)).contiguous(memory_format=torch.channels_last)
    return batch, torch.from_numpy(np.stack(ys).astype(np.int64))


def validate(network: torch.nn.Module, scenes: list[LabelledScene], meta: BundleMeta, *, size: int,
             num_classes: int, batch_size: int = 4) -> np.ndarray:
    """Confusion matrix of ``network`` on the validation regions (non-overlapping chips)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    network.eval()
    with torch.inference_mode():
        for s in scenes:
            windows = validation_windows(s, size=size)
            for start in range(0, len(windows), batch_size):
                parts = [cut(s, w) for w in windows[start:start + batch_size]]
                x = np.stack([normalize(p, v, meta) for p, v, _ in parts])
                pred = network(torch.from_numpy(x)).argmax(1).numpy()
                for (_, valid, labels), p in zip(parts, pred, strict=True):
                    truth = np.where(valid, labels, NODATA_CLASS)
                    cm += confusion_matrix(truth, p, num_classes=num_classes)
    network.train()
    return cm


def data_provenance(recipe: Recipe) -> list[dict]:
    out = []
    for role, entries in (("train", recipe.train), ("validation", recipe.validation)):
        for e in entries:
            out.append({"role": role, "image": e.image, "labels": e.labels,
                        "image_sha256": file_sha256(e.image)})
    if recipe.split == "blocks":
        out.append({"split": f"blocks of {recipe.block_size} px, "
                             f"{recipe.val_fraction:.0%} to validation (seed {recipe.seed + 1})"})
    return out


def train(recipe: Recipe, *, resume: bool = True, progress: bool = True,
          output: str | None = None) -> TrainResult:
    """Run ``recipe`` and write its bundle (to ``output`` or ``recipe.output``)."""
    from tqdm import tqdm

    started = time.monotonic()
    torch.set_num_threads(max(1, recipe.threads))
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    classes = make_classes(recipe.classes, recipe.colors)
    num_classes = len(classes)
    missing_data(recipe)
    train_scenes, val_scenes = prepare_data(recipe, classes)
    scale = default_scale(train_scenes[0].pixels.dtype.name, len(recipe.bands))
    input_dtype, input_range = training_radiometry(
        [(s.pixels, s.valid & s.region) for s in train_scenes])
    if recipe.stretch:
        both = stretch_scenes([*train_scenes, *val_scenes], recipe, input_range)
        train_scenes, val_scenes = both[:len(train_scenes)], both[len(train_scenes):]
    mean, std = band_statistics(train_scenes, scale=scale)
    sampler = make_sampler(train_scenes, size=recipe.chip_size, num_classes=num_classes,
                           background=background_id(classes), inside=recipe.chip_inside)
    # what the bundle is, besides its weights and provenance: the same at start and end
    bundle_args: dict[str, Any] = dict(
        arch=recipe.arch, encoder=recipe.encoder, classes=classes, bands=recipe.bands,
        scale=scale, mean=mean, std=std, tile_size=recipe.tile_size, overlap=recipe.overlap,
        tta=recipe.tta, arch_kwargs=recipe.arch_kwargs, name=recipe.name, seed=recipe.seed,
        gsd=recipe.gsd or training_gsd([e.image for e in recipe.train]),
        input_dtype=input_dtype,
        input_range=input_range, stretch=recipe.stretch or None)
    bundle = create_bundle(**bundle_args)
    meta, network = bundle.meta, bundle.network.train()
    # the layout prediction runs in
    network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    scheduler = SCHEDULES[recipe.schedule](optimizer, lr=recipe.lr, steps=recipe.steps)
    # validated and shipped: the moving average of the weights (and BatchNorm statistics)
    # when ema > 0, which generalizes better than any one step's weights on small data
    averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema),
                             use_buffers=True) if recipe.ema else None
    shipped = averaged.module if averaged is not None else network
    loss_fn = _loss_fn(recipe, num_classes)
    rng = np.random.default_rng(recipe.seed)
    ckpt_dir = Path(recipe.checkpoint_dir or f"runs/{recipe.name}")
    ckpt_path = ckpt_dir / "last.pt"
    state: dict[str, Any] = {"step": 0, "best_miou": -1.0, "best_step": 0, "bad": 0, "history": [],
             "best_state": None, "elapsed": 0.0}
    fingerprint = _fingerprint(recipe.to_dict())
    if resume and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, fingerprint, network, optimizer, scheduler, rng,
                                 averaged)
    elapsed0 = state["elapsed"]
    bar = tqdm(total=recipe.steps, initial=state["step"], disable=not progress,
               desc=recipe.name, unit="step", dynamic_ncols=True)
    stop = state["bad"] > recipe.patience
    running = None
    while state["step"] < recipe.steps and not stop:
        x, y = make_batch(train_scenes, sampler, rng, meta, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(network)
        state["step"] += 1
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        state["history"].append({"step": state["step"], "loss": value})
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", val_miou=f"{max(state['best_miou'], 0):.3f}")
        minutes = (elapsed0 + time.monotonic() - started) / 60
        out_of_time = recipe.max_minutes and minutes >= recipe.max_minutes
        if state["step"] % recipe.val_every == 0 or state["step"] == recipe.steps \
                or out_of_time:
            cm = validate(shipped, val_scenes, meta, size=recipe.chip_size,
                          num_classes=num_classes)
            miou = mean_iou(cm)
            state["history"][-1]["val_miou"] = miou
            if miou > state["best_miou"]:
                state.update(best_miou=miou, best_step=state["step"], bad=0, best_cm=cm.tolist(),
                             best_state={k: v.detach().clone()
                                         for k, v in shipped.state_dict().items()})
            else:
                state["bad"] += 1
            bar.set_postfix(loss=f"{running:.3f}", val_miou=f"{miou:.3f}",
                            best=f"{state['best_miou']:.3f}")
            state["elapsed"] = elapsed0 + time.monotonic() - started
            _save_checkpoint(ckpt_path, fingerprint, state, network, optimizer, scheduler, rng,
                             averaged)
            stop = state["bad"] > recipe.patience or bool(out_of_time)
    bar.close()
    seconds = elapsed0 + time.monotonic() - started
    metrics = pixel_metrics(np.asarray(state.get("best_cm", np.zeros((num_classes,) * 2))),
                            classes)
    metrics = {"validation_miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
               "per_class_iou": {k: v["iou"] for k, v in metrics["classes"].items()},
               "best_step": state["best_step"],
               "per_scene_iou": _per_scene(shipped, state["best_state"], val_scenes, meta,
                                           recipe, classes)}
    provenance = {"recipe": recipe.to_dict(),
                  "data": data_provenance(recipe),
                  "metrics": metrics, "training": {"steps": state["step"],
                                                   "seconds": round(seconds, 1),
                                                   "threads": recipe.threads}}
    final = create_bundle(**bundle_args, provenance=provenance,
                          state_dict=state["best_state"] or shipped.state_dict())
    out = Path(output or recipe.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_bundle(final, out, float16=recipe.float16)
    return TrainResult(str(out), state["step"], seconds, state["best_step"], metrics,
                       state["history"])


def _per_scene(network: torch.nn.Module, best: dict | None, scenes: list[LabelledScene],
               meta: BundleMeta, recipe: Recipe, classes: tuple[ClassInfo, ...]) -> dict:
    """Each validation scene's per-class IoU with the shipped weights (its held-out blocks
    under ``split: blocks``): how the model does on every source, not only on average."""
    if best is not None:
        network.load_state_dict(best)
    out: dict = {}
    for scene in scenes:
        cm = validate(network, [scene], meta, size=recipe.chip_size,
                      num_classes=len(classes))
        scores = pixel_metrics(cm, classes)["classes"]
        out[Path(scene.path).name] = {k: v["iou"] for k, v in scores.items()}
    return out


BUDGET_FIELDS = ("max_minutes", "output", "checkpoint_dir", "threads", "tta")
"""Recipe fields a resumed run may change: they do not change what one step computes
(``tta`` only goes into the bundle)."""


def _fingerprint(recipe: dict) -> str:
    # fields a checkpoint predates count with their defaults (ema: 0 is what it trained with)
    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)
                if f.default is not dataclasses.MISSING}
    return json.dumps({k: v for k, v in {**defaults, **recipe}.items()
                       if k not in BUDGET_FIELDS}, sort_keys=True, default=str)


def _save_checkpoint(path: Path, fingerprint: str, state: dict, network: torch.nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
                     averaged: AveragedModel | None = None) -> None:
    """Everything to continue exactly where training stopped (torch.save, tensors and
    plain types only so that torch.load(weights_only=True) reads it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"fingerprint": fingerprint, "state": state, "network": network.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
    if averaged is not None:
        payload["averaged"] = averaged.state_dict()
    with replacing(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, fingerprint: str, network: torch.nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
                     averaged: AveragedModel | None = None) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if _fingerprint(json.loads(payload.get("fingerprint", "{}"))) != fingerprint:
        raise ConfigError(f"{path}: a checkpoint of a different recipe; delete it, set "
                          "another checkpoint_dir, or pass --no-resume")
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng.bit_generator.state = json.loads(payload["rng"])
    torch.set_rng_state(payload["torch_rng"])
    if averaged is not None:
        averaged.load_state_dict(payload["averaged"])
    return payload["state"]
