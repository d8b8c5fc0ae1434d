"""``geoseg info`` and ``geoseg model create``: a bundle's metadata, and bundles made
without training (untrained, or around existing smp weights). Registered by
:mod:`pipelines.cli` with ``add_command``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.model.tta import TTA_MODES

from .cli_errors import one_line_errors


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@one_line_errors
def info(model: str, as_json: bool) -> None:
    """Print a model bundle's metadata."""
    from geoseg.model.meta import file_sha256, read_meta

    meta = read_meta(model)
    if as_json:
        click.echo(meta.to_json())
        return
    from geoseg.model.runtimes import KIND_NAMES, runtimes_for

    rows = [("file", model), ("sha256", file_sha256(model)), ("name", meta.name),
            ("architecture", f"{meta.arch} / {meta.encoder}"),
            ("network", f"{KIND_NAMES[meta.network]}, {meta.output} out; runs on "
                        f"{' or '.join(runtimes_for(meta.network))}"
                        + (f"; batch of {meta.fixed_batch} only" if meta.fixed_batch else "")
                        + (f"; tiles of {meta.tile_size} px only" if meta.fixed_tile
                           else "")),
            ("bands", ", ".join(meta.bands)),
            ("scale", ", ".join(f"{v:g}" for v in meta.scale)),
            ("mean", ", ".join(f"{v:g}" for v in meta.mean)),
            ("std", ", ".join(f"{v:g}" for v in meta.std)),
            ("classes", ", ".join(f"{c.id}={c.name} ({c.color})" for c in meta.classes)),
            ("nodata class", meta.nodata_class),
            ("ground sample distance",
             "unknown" if meta.gsd is None else f"{meta.gsd:g} m/px"),
            ("input", f"{meta.input_dtype or 'unknown type'}, "
                      + ("range unknown" if meta.input_range is None else
                         "; ".join(f"{b} {lo:g}-{hi:g}" for b, (lo, hi)
                                   in zip(meta.bands, meta.input_range, strict=True)))),
            ("input stretch", "none (scenes read as they are)" if meta.stretch is None else
             f"each band's {meta.stretch[0]:g}-{meta.stretch[1]:g}th percentile onto the range"),
            ("tile size / overlap", f"{meta.tile_size} / {meta.overlap} px"),
            ("test-time augmentation", meta.tta),
            ("output stride", meta.output_stride),
            ("receptive field", f"{meta.receptive_field} px")]
    rows += [(f"provenance.{k}", json.dumps(v) if isinstance(v, (dict, list)) else v)
             for k, v in sorted(meta.provenance.items())]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.group("model")
def model() -> None:
    """Create, import and export model bundles."""


@model.command("create")
@click.option("--arch", default="Unet", show_default=True, help="smp architecture name.")
@click.option("--encoder", default="resnet18", show_default=True, help="smp encoder name.")
@click.option("--classes", required=True, help="Class names in id order, e.g. background,building.")
@click.option("--bands", required=True,
              help="Input band count (3) or band names in order (red,green,blue).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="The bundle to write (.safetensors).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="An smp state_dict (.pt/.pth via weights_only, or .safetensors).")
@click.option("--tile-size", default=256, show_default=True,
              help="Tile size predict uses by default, in pixels.")
@click.option("--overlap", default=64, show_default=True,
              help="Tile overlap predict uses by default, in pixels.")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none",
              show_default=True, help="Default test-time augmentation of predict.")
@click.option("--scale", help="Per-band multiplier to [0, 1], comma separated (default 1/255).")
@click.option("--mean", help="Per-band mean after scaling, comma separated (default 0.5).")
@click.option("--std", help="Per-band std after scaling, comma separated (default 0.25).")
@click.option("--gsd", type=float,
              help="Ground sample distance of the training data, metres per pixel.")
@click.option("--input-dtype", type=click.Choice(["uint8", "uint16", "int16", "float32"]),
              help="Pixel type of the training data (default uint8 with --scale 1/255).")
@click.option("--input-range", metavar="LOW,HIGH",
              help="Raw value range of the training data, one LOW,HIGH for every band or "
                   "LOW,HIGH;LOW,HIGH;... per band (default 0,255 with --scale 1/255).")
@click.option("--stretch", metavar="LOW,HIGH",
              help="Percentiles the training scenes' bands were each stretched from onto "
                   "the input range (e.g. 2,98); predict then stretches every scene so.")
@click.option("--name", default=None, help="Model name (default: the output file's stem).")
@click.option("--seed", default=0, show_default=True, help="Seed for untrained weights.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@one_line_errors
def create(arch: str, encoder: str, classes: str, bands: str, out: str, weights: str | None,
           tile_size: int, overlap: int, tta: str, scale: str | None, mean: str | None,
           std: str | None, gsd: float | None, input_dtype: str | None,
           input_range: str | None, stretch: str | None, name: str | None, seed: int,
           overwrite: bool) -> None:
    """Make a bundle: untrained, or around an existing smp state_dict."""
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, load_state_dict, save_bundle
    from geoseg.outputs.rasters import prepare_output

    band_names = (tuple(f"band{i}" for i in range(1, int(bands) + 1)) if bands.isdigit()
                  else tuple(b.strip() for b in bands.split(",")))

    out_path = prepare_output(Path(out), overwrite=overwrite)
    if weights:
        check_bundle_weights(weights, arch=arch, encoder=encoder, bands=len(band_names),
                             classes=len(classes.split(",")))
    state = load_state_dict(weights) if weights else None
    bundle = create_bundle(arch=arch, encoder=encoder, classes=make_classes(classes.split(",")),
                           bands=band_names, scale=_floats(scale), mean=_floats(mean),
                           std=_floats(std), tile_size=tile_size, overlap=overlap, tta=tta,
                           state_dict=state, name=name or out_path.stem, seed=seed,
                           gsd=gsd, input_dtype=input_dtype,
                           input_range=[_floats(r) or [] for r in input_range.split(";")]
                           if input_range else None, stretch=_floats(stretch),
                           provenance={"source": "weights: " + str(weights) if weights
                                       else "untrained (random weights)"})
    digest = save_bundle(bundle, out_path)
    click.echo(f"wrote {out_path} ({arch}/{encoder}, {len(band_names)} bands, "
               f"{len(bundle.meta.classes)} classes, sha256 {digest[:12]})")


def _floats(text: str | None) -> list[float] | None:
    """Comma-separated numbers or fractions (1/255), as the help shows them."""
    from fractions import Fraction

    from geoseg.errors import ConfigError

    if text is None:
        return None
    try:
        return [float(Fraction(v.strip())) for v in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{text!r} must be comma-separated numbers or fractions "
                          "(e.g. 1/10000)") from None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",")]


@model.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="The bundle to write (.safetensors).")
@click.option("--mlm", type=click.Path(dir_okay=False),
              help="A STAC item with the MLM extension describing the file (bands, value "
                   "scaling, input shape, classes).")
@click.option("--classes", help="Class names in output-channel order.")
@click.option("--bands", help="Band names in input-channel order (red,green,blue).")
@click.option("--scale", help="Per-band multiplier (or one for all), e.g. 1/255.")
@click.option("--mean", help="Per-band mean after scaling (or one for all).")
@click.option("--std", help="Per-band std after scaling (or one for all).")
@click.option("--tile-size", type=int, help="Tile size in pixels (a static graph's own).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: a quarter of "
                                          "the tile, at most 64).")
@click.option("--gsd", type=float, help="Ground sample distance, metres per pixel.")
@click.option("--output", "output_kind", type=click.Choice(["logits", "probabilities"]),
              help="What the network returns (default: detected on a random tile).")
@click.option("--output-stride", type=int,
              help="The network's downsampling factor (32 for smp encoders); default: "
                   "the smallest step of tile sizes it accepts.")
@click.option("--name", help="Model name (default: the file's, or its metadata's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@one_line_errors
def import_model(file: str, out: str, mlm: str | None, classes: str | None,
                 bands: str | None, scale: str | None, mean: str | None, std: str | None,
                 tile_size: int | None, overlap: int | None, gsd: float | None,
                 output_kind: str | None, output_stride: int | None, name: str | None,
                 overwrite: bool) -> None:
    """Wrap an ONNX graph, a TorchScript module or a torch.export .pt2 program in a bundle.

    Metadata from the ONNX file (QGIS Deepness keys, or geoseg's own export), --mlm and
    the flags; the file runs once on a random tile to check its output and measure its
    output stride and receptive field. Pickled checkpoints are refused."""
    from geoseg.model.importing import import_program
    from geoseg.model.programs import save_program
    from geoseg.model.runtimes import KIND_NAMES
    from geoseg.outputs.rasters import prepare_output

    out_path = prepare_output(Path(out), overwrite=overwrite)
    flags = {"classes": _names(classes), "bands": _names(bands), "scale": _floats(scale),
             "mean": _floats(mean), "std": _floats(std), "tile_size": tile_size,
             "overlap": overlap, "gsd": gsd, "output": output_kind, "name": name,
             "output_stride": output_stride}
    meta, data = import_program(file, mlm=mlm, flags=flags)
    digest = save_program(meta, data, out_path)
    click.echo(f"wrote {out_path} ({KIND_NAMES[meta.network]}, {meta.in_channels} bands, "
               f"{len(meta.classes)} classes, {meta.output} out, output stride "
               f"{meta.output_stride}, receptive field {meta.receptive_field} px, sha256 "
               f"{digest[:12]})")


@model.command("export")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "pt2"]), default="onnx",
              show_default=True, help="ONNX graph or torch.export program.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for NAME.onnx (or .pt2) and its STAC MLM item NAME.json.")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
@one_line_errors
def export_model(bundle: str, fmt: str, out: str, overwrite: bool) -> None:
    """Export a bundle's network with its normalization and softmax in the graph, and a
    STAC item (MLM extension) describing it; ONNX files carry QGIS Deepness metadata."""
    from geoseg.model.exporting import export_bundle
    from geoseg.model.meta import read_meta

    meta = read_meta(bundle)
    if meta.network == "onnx":
        from geoseg.errors import ConfigError

        raise ConfigError(f"{bundle}: its network is an ONNX graph already; geoseg exports "
                          "torch networks (smp, TorchScript, torch.export)")
    from geoseg.model.bundle import load_bundle

    target, item = export_bundle(load_bundle(bundle), fmt=fmt, out_dir=out,
                                 overwrite=overwrite)
    click.echo(f"wrote {target} and {item}")


def check_bundle_weights(path: str, *, arch: str, encoder: str, bands: int,
                         classes: int) -> None:
    """A geoseg bundle given as --weights: refused in one line that says which --arch,
    --encoder, --bands and --classes wrap its weights when they are not those given."""
    from geoseg.errors import BundleError, ConfigError
    from geoseg.model.meta import read_meta

    if not str(path).endswith(".safetensors"):
        return
    try:
        meta = read_meta(path)
    except BundleError:  # a plain safetensors state_dict
        return
    given = (arch, encoder, bands, classes)
    if given != (meta.arch, meta.encoder, meta.in_channels, len(meta.classes)):
        raise ConfigError(
            f"--weights {path} is a geoseg bundle of {meta.arch}/{meta.encoder} with "
            f"{meta.in_channels} bands and {len(meta.classes)} classes; create with --arch "
            f"{meta.arch} --encoder {meta.encoder} --bands {','.join(meta.bands)} --classes "
            f"{','.join(c.name for c in meta.classes)} to wrap its weights")
