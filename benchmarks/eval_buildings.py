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


def building_iou(model: Path, scene: Path, truth: Path, extra: list[str], tta: str) -> float:
    out = WORK / "buildings" / model.stem / tta
    geoseg_seconds(ROOT, "predict", scene, "-m", model, "-o", out, "--tta", tta, "--overwrite",
                   "--no-preview")
    metrics = out / f"{scene.stem}.json"
    geoseg_seconds(ROOT, "evaluate", out / scene.stem / "classes.tif", "--truth", truth, *extra,
                   "--json", metrics)
    return json.loads(metrics.read_text())["classes"]["building"]["iou"]


def main() -> None:
    models = [Path(m) for m in sys.argv[1:]] or [ROOT / "models" / "buildings.safetensors"]
    rows = []
    for name, scene, truth, extra in SCENES:
        require(scene)
        row = {"scene": name}
        for model in models:
            for tta in ("none", "flips"):
                iou = building_iou(model, scene, truth, extra, tta)
                row[f"{model.stem} ({tta})"] = f"{iou:.3f}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    publish("buildings", "Building IoU, `geoseg predict --tta T` + `geoseg evaluate`", rows)


if __name__ == "__main__":
    main()
