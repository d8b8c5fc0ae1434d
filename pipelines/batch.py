"""A predict batch from what the user gave: inputs expanded into scenes (STAC items and
mosaics made virtual scenes), options checked against the model before any cluster
starts, the runner chosen, the batch run. The ``geoseg predict`` command and the Python
API (:func:`geoseg.predict`) both go through here, so they run the same batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import ConfigError, InputNotFoundError
from geoseg.names import SUMMARY
from geoseg.prediction.options import PredictOptions

from .cluster import ClusterChoice, choose_cluster

if TYPE_CHECKING:
    from geoseg.inputs.vrt import Warp
    from geoseg.model.meta import BundleMeta

    from .session import BatchResult


@dataclass(frozen=True)
class BatchInputs:
    """The scenes of a batch (files, URLs, virtual scenes) and where it runs."""

    paths: list[str]
    choice: ClusterChoice
    model: str
    model_sha256: str
    meta: BundleMeta
    cluster_asked: bool


def batch_inputs(scenes: Sequence[str | os.PathLike], out: Path, *, model: str | os.PathLike,
                 options: PredictOptions, scheduler: str | None = None,
                 cluster: str | None = None, workers: int | None = None,
                 dashboard: str | None = None, assets: Sequence[str] | None = None,
                 mosaic: bool = False, warp: Warp | None = None,
                 dry_run: bool = False, recursive: bool = False) -> BatchInputs:
    """Everything decided before a scene runs; options that do not fit the model, a
    missing model (``ConfigError``) or no scene at all (``InputNotFoundError``) raise here,
    in a second, before any cluster starts."""
    from geoseg.model.meta import file_sha256, read_meta

    from .inputs import expand_inputs

    model = os.fspath(model)
    if not Path(model).is_file():
        raise ConfigError(f"--model {model}: no such file; give a .safetensors bundle "
                          "(geoseg model create, geoseg train, or the shipped "
                          "models/buildings.safetensors)")
    meta = read_meta(model)
    choice = choose_cluster(scheduler=scheduler, cluster=cluster, workers=workers,
                            dashboard=dashboard, device=options.device)
    check_against_model(options, meta, local=choice.kind == "local")
    paths = expand_inputs(scenes, recursive=recursive, exclude=out)
    if not paths:
        raise InputNotFoundError(
            f"no raster found in {', '.join(map(str, scenes))}; give scene files, folders "
            "that hold .tif files, globs or a .txt list of paths")
    paths = virtual_scenes(paths, out, band_names=meta.bands, assets=assets, mosaic=mosaic,
                           warp=warp, dry_run=dry_run)
    return BatchInputs(paths, choice, model, file_sha256(model), meta,
                       cluster_asked=bool(workers or cluster))


def mosaic_warp(mosaic: bool, crs: str | None, resolution: float | None,
                resampling: str = "bilinear") -> Warp | None:
    """``--crs``/``--resolution`` as a checked :class:`~geoseg.inputs.vrt.Warp` (None without
    them); a ConfigError where one lacks the other or ``--mosaic``."""
    from geoseg.inputs.vrt import Warp

    if crs is None and resolution is None:
        return None
    if not mosaic:
        raise ConfigError("--crs and --resolution warp the scenes of a --mosaic; add "
                          "--mosaic (a single scene is predicted on its own grid)")
    if crs is None or resolution is None:
        raise ConfigError("--crs and --resolution go together: the CRS to warp the scenes "
                          "to and its pixel size")
    return Warp(crs, resolution, resampling)


def check_against_model(options: PredictOptions, meta: BundleMeta, *,
                        local: bool = True) -> None:
    """The options that can be judged from the model's header alone: tiling, band count,
    and, when the model runs on this machine (``local``), the device (see
    :func:`geoseg.model.devices.check_device_present`); a scheduler's or SLURM's workers
    judge their own devices when the batch starts (a login node has no GPU)."""
    from geoseg.model.devices import check_device_present
    from geoseg.tiling import check_tiling

    check_tiling(size=options.tile_size or meta.tile_size,
                 overlap=meta.overlap if options.overlap is None else options.overlap,
                 multiple=meta.output_stride)
    if options.bands is not None and len(options.bands) != meta.in_channels:
        raise ConfigError(f"--bands {','.join(map(str, options.bands))} selects "
                          f"{len(options.bands)} bands; the model takes {meta.in_channels} "
                          f"({', '.join(meta.bands)})")
    if local:
        check_device_present(options.device)
    if meta.fixed_tile and options.tile_size not in (None, meta.tile_size):
        raise ConfigError(f"--tile-size {options.tile_size}: the model's network takes tiles "
                          f"of {meta.tile_size} px only (a static input shape)")
    from geoseg.model.runtimes import check_runtime_fits

    # ``auto`` is decided where the model runs; remote workers report onnxruntime there
    check_runtime_fits(options.runtime, kind=meta.network, precision=options.precision,
                       compile=options.compile, onnxruntime=None if local else True)


def virtual_scenes(paths: list[str], out: Path, *, band_names: tuple[str, ...],
                   assets: Sequence[str] | None, mosaic: bool, dry_run: bool,
                   warp: Warp | None = None) -> list[str]:
    """STAC documents -> one VRT scene per item (OUT/.stac/); with ``mosaic``, every scene
    -> one VRT (OUT/mosaic.vrt; warped onto ``warp``'s grid first when given). A dry run
    writes them in a temporary folder."""
    from geoseg.inputs.stac import expand_stac, is_stac
    from geoseg.inputs.vrt import mosaic_vrt
    from geoseg.outputs.rasters import prepare_folder

    if not mosaic and not any(is_stac(p) for p in paths):
        return paths
    if dry_run:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="geoseg-dry-run-"))
    prepare_folder(out)
    paths = expand_stac(paths, band_names, out / ".stac",
                        assets=list(assets) if assets else None)
    if mosaic:
        paths = [str(mosaic_vrt(paths, out / "mosaic.vrt", warp=warp))]
    return paths


def run_predict(inputs: BatchInputs, out: Path, *, options: PredictOptions,
                runner: str = "auto", summary: Path | None = None, verbose: bool = False,
                echo: Callable[[str], object] = print) -> BatchResult:
    """Run the batch of ``inputs`` into ``out`` (see :func:`pipelines.session.predict_batch`)
    and write its summary (``OUT/summary.json`` by default)."""
    from geoseg.outputs.rasters import prepare_folder

    from .session import choose_runner, predict_batch

    runner = choose_runner(runner, inputs.choice, inputs.paths,
                           cluster_asked=inputs.cluster_asked)
    layout = inputs.choice.layout
    if runner == "dask" and layout is not None and layout.device != options.device:
        # --device cuda:N on a local cluster: its one worker is pinned to that GPU, which
        # it sees as cuda (the identity's device kind is the same)
        options = replace(options, device=layout.device)
    prepare_folder(out)  # an unwritable OUT fails here: nothing was written
    return predict_batch(inputs.choice, inputs.paths, out, model=inputs.model,
                         model_sha256=inputs.model_sha256, runner=runner, options=options,
                         summary=summary or out / SUMMARY, verbose=verbose, echo=echo)
