"""The Dask runner's own state against the batch's size: peak RSS of the `geoseg predict`
process (the client, and the scheduler of its local cluster, which runs in it) for a batch
of 100 tiny scenes against one of 10,000 (issue 22's target: at most 1.25x).

Scenes: one 64 x 64 RGB GeoTIFF written once and hard-linked under N names (one tile, one
block each: the per-scene state is all there is). Model: an untrained ``tinycnn`` (tile
64). `geoseg predict FOLDER --runner dask --workers 2 --tta none`, a process timed whole;
its RSS (that process only: the workers are children and not counted) is sampled every
0.1 s. With ``--baseline PATH`` (a checkout of another version) that version runs each
batch too, right after this one. Prints a table and appends it to
benchmarks/results/many_scenes.md.

    .venv/bin/python -m benchmarks.bench_many_scenes [--counts 100 10000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, WORK, append_result, table


def make_batch(folder: Path, count: int) -> Path:
    """``count`` hard links of one 64 x 64 scene in ``folder`` (made once)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "s00000.tif"
    if not first.exists():
        rng = np.random.default_rng(0)
        with rasterio.open(first, "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint8", crs="EPSG:32633",
                           transform=from_origin(500000, 4000000, 1, 1)) as ds:
            ds.write(rng.integers(0, 255, (3, 64, 64), dtype="uint8"))
    for i in range(1, count):
        link = folder / f"s{i:05d}.tif"
        if not link.exists():
            os.link(first, link)
    return folder


def make_model(path: Path) -> Path:
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    if not path.exists():
        save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("a", "b")),
                                  bands=("r", "g", "b"), tile_size=64, overlap=32), path)
    return path


def peak_rss(args: list[str], tree: Path = ROOT) -> tuple[float, int]:
    """Wall seconds and the peak RSS (bytes) of one process of the checkout at ``tree``, its
    children not counted."""
    import psutil

    out = WORK / "many-out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([*args, "-o", str(out)], cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    took = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return took, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 10000])
    parser.add_argument("--baseline", type=Path, help="checkout of the version to compare")
    args = parser.parse_args(argv)
    model = make_model(WORK / "many-tiny.safetensors")
    geoseg = [sys.executable, "-c", "from pipelines.cli import main; main()"]
    trees = {"this version": ROOT}
    if args.baseline:
        trees[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    rows, first = [], {}
    for count in args.counts:
        folder = make_batch(WORK / f"many-{count}", count)
        for name, tree in trees.items():
            seconds, rss = peak_rss([*geoseg, "predict", str(folder), "-m", str(model),
                                     "--runner", "dask", "--workers", "2", "--tta", "none"],
                                    tree)
            first.setdefault(name, rss)
            rows.append({"version": name, "scenes": str(count), "wall s": f"{seconds:.1f}",
                         "scenes/s": f"{count / seconds:.1f}",
                         "peak RSS MB": f"{rss / 1e6:.0f}",
                         "ratio": f"{rss / first[name]:.2f}"})
            print(rows[-1], flush=True)
    append_result("many_scenes", "Client + scheduler peak RSS, tiny scenes, `--runner dask "
                  "--workers 2`\n\n" + table(rows, list(rows[0])) + "\n\n")

if __name__ == "__main__":
    main()
