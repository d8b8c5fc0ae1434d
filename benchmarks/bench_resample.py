"""Scenes at another pixel size than the model's, through `geoseg predict` and `geoseg
evaluate` as processes: building IoU of the shipped 1 m model on real labelled scenes

* as they are (``--resample off``: what geoseg did before it knew the model's GSD),
* at the model's GSD on the fly (the default, ``--resample auto``),
* resampled to 1 m by hand first (``gdalwarp -tr 1 1 -r average``), the user's workaround,

with each run's wall time (start-up included) and the ratio to the first. Scenes: New
Brunswick's two 0.5 m chips (NRCan labels), the SpaceNet Atlanta 0.5 m chip, and the
Massachusetts demo scene enlarged to 0.3 m (cubic; labels are vectors, so they fit any
grid). Prints a markdown table and writes benchmarks/results/resample.md.

    python -m benchmarks.bench_resample
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, SHARED, WORK, publish, require

MODEL = ROOT / "models" / "buildings-massachusetts.safetensors"
NB_TRUTH = ["--attribute", "Niveau_2", "--map", "Building=building",
            *(f"--map={v}=background" for v in ("Vegetation", "Road", "Hydro", "Train"))]
CASES = [
    ("New Brunswick 1of2, 0.5 m", SHARED / "new_brunswick" / "23322E759967N_clipped_1m_1of2.tif",
     SHARED / "new_brunswick" / "BakerLake_2017_clipped.gpkg", NB_TRUTH, None),
    ("New Brunswick 2of2, 0.5 m", SHARED / "new_brunswick" / "23322E759967N_clipped_1m_2of2.tif",
     SHARED / "new_brunswick" / "BakerLake_2017_clipped.gpkg", NB_TRUTH, None),
    ("SpaceNet Atlanta, 0.5 m",
     SHARED / "spacenet" / "SN4_Atlanta_PS-RGB_732701_3729639_clipped.tif",
     SHARED / "spacenet" / "SN4_Atlanta_buildings_732701_3729639.geojson", [], None),
    ("Massachusetts 23429155 at 0.3 m", SHARED / "massachusetts" / "23429155_15_uint8_clipped.tif",
     SHARED / "massachusetts" / "23429155_15.gpkg", ["--attribute", "class", "--map",
                                                     "1=building"], 0.3),
]


def geoseg(*args: object) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from geoseg_pipelines.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"geoseg {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return took


def warp(src: Path, dst: Path, size: float, method: str) -> Path:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gdalwarp", "-q", "-overwrite", "-tr", str(size), str(size), "-r",
                        method, str(src), str(dst)], check=True)
    return dst


def building_iou(classes: Path, truth: Path, extra: list[str], out: Path) -> float:
    geoseg("evaluate", classes, "--truth", truth, *extra, "--json", out)
    report = json.loads(out.read_text())
    return report["classes"]["building"]["iou"]


def main() -> None:
    if shutil.which("gdalwarp") is None:
        sys.exit("gdalwarp is absent (apt-get install gdal-bin): the by-hand case needs it")
    work = WORK / "resample"
    rows = []
    for name, scene, truth, extra, enlarge in CASES:
        require(scene)
        if enlarge:
            scene = warp(scene, work / f"{scene.stem}_{enlarge:g}m.tif", enlarge, "cubic")
        by_hand = warp(scene, work / f"{scene.stem}_1m.tif", 1.0, "average")
        row: dict = {"scene": name}
        base = None
        for label, path, options in (("as is (--resample off)", scene, ["--resample", "off"]),
                                     ("at 1 m on the fly (auto)", scene, []),
                                     ("gdalwarp to 1 m by hand", by_hand, [])):
            out = work / "out" / label.split()[0].replace("(", "") / name.split(",")[0]
            seconds = geoseg("predict", path, "-m", MODEL, "-o", out, "--tta", "none",
                             "--overwrite", *options)
            classes = out / path.stem / "classes.tif"
            iou = building_iou(classes, truth, extra, out / "metrics.json")
            base = base or seconds
            row[label] = f"{iou:.3f} ({seconds:.1f} s, {seconds / base:.2f}x)"
        rows.append(row)
        print(json.dumps(row), flush=True)
    publish("resample", "Building IoU of the shipped 1 m model (`geoseg predict --tta none` "
            "+ `geoseg evaluate`; in brackets the predict process's wall time and its ratio "
            "to the first column)", rows)


if __name__ == "__main__":
    main()
