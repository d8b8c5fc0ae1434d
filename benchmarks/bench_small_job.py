"""A small job through `geoseg predict`: what start-up costs a user with one small scene.

Two jobs, `geoseg predict` as a process (default runner: in-process for a batch this
small, defaults otherwise) against `geoseg info` of the same model (the command's own
start-up: Python, click, reading the bundle's header):

* ``chip``: a 200 x 200 chip of the bundled demo scene with the shipped demo model, at the
  model's pixel size (issue 23's small job; needs nothing from ../shared);
* ``resampled``: a 512 x 512 crop of the 0.1 m OAM scene with the 1 m Massachusetts model,
  resampled to the model's pixel size on the way (``--tta none``).

With ``--baseline PATH`` (a checkout of another version) its runs are interleaved with
these. Medians of ``--repeat`` runs; the overhead is predict minus info. Appended to
benchmarks/results/small_job.md.

    .venv/bin/python -m benchmarks.bench_small_job [--baseline /tmp/base] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from benchmarks.common import (OAM, RESULTS, ROOT, WORK, clean_profile, geoseg_seconds,
                               require, table)

MODEL = ROOT / "models" / "buildings-massachusetts.safetensors"
DEMO_MODEL = ROOT / "models" / "buildings.safetensors"
DEMO_SCENE = ROOT / "data" / "demo" / "23429155_15_uint8_clipped.tif"


def crop(size: int = 512, source: Path = OAM, name: str = "oam_crop") -> Path:
    """The top left ``size`` x ``size`` pixels of ``source``, georeferenced."""
    import rasterio
    from rasterio.windows import Window

    path = WORK / f"{name}_{size}.tif"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        with rasterio.open(require(source)) as src:
            window = Window(0, 0, size, size)
            profile = clean_profile(src, height=size, width=size,
                                    transform=src.window_transform(window))
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
    return path


def fit_anyway(tree: Path) -> list[str]:
    """The crop is 0.1 m, the shipped model 1 m: a version that checks pixel sizes is told
    to predict anyway (the benchmark times start-up, not quality)."""
    return ["--resample", "off"] if (tree / "geoseg" / "fit.py").exists() else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args(argv)
    jobs = {"chip": (crop(200, DEMO_SCENE, "demo_chip"), DEMO_MODEL, []),
            "resampled": (crop(), MODEL, ["--tta", "none"])}
    trees = {"this version": ROOT}
    if args.baseline:
        trees = {f"baseline ({args.baseline.name})": args.baseline.resolve(), **trees}
    times: dict = {(j, n, k): [] for j in jobs for n in trees for k in ("predict", "info")}
    out = WORK / "small-job-out"
    for _ in range(args.repeat):
        for job, (scene, model, extra) in jobs.items():
            for name, tree in trees.items():
                shutil.rmtree(out, ignore_errors=True)
                times[job, name, "predict"].append(geoseg_seconds(
                    tree, "predict", str(scene), "-m", str(model), "-o", str(out), *extra,
                    *fit_anyway(tree)))
                times[job, name, "info"].append(geoseg_seconds(tree, "info", str(model)))
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for job in jobs:
        for name in trees:
            predict = statistics.median(times[job, name, "predict"])
            info = statistics.median(times[job, name, "info"])
            rows.append({"job": job, "version": name, "runs": args.repeat,
                         "predict s": f"{predict:.1f}", "info s": f"{info:.1f}",
                         "predict / info": f"{predict / info:.1f}",
                         "overhead s": f"**{predict - info:.1f}**"})
    text = table(rows, list(rows[0]))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "small_job.md", "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
