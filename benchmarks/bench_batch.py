"""Batch prediction on Dask: 1 vs 2 worker processes, and one batch vs separate runs.

Scenes: 8 crops of 1024 x 1024 pixels from the OpenAerialMap tiles in ../shared/data/oam
(skipped with a message when absent). Model: an untrained CPU ``tinycnn`` (6 layers, 16
channels, tile 256, overlap 64); the pixels it sees, not its weights, set the cost. Torch
runs one thread per worker process (``--threads 1``; Dask's nanny also sets
OMP_NUM_THREADS=1), so 2 workers on 2 cores is a fair comparison against 1.

* workers: the same batch on a warm LocalCluster of 1 and of 2 worker processes (model
  already loaded; cluster start-up excluded), best of ``--repeat``.
* batch vs separate: ``geoseg predict`` on all 8 scenes once, against 8 ``geoseg predict``
  runs of one scene each, as subprocesses with 2 workers (start-up included: that is the
  cost separate runs pay 8 times).

Prints a markdown table and writes benchmarks/results/batch.md. Numbers are measured, not
asserted. Usage: ``python -m benchmarks.bench_batch [--repeat 2] [--scenes 8]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, SHARED, clean_profile

OAM = SHARED / "oam"
CROP = 1024


def make_scenes(folder: Path, count: int) -> list[Path]:
    """``count`` crops of CROP x CROP pixels from the OAM tiles (4 quadrants per tile)."""
    import rasterio
    from rasterio.windows import Window

    tiles = sorted(OAM.glob("*.tif"))
    scenes = []
    for i in range(count):
        src_path = tiles[(i // 4) % len(tiles)]
        row, col = divmod(i % 4, 2)
        with rasterio.open(src_path) as src:
            window = Window(col * CROP, row * CROP, CROP, CROP)
            profile = clean_profile(src, height=CROP, width=CROP, blockxsize=256,
                                    blockysize=256, transform=src.window_transform(window))
            path = folder / f"oam{i}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
        scenes.append(path)
    return scenes


def make_model(path: Path) -> Path:
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    bundle = create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                           bands=("red", "green", "blue"), tile_size=256, overlap=64,
                           arch_kwargs={"depth": 6, "width": 16}, name="bench")
    save_bundle(bundle, path)
    return path


def time_workers(scenes, model, out: Path, *, workers: int, options, repeat: int) -> float:
    """Best wall time of the batch on a warm local cluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    from geoseg_pipelines.run import run_batch

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        run_batch(client, scenes[:workers], out / "warm", model=model, options=options)
        best = float("inf")
        for i in range(repeat):
            start = time.perf_counter()
            outcomes = run_batch(client, scenes, out / f"w{workers}-{i}", model=model,
                                 options=options)
            best = min(best, time.perf_counter() - start)
            assert all(o.status == "done" for o in outcomes), [o.error for o in outcomes]
    return best


def time_cli(scenes, model, out: Path, *, workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg_pipelines.cli", "predict", *map(str, scenes),
                    "-m", str(model), "-o", str(out), "--workers", str(workers),
                    "--threads", "1", "--overwrite"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=8)
    args = parser.parse_args(argv)
    if not OAM.is_dir() or not list(OAM.glob("*.tif")):
        print(f"skipped: {OAM} is absent (the OAM tiles live in ../shared/data beside the "
              "repo; a user's clone has none)")
        return 0
    from geoseg.prediction.options import PredictOptions

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        scenes = make_scenes(work, args.scenes)
        model = make_model(work / "bench.safetensors")
        options = PredictOptions(threads=1, block_size=512, overwrite=True)
        mpix = args.scenes * CROP * CROP / 1e6
        one = time_workers(scenes, model, work, workers=1, options=options, repeat=args.repeat)
        two = time_workers(scenes, model, work, workers=2, options=options,
                           repeat=args.repeat)
        batch = time_cli(scenes, model, work / "cli-batch", workers=2)
        separate = sum(time_cli([s], model, work / "cli-single", workers=2) for s in scenes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("batch, 1 worker (warm cluster)", one, f"{mpix / one:.2f}", "1.00x"),
        ("batch, 2 workers (warm cluster)", two, f"{mpix / two:.2f}", f"{one / two:.2f}x"),
        ("`geoseg predict` batch, 2 workers (with start-up)", batch, f"{mpix / batch:.2f}",
         "1.00x"),
        (f"{args.scenes} separate `geoseg predict` runs, 2 workers", separate,
         f"{mpix / separate:.2f}", f"{batch / separate:.2f}x"),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Batch prediction on Dask",
        "",
        f"{args.scenes} scenes of {CROP}x{CROP} px (OAM crops, {mpix:.1f} MPix in all), "
        "tinycnn 6x16 on CPU, tile 256 / overlap 64, block 512, torch 1 thread per worker; "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end, Python "
        f"{platform.python_version()}. Relative = speed against the row it is compared "
        "with (workers: against 1 worker; separate runs: batch time / separate time).",
        "",
        "| run | seconds | MPix/s | relative |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {sec:.1f} | {rate} | {rel} |" for name, sec, rate, rel in rows],
        "",
        f"2-worker speedup: {one / two:.2f}x (target >= 1.6). Batch vs separate runs: "
        f"{separate / batch:.2f}x faster (target > 1).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
