"""Lazy prediction of a chunked DataArray against the file path (issue 24), side by side.

The 4096^2 mirror-tiled OAM enlargement, smp Unet resnet18 (random weights, seed 0), tile
256, overlap 64, batch 8, ``--tta none``, each run a fresh process (start-up included):

* file: ``geoseg predict SCENE`` (classes.tif; the in-process runner);
* lazy: ``rioxarray.open_rasterio(SCENE, chunks=1024)`` -> ``geoseg.predict_array`` ->
  ``classes.to_zarr()`` on dask's threads (``benchmarks/lazy_child.py``), and on a
  distributed LocalCluster of one worker process.

Pairs run interleaved (``--pairs``); the ratio of means is what to compare. Target: lazy at
most 1.10x the file path. Appended to benchmarks/results/lazy.md.

    .venv/bin/python -m benchmarks.bench_lazy [--pairs 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics

from benchmarks.bench_throughput import field_inputs, predict, process_seconds
from benchmarks.common import ROOT, WORK, append_result, table


def lazy(scene, model, scheduler: str) -> float:
    out = WORK / "lazy-out.zarr"
    shutil.rmtree(out, ignore_errors=True)
    seconds, _ = process_seconds(["-m", "benchmarks.lazy_child", str(scene), str(model),
                                  str(out), "1024", scheduler])
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    scene, model = field_inputs(args.size)
    times: dict[str, list[float]] = {"file": [], "threads": [], "distributed": []}
    for _ in range(args.pairs):
        times["file"].append(predict(ROOT, scene, model))
        times["threads"].append(lazy(scene, model, "threads"))
        times["distributed"].append(lazy(scene, model, "distributed"))
    base = statistics.mean(times["file"])
    labels = {"file": "geoseg predict (file path, classes.tif)",
              "threads": "lazy predict_array -> to_zarr, dask threads",
              "distributed": "lazy predict_array -> to_zarr, distributed (1 worker, 2 threads)"}
    rows = [{"run": labels[k], "wall s": " / ".join(f"{t:.1f}" for t in v),
             "mean s": f"{statistics.mean(v):.1f}",
             "ratio": "" if k == "file" else f"**{statistics.mean(v) / base:.3f}** x file"}
            for k, v in times.items()]
    text = (f"Lazy against file, {args.size}^2, Unet r18, tile 256/64, batch 8, tta none, "
            f"{args.pairs} interleaved runs each\n\n"
            + table(rows, ["run", "wall s", "mean s", "ratio"]) + "\n\n")
    append_result("lazy", text)


if __name__ == "__main__":
    main()
