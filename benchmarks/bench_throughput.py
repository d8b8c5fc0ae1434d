"""Throughput of `geoseg predict` as users run it (a process, start-up included), against the
network alone and against the field, in one run. Ratios are what to compare: absolute times
on shared machines move by 15% or more between runs.

1. Field: the 4096^2 mirror-tiled enlargement of the OAM scene, smp Unet resnet18 (random
   weights, seed 0), tile 256, overlap 64, batch 8, ``--tta none``, 2 torch threads:
   * pure forward: a process that loads the same bundle and runs the same number of tiles
     in the same batches from tensors in memory (``predict_child forward``);
   * `geoseg predict` with its defaults (the in-process runner and ``--precision auto``:
     bfloat16 on CPUs with AMX/AVX512-BF16), with ``--precision float32``, and with
     ``--runner dask`` (a local cluster); the forward process runs at the same precisions;
   * pytorch-toolbelt's ImageSlicer + TileMerger over the scene in memory
     (``benchmarks/toolbelt_child.py``; toolbelt installed into benchmarks/work/toolbelt
     with ``pip install --target``, outside geoseg's environment).
   Targets: predict / forward <= 1.10; toolbelt / predict >= 1.5.
2. Ceiling: an 8192^2 enlargement (a GeoTIFF, 67 MPix) through `geoseg predict` with a 1x1
   convolution model (the pipeline's own cost) against a process that reads every block of
   the scene with rasterio and writes one band of it (the I/O floor), with COG and with
   ``--raster-format zarr`` outputs, in-process and on the Dask runner. Targets: MPix/s
   ratio >= 0.5 (issue 24: with zarr on the Dask runner).

With ``--baseline PATH`` (a checkout of another version: ``git worktree add /tmp/base
<commit>``) that version's `geoseg predict` runs beside this one's, interleaved. Printed and
appended to benchmarks/results/throughput.md.

    .venv/bin/python -m benchmarks.bench_throughput [--baseline /tmp/base] [--only field]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (OAM, ROOT, WORK, append_result, geoseg_seconds, mirror_enlarge,
                               require, table)

TOOLBELT = WORK / "toolbelt"
TOOLBELT_VERSION = "0.8.0"


def process_seconds(args: list[str], *, env: dict | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of one Python process (start-up included)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def install_toolbelt() -> Path:
    """pytorch-toolbelt (and the OpenCV it imports) in the benchmark's own folder."""
    if not (TOOLBELT / "pytorch_toolbelt").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(TOOLBELT), f"pytorch-toolbelt=={TOOLBELT_VERSION}",
                        "opencv-python-headless"], check=True)
    return TOOLBELT


def export_graph(model: Path) -> None:
    """The ONNX graph of ``model``, exported once (as a first run on a machine does) before
    anything is timed."""
    process_seconds(["-c", "from geoseg.model import load_for_prediction; "
                           f"load_for_prediction({str(model)!r}, device='cpu', "
                           "runtime='onnxruntime')"])


def field_inputs(size: int) -> tuple[Path, Path]:
    """The field benchmark's scene (the OAM enlargement at ``size``^2) and Unet r18 bundle,
    its ONNX graph exported."""
    from benchmarks.bench_predict import make_models

    model = make_models()["Unet"]
    scene = mirror_enlarge(require(OAM), size, WORK / f"oam_{size}.tif")
    export_graph(model)
    return scene, model


def predict(tree: Path, scene: Path, model: Path, *extra: str) -> float:
    out = WORK / "throughput-out"
    shutil.rmtree(out, ignore_errors=True)
    seconds = geoseg_seconds(tree, "predict", str(scene), "-m", str(model), "-o", str(out),
                             "--tta", "none", "--batch-size", "8", *extra)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def field(trees: dict, models: dict, size: int, *, toolbelt: bool) -> list[dict]:
    scene = mirror_enlarge(require(OAM), size, WORK / f"oam_{size}.tif")
    model = models["Unet"]
    export_graph(model)
    forward, out = process_seconds(["-m", "benchmarks.predict_child", "forward", str(scene),
                                    str(model), "8", "2"])
    resolved = json.loads(out.strip().splitlines()[-1])
    precision, runtime = resolved["precision"], resolved["runtime"]
    rows = [{"run": f"pure forward (process), {runtime} {precision} (predict's default "
                    "here)", "wall s": f"{forward:.1f}", "ratio": ""}]
    forward32 = forward
    if precision != "float32":
        forward32, _ = process_seconds(["-m", "benchmarks.predict_child", "forward",
                                        str(scene), str(model), "8", "2", "float32"])
        rows.append({"run": "pure forward (process), float32", "wall s": f"{forward32:.1f}",
                     "ratio": ""})
    here = next(iter(trees.values()))
    for name, tree in trees.items():
        seconds = predict(tree, scene, model)
        rows.append({"run": f"geoseg predict, {name}", "wall s": f"{seconds:.1f}",
                     "ratio": f"**{seconds / forward:.3f}** x forward ({precision})"})
        if tree == here:
            mine = seconds
    mine32 = mine
    if precision != "float32":
        mine32 = predict(here, scene, model, "--precision", "float32")
        rows.append({"run": "geoseg predict --precision float32", "wall s": f"{mine32:.1f}",
                     "ratio": f"**{mine32 / forward32:.3f}** x forward (float32)"})
    if runtime != "torch":
        forward_torch, _ = process_seconds(["-m", "benchmarks.predict_child", "forward",
                                            str(scene), str(model), "8", "2", "auto",
                                            "torch"])
        rows.append({"run": "pure forward (process), torch", "wall s": f"{forward_torch:.1f}",
                     "ratio": ""})
        torch_run = predict(here, scene, model, "--runtime", "torch")
        rows.append({"run": "geoseg predict --runtime torch", "wall s": f"{torch_run:.1f}",
                     "ratio": f"**{torch_run / forward_torch:.3f}** x forward (torch)"})
    dask = predict(here, scene, model, "--runner", "dask")
    rows.append({"run": "geoseg predict --runner dask (local cluster)",
                 "wall s": f"{dask:.1f}", "ratio": f"{dask / forward:.3f} x forward"})
    if toolbelt:
        path = install_toolbelt()
        out = WORK / "toolbelt-classes.tif"
        seconds, stdout = process_seconds(
            ["-m", "benchmarks.toolbelt_child", str(scene), str(model), str(out), "8", "2"],
            env={"PYTHONPATH": f"{path}{os.pathsep}{ROOT}"})
        out.unlink(missing_ok=True)
        version = json.loads(stdout.strip().splitlines()[-1])["version"]
        rows.append({"run": f"pytorch-toolbelt {version} ImageSlicer/TileMerger (float32, "
                            "as its docs run it)", "wall s": f"{seconds:.1f}",
                     "ratio": f"geoseg predict is **{seconds / mine:.2f}x** faster "
                              f"({seconds / mine32:.2f}x with --precision float32)"})
    return rows


def ceiling(trees: dict, models: dict, size: int) -> list[dict]:
    scene = mirror_enlarge(require(OAM), size, WORK / f"oam_{size}.tif")
    mpix = size * size / 1e6
    copy, _ = process_seconds(["-m", "benchmarks.predict_child", "copy", str(scene)])
    rows = [{"run": "rasterio read + write (process)", "wall s": f"{copy:.1f}",
             "MPix/s": f"{mpix / copy:.1f}", "ratio": ""}]
    runs = [(f"geoseg predict 1x1 model, {name}", tree, ()) for name, tree in trees.items()]
    here = next(iter(trees.values()))
    runs += [("geoseg predict 1x1 model --raster-format zarr", here,
              ("--raster-format", "zarr")),
             ("geoseg predict 1x1 model --raster-format zarr --runner dask", here,
              ("--raster-format", "zarr", "--runner", "dask")),
             ("geoseg predict 1x1 model --runner dask (COG)", here, ("--runner", "dask"))]
    for label, tree, extra in runs:
        seconds = predict(tree, scene, models["pixelwise"], *extra)
        rows.append({"run": label, "wall s": f"{seconds:.1f}",
                     "MPix/s": f"{mpix / seconds:.1f}",
                     "ratio": f"**{copy / seconds:.2f}** of read + write"})
    return rows


def main(argv: list[str] | None = None) -> None:
    from benchmarks.bench_predict import make_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="checkout of the version to compare")
    parser.add_argument("--only", choices=("field", "ceiling"))
    parser.add_argument("--size", type=int, default=4096, help="field scene side")
    parser.add_argument("--ceiling-size", type=int, default=8192)
    parser.add_argument("--no-toolbelt", action="store_true")
    args = parser.parse_args(argv)
    models = make_models()
    trees = {"this version": ROOT}
    if args.baseline:
        trees[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    text = ""
    if args.only in (None, "field"):
        rows = field(trees, models, args.size, toolbelt=not args.no_toolbelt)
        text += f"Field, {args.size}^2, Unet r18, tile 256/64, batch 8, tta none\n\n"
        text += table(rows, ["run", "wall s", "ratio"]) + "\n\n"
    if args.only in (None, "ceiling"):
        rows = ceiling(trees, models, args.ceiling_size)
        text += f"Ceiling, {args.ceiling_size}^2, 1x1 model\n\n"
        text += table(rows, ["run", "wall s", "MPix/s", "ratio"]) + "\n\n"
    append_result("throughput", text)


if __name__ == "__main__":
    main()
