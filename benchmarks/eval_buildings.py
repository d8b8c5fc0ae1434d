"""Building IoU of building models through `geoseg predict` + `geoseg evaluate` (processes)
on the demo scene and the other labelled building sources in ../shared/data, for the
models given (default: the shipped one). Prints a markdown table and writes
benchmarks/results/buildings.md.

    python -m benchmarks.eval_buildings models/a.safetensors models/b.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.common import ROOT, SHARED, WORK, geoseg_seconds, publish, require

NB_MAP = ["--attribute", "Niveau_2", "--map", "Building=building",
          *(f"--map={v}=background" for v in ("Vegetation", "Road", "Hydro", "Train"))]
SCENES = [
    ("demo 23429155 (Massachusetts, 1 m)",
     ROOT / "data" / "demo" / "23429155_15_uint8_clipped.tif",
     ROOT / "data" / "demo" / "23429155_15.gpkg", ["--attribute", "class", "--map", "1=building"]),
    ("SpaceNet Atlanta (0.5 m)",
     SHARED / "spacenet" / "SN4_Atlanta_PS-RGB_732701_3729639_clipped.tif",
     SHARED / "spacenet" / "SN4_Atlanta_buildings_732701_3729639.geojson", []),
    ("New Brunswick 1of2 (0.5 m)",
     SHARED / "new_brunswick" / "23322E759967N_clipped_1m_1of2.tif",
     SHARED / "new_brunswick" / "BakerLake_2017_clipped.gpkg", NB_MAP),
    ("New Brunswick 2of2 (0.5 m)",
     SHARED / "new_brunswick" / "23322E759967N_clipped_1m_2of2.tif",
     SHARED / "new_brunswick" / "BakerLake_2017_clipped.gpkg", NB_MAP),
]


def building_iou(model: Path, scene: Path, truth: Path, extra: list[str],
                 tta: str) -> tuple[float, float]:
    """(building IoU, seconds of the `geoseg predict` process)."""
    out = WORK / "buildings" / model.stem / tta
    seconds = geoseg_seconds(ROOT, "predict", scene, "-m", model, "-o", out, "--tta", tta,
                             "--overwrite", "--no-preview")
    metrics = out / f"{scene.stem}.json"
    geoseg_seconds(ROOT, "evaluate", out / scene.stem / "classes.tif", "--truth", truth, *extra,
                   "--json", metrics)
    return json.loads(metrics.read_text())["classes"]["building"]["iou"], seconds


def main() -> None:
    models = [Path(m) for m in sys.argv[1:]] or [ROOT / "models" / "buildings.safetensors"]
    rows = []
    seconds: dict[str, float] = {}
    for name, scene, truth, extra in SCENES:
        require(scene)
        row = {"scene": name}
        for model in models:
            for tta in ("none", "flips"):
                iou, took = building_iou(model, scene, truth, extra, tta)
                column = f"{model.stem} ({tta})"
                row[column] = f"{iou:.3f}"
                seconds[column] = seconds.get(column, 0.0) + took
        rows.append(row)
        print(json.dumps(row), flush=True)
    rows.append({"scene": "`geoseg predict` seconds, all four scenes", **{
        k: f"{v:.1f}" for k, v in seconds.items()}})
    print(json.dumps(rows[-1]), flush=True)
    publish("buildings", "Building IoU, `geoseg predict --tta T` + `geoseg evaluate`", rows)


if __name__ == "__main__":
    main()
