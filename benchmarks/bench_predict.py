"""Prediction benchmarks (issue: Foundation). Measured ratios, printed, not asserted.

1. Overhead: predict_scene wall time / pure forward time of the same tiles and batch size
   (smp Unet resnet18, random weights seed 0), on the OAM scene. Target <= 1.10.
2. Pipeline ceiling: megapixels/s with a 1x1-convolution model over a plain rasterio
   read + write of the same scene. Target >= 0.5.
3. Memory: peak RSS at 2048^2, 8192^2 and 16384^2 (mirror-tiled OAM), 1x1 model. Target:
   the largest within 1.25x of the smallest.
4. Against the field: the 4096^2 enlargement, Unet resnet18 (seed 0), 2 classes, tile 256,
   overlap 64, batch 8, 2 torch threads. Target <= 60 s and <= 700 MB, 441 tiles.
5. Test-time augmentation: the shipped model on the OAM scene with --tta flips (its
   default, 4 passes) and d4 (8 passes) against none. No target: what the default costs.

    .venv/bin/python -m benchmarks.bench_predict [--quick]

Each run is a fresh process (benchmarks/predict_child.py) so peak RSS is its own. Results go
to benchmarks/results/predict.md and .json.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import (OAM, RESULTS, ROOT, WORK, mirror_enlarge, require, run_child,
                               table)

SHIPPED = ROOT / "models" / "buildings-massachusetts.safetensors"


def make_models() -> dict:
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    WORK.mkdir(parents=True, exist_ok=True)
    paths = {}
    for arch, encoder in (("Unet", "resnet18"), ("pixelwise", "-")):
        path = WORK / f"{arch}.safetensors"
        if not path.exists():
            bundle = create_bundle(arch=arch, encoder=encoder,
                                   classes=make_classes(["background", "building"]),
                                   bands=("red", "green", "blue"), tile_size=256, overlap=64,
                                   seed=0, name=f"bench-{arch}")
            save_bundle(bundle, path)
        paths[arch] = path
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 16384^2 memory run")
    args = parser.parse_args(argv)
    require(OAM)
    models = make_models()
    rows = []

    # 1. overhead
    e2e = run_child("benchmarks.predict_child", "predict", OAM, models["Unet"], 2048, 8, 2)
    fwd = run_child("benchmarks.predict_child", "forward", OAM, models["Unet"], 8, 2)
    rows.append({"benchmark": "1. overhead: predict / pure forward (Unet r18, 2048^2)",
                 "measured": f"{e2e['seconds']:.1f} s / {fwd['seconds']:.1f} s = "
                             f"{e2e['seconds'] / fwd['seconds']:.3f}",
                 "target": "<= 1.10"})

    # 2. ceiling
    trivial = run_child("benchmarks.predict_child", "predict", OAM, models["pixelwise"],
                        2048, 8, 2)
    copy = run_child("benchmarks.predict_child", "copy", OAM)
    mp_pred = trivial["pixels"] / trivial["seconds"] / 1e6
    mp_copy = copy["pixels"] / copy["seconds"] / 1e6
    rows.append({"benchmark": "2. ceiling: 1x1-conv predict MP/s / rasterio read+write MP/s",
                 "measured": f"{mp_pred:.1f} / {mp_copy:.1f} = {mp_pred / mp_copy:.2f}",
                 "target": ">= 0.5"})

    # 3. memory
    sizes = (2048, 8192) if args.quick else (2048, 8192, 16384)
    peaks = {}
    for size in sizes:
        scene = OAM if size == 2048 else mirror_enlarge(OAM, size, WORK / f"oam_{size}.tif")
        peaks[size] = run_child("benchmarks.predict_child", "predict", scene,
                                models["pixelwise"], 2048, 8, 2)["peak_rss_mb"]
    detail = ", ".join(f"{s}^2: {p:.0f} MB" for s, p in peaks.items())
    rows.append({"benchmark": "3. memory: peak RSS largest / smallest (1x1 model)",
                 "measured": f"{detail}; ratio {peaks[max(sizes)] / peaks[min(sizes)]:.2f}",
                 "target": "<= 1.25"})

    # 4. against the field
    scene = mirror_enlarge(OAM, 4096, WORK / "oam_4096.tif")
    field = run_child("benchmarks.predict_child", "predict", scene, models["Unet"], 2048, 8, 2)
    rows.append({"benchmark": "4. field: 4096^2, Unet r18, tile 256/64, batch 8, 2 threads",
                 "measured": f"{field['seconds']:.1f} s, {field['peak_rss_mb']:.0f} MB, "
                             f"{field['tiles']} tiles",
                 "target": "<= 60 s, <= 700 MB, 441 tiles"})

    # 5. test-time augmentation
    tta = {mode: run_child("benchmarks.predict_child", "predict", OAM, SHIPPED, 2048, 8, 2,
                           mode)["seconds"] for mode in ("none", "flips", "d4")}
    rows.append({"benchmark": "5. tta: shipped model, flips / none and d4 / none (2048^2)",
                 "measured": f"{tta['flips']:.1f} s / {tta['none']:.1f} s = "
                             f"{tta['flips'] / tta['none']:.2f}; {tta['d4']:.1f} s / "
                             f"{tta['none']:.1f} s = {tta['d4'] / tta['none']:.2f}",
                 "target": "(4 and 8 passes)"})

    text = table(rows, ["benchmark", "measured", "target"])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict.md").write_text(text + "\n")
    (RESULTS / "predict.json").write_text(json.dumps(
        {"overhead": e2e | {"forward_seconds": fwd["seconds"]}, "ceiling": {
            "predict": trivial, "copy": copy}, "memory": peaks, "field": field,
        "tta_seconds": tta}, indent=2))


if __name__ == "__main__":
    main()
