"""Block-wise vectorization versus one whole-raster ``rasterio.features.shapes`` call.

A SIZE x SIZE class raster of smoothed noise over 5 classes is generated block-wise into a
temporary tiled GeoTIFF. Each variant runs in its own subprocess, which reports its wall
time and peak RSS (its own and its worker processes'). Printed as a markdown table and
written to benchmarks/results/vectorize.md. Numbers are measured, not asserted.

    .venv/bin/python -m benchmarks.bench_vectorize --size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT


def make_raster(path: Path, size: int, *, seed: int = 0, block: int = 1024) -> None:
    """Smoothed noise (two octaves of bilinear-upsampled random fields) in 5 classes."""
    import rasterio
    from affine import Affine

    from geoseg.classes import make_classes

    rng = np.random.default_rng(seed)
    octaves = [(rng.random((size // cell + 2, size // cell + 2)), cell, weight)
               for cell, weight in ((512, 1.0), (64, 0.45), (8, 0.12))]
    classes = make_classes(["background", "building", "road", "water", "field"])
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 4100000),
                   nodata=255, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   BIGTIFF="IF_SAFER")
    from geoseg.classes import classes_to_json
    with rasterio.open(path, "w", **profile) as ds:
        ds.update_tags(GEOSEG_CLASSES=classes_to_json(classes), GEOSEG_MODEL_NAME="bench",
                       GEOSEG_MODEL_SHA256="0" * 64)
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                r = np.arange(row, row + h)[:, None] + 0.5
                c = np.arange(col, col + w)[None, :] + 0.5
                field = np.zeros((h, w))
                for grid, cell, weight in octaves:
                    gr, gc = r / cell, c / cell
                    r0, c0 = np.floor(gr).astype(int), np.floor(gc).astype(int)
                    fr, fc = gr - r0, gc - c0
                    field += weight * (grid[r0, c0] * (1 - fr) * (1 - fc)
                                       + grid[r0 + 1, c0] * fr * (1 - fc)
                                       + grid[r0, c0 + 1] * (1 - fr) * fc
                                       + grid[r0 + 1, c0 + 1] * fr * fc)
                data = np.digitize(field, np.quantile(octaves[0][0], [0.2, 0.4, 0.6, 0.8])
                                   * 1.57).astype(np.uint8)
                ds.write(data, 1, window=rasterio.windows.Window(col, row, w, h))


def run_variant(mode: str, path: str, block_size: int, out: str) -> dict:
    """Runs in a child process: one variant, timed."""
    import rasterio
    import shapely
    from rasterio.features import shapes

    from geoseg.grid import to_map
    from geoseg.vector.layer import open_class_raster, polygonize_raster, vectorize_raster

    start = time.perf_counter()
    if mode == "whole":
        with rasterio.open(path) as ds:
            data, transform = ds.read(1), ds.transform
        keep = np.isin(data, [1, 2, 3, 4])
        geoms = [shapely.geometry.shape(g) for g, _ in
                 shapes(data, mask=keep, connectivity=4, transform=transform)]
        count = len(geoms)
    elif mode.startswith("blocks"):
        workers = int(mode.split("-")[1])
        raster = open_class_raster(path)
        pieces = polygonize_raster(raster, keep=(1, 2, 3, 4), block_size=block_size,
                                   workers=workers)
        count = len(to_map(pieces.geoms, raster.grid))
    elif mode == "geoparquet":  # the GeoPackage of the last gpkg-N run, as GeoParquet 1.1
        from geoseg.vector.geoparquet import write_geoparquet

        parquet = Path(out).with_suffix(".parquet")
        write_geoparquet(Path(out), "polygons", parquet)
        count = pq_rows(parquet)
        out = str(parquet)
    else:  # gpkg-N: the full library call, attributes and GeoPackage included
        workers = int(mode.split("-")[1])
        count = vectorize_raster(path, out, block_size=block_size, workers=workers,
                                 overwrite=True)["features"]
    seconds = time.perf_counter() - start
    size_mb = Path(out).stat().st_size / 2**20 if mode not in ("whole",) and \
        not mode.startswith("blocks") else None
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"mode": mode, "seconds": seconds, "peak_mb": peak_kb / 1024, "polygons": count,
            "file_mb": size_mb}


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--modes", default="whole,blocks-1,blocks-2,gpkg-1,gpkg-2")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child[0], args.child[1], args.block_size,
                                     args.child[2])))
        return
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        raster = Path(tmp) / "classes.tif"
        t0 = time.perf_counter()
        make_raster(raster, args.size)
        print(f"generated {args.size}^2 raster in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        rows = []
        for mode in args.modes.split(","):
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_vectorize",
                                   "--block-size",
                                   str(args.block_size), "--child", mode, str(raster),
                                   str(Path(tmp) / "out.gpkg")],
                                  capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    base = next((r for r in rows if r["mode"] == "whole"), rows[0])
    lines = [f"Vectorize benchmark: {args.size} x {args.size} px, 5 classes (4 kept), "
             f"block {args.block_size}, {os.cpu_count()} CPUs",
             "", "| variant | polygons | wall s | time / whole | peak RSS MB | RSS / whole "
             "| file MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = "" if r.get("file_mb") is None else f"{r['file_mb']:.1f}"
        lines.append(f"| {r['mode']} | {r['polygons']} | {r['seconds']:.1f} | "
                     f"{r['seconds'] / base['seconds']:.2f} | {r['peak_mb']:.0f} | "
                     f"{r['peak_mb'] / base['peak_mb']:.2f} | {size} |")
    lines += ["", "whole = read whole band + one `rasterio.features.shapes` + shapely "
              "geometries; blocks-N = `polygonize_raster` with N processes (same "
              "polygons, map coordinates, all held: the API returns them); gpkg-N = full "
              "`vectorize_raster` (attributes, GeoPackage; no min-area/simplify, so regions "
              "are streamed to the file block row by block row); geoparquet = the last "
              "gpkg-N run's GeoPackage written as GeoParquet 1.1 (`write_geoparquet`: "
              "Hilbert order, bbox covering, zstd), the translation alone. Peak RSS per "
              "subprocess (max of itself and its workers)."]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "vectorize.md", "a") as f:
        f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
