"""The ``geoseg`` command: a thin shell over library functions.

Errors a user can cause (``GeosegError``) become one line on stderr and exit code 1; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from geoseg import __version__
from geoseg.model.devices import DEVICES, PRECISIONS, check_device
from geoseg.model.runtimes import RUNTIMES
from geoseg.model.tta import TTA_MODES
from geoseg.prediction.stitch import WEIGHT_WINDOWS
from geoseg.vector.files import FORMAT_NAMES

from .cli_errors import debug_wanted, one_line_errors
from .cluster import RUNNERS

if TYPE_CHECKING:
    from geoseg.prediction.options import PredictOptions

    from .session import BatchResult

_F = TypeVar("_F", bound=Callable[..., Any])

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "predict.yaml"


@click.group(name="geoseg")  # its name under `rio` too (a rasterio.rio_plugins entry point)
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Segment satellite and aerial scenes of any size with smp models."""
    ctx.ensure_object(dict)["debug"] = debug
    if not debug:
        quiet_library_warnings()
        # GDAL's errors in its own threads (multi-threaded compression of a COG's tiles:
        # "_TIFFVSetField: ... thread_job_0.tif: Bad value 1 for ExtraSamples tag") reach
        # its default handler, which prints to stderr; rasterio's handler, which turns the
        # others into exceptions and logs, is per thread. Local workers inherit this. (This
        # GDAL has no "OFF" value: it would create a file named OFF in the working folder.)
        os.environ.setdefault("CPL_LOG", os.devnull)


def quiet_library_warnings() -> None:
    """Python warnings from the libraries never reach the terminal (geoseg says what
    matters in its own words); ``--debug`` shows them, and ``geoseg predict`` keeps them in
    OUT/geoseg.log."""
    import logging

    logging.captureWarnings(True)
    logger = logging.getLogger("py.warnings")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def fail(message: str) -> NoReturn:
    """Print one error line and exit 1 (for errors found by the CLI itself)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--device checked against the one list of device names (a usage error, exit 2)."""
    from geoseg.errors import ConfigError

    try:
        return None if value is None else check_device(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


def predict_options(function: _F) -> _F:
    """Options shared by every command that predicts (``predict`` and ``batch``)."""
    options = [
        click.option("--model", "-m", required=True, type=click.Path(dir_okay=False),
                     help="Model bundle (.safetensors) from `geoseg model create` or "
                          "`geoseg train`."),
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
                     help="Output folder; each scene writes OUT/<scene stem>/."),
        click.option("--config", type=click.Path(dir_okay=False),
                     help="YAML of predict options (see configs/predict.yaml)."),
        click.option("--tile-size", type=int, help="Tile size in pixels (model's default)."),
        click.option("--overlap", type=int, help="Tile overlap in pixels (model's default)."),
        click.option("--stitch", type=click.Choice(list(WEIGHT_WINDOWS)),
                     help="blend: weighted average; center: each tile keeps its core."),
        click.option("--tta", type=click.Choice(TTA_MODES),
                     help="Test-time augmentation: average 4 flips or all 8 rotations/"
                          "reflections of each tile (4x/8x the compute; model's default)."),
        click.option("--block-size", type=int,
                     help="Block side in pixels, rounded to whole tiles (default 1024)."),
        click.option("--batch-size", type=int, help="Tiles per forward pass (default 8)."),
        click.option("--device", callback=_device,
                     help=f"{', '.join(DEVICES)} or cuda:N; auto: CUDA when present, else "
                          "CPU."),
        click.option("--precision", type=click.Choice(PRECISIONS),
                     help="Network compute type; auto: bfloat16 on CUDA and on CPUs with "
                          "native bfloat16 (AVX512-BF16/AMX), else float32."),
        click.option("--runtime", type=click.Choice(RUNTIMES),
                     help="What runs the network; auto: onnxruntime on a CPU in float32 "
                          "(an ONNX graph, or an smp network exported once and cached), "
                          "torch on CUDA and for TorchScript/.pt2 programs."),
        click.option("--threads", type=int, help="CPU threads of the network per process."),
        click.option("--compile/--no-compile", default=None,
                     help="torch.compile the network: a minute of compiling, then a few "
                          "percent faster per batch on a CPU; for scenes of thousands of "
                          "tiles."),
        click.option("--bands", "-b", "--bidx", "bands",
                     help="1-based scene bands to feed the model, e.g. 3,2,1 (rio's -b/--bidx "
                          "too)."),
        click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                     help="GDAL COG creation option of the output rasters, repeatable, e.g. "
                          "--co COMPRESS=ZSTD --co LEVEL=9 (rio's --co)."),
        click.option("--stretch", metavar="LOW,HIGH",
                     help="Map each band's LOW-th..HIGH-th percentile (from overviews) onto "
                          "the model's input range, e.g. 2,98 for uint16 reflectance."),
        click.option("--input-range", metavar="LOW,HIGH",
                     help="The scene's value range, mapped onto the model's input range, "
                          "e.g. 0,10000."),
        click.option("--resample", type=click.Choice(["auto", "off"]),
                     help="auto: a scene more than 1.25x off the model's pixel size is "
                          "predicted at the model's (tiles resampled on the fly, outputs on "
                          "the scene's grid); off: predict at the scene's own pixel size."),
        click.option("--probabilities/--no-probabilities", default=None,
                     help="Also write probabilities.tif (uint8, one band per class)."),
        click.option("--preview/--no-preview", default=None,
                     help="Write preview.png, the scene with its classes and a legend "
                          "(default on)."),
        click.option("--vectorize/--no-vectorize", default=None,
                     help="Also write polygons (polygons.gpkg, or --vector-format)."),
        click.option("--vector-format", type=click.Choice(FORMAT_NAMES),
                     help="Format of the polygons with --vectorize (default gpkg): "
                          "GeoPackage, FlatGeobuf, GeoParquet, GeoJSON or shapefile."),
        click.option("--raster-format", type=click.Choice(["cog", "zarr"]),
                     help="cog (default): classes.tif (+ probabilities.tif); zarr: both in "
                          "one Zarr v3 group, prediction.zarr, whose chunks the blocks "
                          "write in parallel (GeoZarr and CF georeferencing)."),
        click.option("--overwrite/--no-overwrite", default=None,
                     help="Replace existing outputs."),
        click.option("--allow-no-crs/--no-allow-no-crs", default=None,
                     help="Accept scenes without a CRS (outputs have none either)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def resolve_options(config: str | None, **overrides: Any) -> PredictOptions:
    """configs/predict.yaml, then ``--config``, then command-line options."""
    from geoseg.prediction.options import PredictOptions, load_predict_options, options_from

    base = load_predict_options(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else PredictOptions()
    if config:
        from geoseg.config import load_yaml

        data = load_yaml(config)
        base = options_from(data.get("predict", data), base)
    return options_from(overrides, base)


@cli.command()
@click.argument("scenes", nargs=-1, required=True)
@predict_options
@click.option("--scheduler", envvar="GEOSEG_SCHEDULER",
              help="Address of a running Dask scheduler (tcp://HOST:PORT); default "
                   "$GEOSEG_SCHEDULER, else a local cluster.")
@click.option("--cluster", "cluster_profile", type=click.Path(dir_okay=False),
              help="Cluster profile YAML, e.g. configs/cluster/slurm.yaml.")
@click.option("--workers", type=int,
              help="Worker processes of the local cluster (default: one per GPU; on a "
                   "CPU machine one worker in this process, a thread per core), or SLURM "
                   "jobs of a --cluster profile.")
@click.option("--dry-run", is_flag=True,
              help="Plan the scenes and show the cluster (SLURM job script), run nothing.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Where to write the batch summary (default OUT/summary.json).")
@click.option("--dashboard", metavar="ADDRESS",
              help="Dashboard of the local cluster: HOST:PORT, :PORT for every interface, "
                   "or none (default 127.0.0.1:8787, localhost only).")
@click.option("--runner", type=click.Choice(RUNNERS), default="auto", show_default=True,
              help="local: every scene in this process; dask: a cluster; auto: local for "
                   "a batch of up to 268 MPix in all (a 16384^2 scene) unless a cluster is "
                   "asked for.")
@click.option("--assets", metavar="KEY,KEY,...",
              help="STAC inputs: the asset keys holding the model's bands, in its band "
                   "order (default: matched by asset key, eo:bands name or common name).")
@click.option("--recursive", "-r", is_flag=True,
              help="Also take the rasters in the sub-folders of folders given as SCENES.")
@click.option("--mosaic", is_flag=True,
              help="Predict the scenes as one: adjacent scenes in one CRS on one pixel grid "
                   "become OUT/mosaic.vrt, predicted into OUT/mosaic/ with no seam at their "
                   "borders.")
@click.option("--crs", "mosaic_crs", metavar="CRS",
              help="With --mosaic: warp every scene to this CRS (e.g. EPSG:32618) on one "
                   "pixel grid first, on the fly (GDAL warped VRTs); needs --resolution.")
@click.option("--resolution", type=float, metavar="PIXEL_SIZE",
              help="With --crs: the mosaic's pixel size in the CRS's units.")
@click.option("--warp-resampling", type=click.Choice(["nearest", "bilinear", "cubic",
                                                      "average"]),
              default="bilinear", show_default=True,
              help="With --crs: how the scenes are read onto the mosaic's grid.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also show library logs and warnings on stderr (always in OUT/geoseg.log).")
@one_line_errors
def predict(scenes: tuple[str, ...], model: str, out: str, config: str | None,
            scheduler: str | None, cluster_profile: str | None, workers: int | None,
            dry_run: bool, summary_path: str | Path | None, dashboard: str | None,
            runner: str, assets: str | None, recursive: bool, mosaic: bool,
            mosaic_crs: str | None,
            resolution: float | None, warp_resampling: str, verbose: bool,
            **overrides: Any) -> None:
    """Predict SCENES (files, folders, globs or .txt lists of paths) into
    OUT/<scene stem>/ on a Dask cluster; complete scenes are skipped on a rerun."""
    from .batch import batch_inputs, mosaic_warp, run_predict
    from .cluster import describe

    # options, the model and the cluster choice: a ConfigError (exit 2) in a second
    warp = mosaic_warp(mosaic, mosaic_crs, resolution, warp_resampling)
    options = resolve_options(config, **overrides)
    inputs = batch_inputs(scenes, Path(out), model=model, options=options,
                          scheduler=scheduler, cluster=cluster_profile, workers=workers,
                          dashboard=dashboard, mosaic=mosaic, warp=warp, dry_run=dry_run,
                          recursive=recursive,
                          assets=[k.strip() for k in assets.split(",")] if assets else None)
    if dry_run:
        from .run import dry_run_table  # dask: only where a cluster is described

        click.echo(describe(inputs.choice))
        click.echo(dry_run_table(inputs.paths, out, model=model, options=options,
                                 model_sha256=inputs.model_sha256))
        return
    try:
        result = run_predict(inputs, Path(out), options=options, runner=runner,
                             summary=Path(summary_path) if summary_path else None,
                             verbose=verbose or debug_wanted(click.get_current_context()),
                             echo=click.echo)
    except KeyboardInterrupt:  # before any scene was submitted: nothing to keep
        click.echo("error: interrupted before any scene started; nothing was kept", err=True)
        sys.exit(130)
    report_batch(result)


def report_batch(result: BatchResult) -> None:
    """The table, the summary's place and the closing line; exit 130 (Ctrl-C) or 1 (a scene
    failed) as the batch ended."""
    from .outcomes import table_lines

    for line in table_lines(result.outcomes):
        click.echo(line)
    if result.summary_error is None:
        click.echo(f"summary: {result.summary}")
    else:
        click.echo(f"error: {result.summary}: cannot write the summary "
                   f"({result.summary_error}); the table above is the only record", err=True)
    outcomes = result.outcomes
    if result.interrupted:
        done = sum(o.status in ("done", "skipped") for o in outcomes)
        click.echo(f"error: interrupted: {done} of {len(outcomes)} scene(s) complete and "
                   "kept, the others removed; rerun the same command to finish", err=True)
        sys.exit(130)
    failed = result.failed
    if failed and debug_wanted(click.get_current_context()) and failed[0].exception:
        raise failed[0].exception
    if failed:
        where = (f"see {result.summary}" if result.summary_error is None
                 else f"library logs in {result.log}")
        fail(f"{len(failed)} of {len(outcomes)} scene(s) failed ({where})")


def _register() -> None:
    from .cli_model import info, model
    from .cli_train import evaluate_command, train_command
    from .cli_vectorize import vectorize

    for command in (info, model, vectorize, train_command, evaluate_command):
        cli.add_command(command)


_register()


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
