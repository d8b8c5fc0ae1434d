"""``geoseg vectorize``: a thin shell over :func:`geoseg.vector.layer.vectorize_raster`."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_errors import one_line_errors


@click.command("vectorize")
@click.argument("classes_tif", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--out", "-o", "out", required=True, type=click.Path(path_type=Path),
              help="Vector file to write; its extension picks the format: .gpkg "
                   "(GeoPackage), .fgb (FlatGeobuf), .parquet (GeoParquet), .geojson, .shp.")
@click.option("--min-area", type=float, default=None,
              help="Merge regions smaller than this (square metres) into the neighbour "
                   "sharing their longest edge.")
@click.option("--simplify", type=float, default=None,
              help="Simplification tolerance in map units; shared edges stay shared.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4",
              show_default=True, help="Pixel connectivity of a region.")
@click.option("--classes", "classes", default=None,
              help="Classes to keep, comma-separated names or ids "
                   "(default: all but background and nodata).")
@click.option("--probabilities", type=click.Path(path_type=Path), default=None,
              help="probabilities.tif (uint8 band per class) for the mean_prob attribute.")
@click.option("--block-size", type=int, default=1024, show_default=True,
              help="Block edge in pixels; memory grows with its square.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes polygonizing blocks; the output does not depend on it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--allow-no-crs", is_flag=True, help="Accept a raster without a CRS.")
@one_line_errors
def vectorize(classes_tif: Path, out: Path, min_area: float | None, simplify: float | None,
              connectivity: str, classes: str | None, probabilities: Path | None,
              block_size: int, workers: int, overwrite: bool, allow_no_crs: bool) -> None:
    """Vectorize a class raster CLASSES_TIF into polygons, block by block."""
    from geoseg.vector.layer import vectorize_raster  # its imports only for this command

    keep = [c for c in classes.split(",") if c.strip()] if classes else None
    summary = vectorize_raster(
        classes_tif, out, block_size=block_size, min_area=min_area, simplify=simplify,
        connectivity=int(connectivity), keep_classes=keep, probabilities_path=probabilities,
        overwrite=overwrite, allow_no_crs=allow_no_crs, workers=workers)
    per_class = ", ".join(f"{k}: {v}" for k, v in summary["per_class"].items()) or "none"
    click.echo(f"{summary['path']}: {summary['features']} polygons ({per_class})")
