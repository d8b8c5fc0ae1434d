"""``geoseg train`` and ``geoseg evaluate``: thin shells over geoseg.training.loop and
geoseg.training.evaluate.

Both are module-level click commands that pipelines.cli registers with ``add_command``.
They also stand alone (tests call them through click.testing.CliRunner): a GeosegError
becomes one ``error: ...`` line on stderr and exit code 1, the traceback only with --debug.
"""

from __future__ import annotations

from collections.abc import Iterable

import click
import yaml

from geoseg.errors import ConfigError

from .cli_errors import one_line_errors


def _parse_overrides(items: Iterable[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set steps=100")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _parse_nodata(text: str | None) -> float | str | None:
    """--truth-nodata: absent -> "auto" (see LabelSpec.nodata), "none" -> None, else a number."""
    from geoseg.training.labels import AUTO_NODATA

    if text is None:
        return AUTO_NODATA
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--truth-nodata {text!r}: expected the label value that means "
                          "no label (a number, e.g. --truth-nodata 0) or none") from None
    return int(value) if value.is_integer() else value


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a recipe field (YAML value), e.g. --set steps=50. Repeatable.")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help="Bundle to write (default: the recipe's output).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the recipe's last checkpoint when there is one.")
@click.option("--overwrite", is_flag=True,
              help="Replace the bundle if it exists (the recipe's output may be the shipped "
                   "model: without this, training refuses before it starts).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--export", "export_format", type=click.Choice(["onnx", "pt2"]),
              help="Also export the trained network beside the bundle (NAME.onnx or .pt2 "
                   "and its STAC MLM item NAME.json), as `geoseg model export` does.")
@one_line_errors
def train_command(recipe: str, overrides: tuple[str, ...], out: str | None, resume: bool,
                  overwrite: bool, progress: bool, export_format: str | None) -> None:
    """Train a model from the scenes and labels of RECIPE (YAML, see configs/train/)."""
    from pathlib import Path

    from geoseg.training.loop import train
    from geoseg.training.recipe import load_recipe, missing_data

    loaded = load_recipe(recipe, overrides=_parse_overrides(overrides))
    target = Path(out or loaded.output)
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} exists{' (the recipe output)' if not out else ''}; pass "
                          "--out NEW.safetensors to write another file, or --overwrite to "
                          "replace it")
    missing_data(loaded, source=recipe)
    result = train(loaded, resume=resume, progress=progress, output=out)
    m = result.metrics
    click.echo(f"{result.bundle}: {result.steps} steps in {result.seconds / 60:.1f} min; "
               f"best validation mIoU {m['validation_miou']:.4f} at step {result.best_step}; "
               + ", ".join(f"IoU {k} {v:.4f}" for k, v in m["per_class_iou"].items()
                           if v is not None))
    if export_format:
        from geoseg.model.bundle import load_bundle
        from geoseg.model.exporting import export_bundle

        exported, item = export_bundle(load_bundle(result.bundle), fmt=export_format,
                                       out_dir=Path(result.bundle).parent, overwrite=True)
        click.echo(f"exported {exported} and {item}")


@click.command("evaluate")
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.option("--truth", "-t", required=True, type=click.Path(),
              help="Reference labels: vector (GeoPackage, GeoJSON, shapefile) or raster.")
@click.option("--attribute", help="Vector field holding the class (default: every polygon "
                                  "is the one non-background class).")
@click.option("--map", "mapping", multiple=True, metavar="VALUE=CLASS",
              help="Label value -> class name, e.g. --map Building=building. Repeatable; "
                   "CLASS 'ignore' leaves those pixels out. Default: values are class ids "
                   "or names.")
@click.option("--unlabelled", type=click.Choice(["background", "ignore"]),
              default="background", show_default=True,
              help="What pixels no truth polygon covers are.")
@click.option("--layer", help="Vector layer, when the truth file has several.")
@click.option("--object-class", "object_classes", multiple=True,
              help="Class scored with object F1 (default: building-like names). Repeatable.")
@click.option("--min-area", type=float, default=20.0, show_default=True,
              help="Objects smaller than this many pixels are not scored (SpaceNet: 20).")
@click.option("--truth-nodata", metavar="VALUE|none",
              help="Label raster value that means no label, overriding the raster's nodata "
                   "tag; 'none': no value does. Default: the tag, unless the tag is also a "
                   "class value (e.g. nodata 0 where 0 is background): then it is read as "
                   "that class, with a warning. Ignored for vector truth.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the metrics as JSON here.")
@one_line_errors
def evaluate_command(prediction: str, truth: str, attribute: str | None,
                     mapping: tuple[str, ...], unlabelled: str, layer: str | None,
                     object_classes: tuple[str, ...], min_area: float,
                     truth_nodata: str | None, json_path: str | None) -> None:
    """Score a class raster PREDICTION (from geoseg predict) against --truth labels."""
    from geoseg.training.evaluate import (
        EvaluateOptions,
        evaluate_prediction,
        format_table,
        write_report,
    )
    from geoseg.training.labels import LabelSpec

    pairs = {}
    for item in mapping:
        value, sep, name = item.partition("=")
        if not sep:
            raise ConfigError(f"--map {item!r}: expected VALUE=CLASS, e.g. --map 1=building")
        pairs[value.strip()] = name.strip()
    options = EvaluateOptions(
        labels=LabelSpec(attribute=attribute, mapping=pairs, unlabelled=unlabelled,
                         layer=layer, nodata=_parse_nodata(truth_nodata)),
        object_classes=tuple(object_classes) or None, min_area=min_area)
    report = evaluate_prediction(prediction, truth, options=options)
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(format_table(report))
    if json_path:
        write_report(report, json_path)
