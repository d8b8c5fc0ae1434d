"""One measured run in a fresh process (so peak RSS is its own): prints a JSON line.

    python -m benchmarks.predict_child predict SCENE MODEL BLOCK_SIZE BATCH THREADS [TTA]
    python -m benchmarks.predict_child forward SCENE MODEL BATCH THREADS [PRECISION [RUNTIME]]
    python -m benchmarks.predict_child copy SCENE
"""

from __future__ import annotations

import json
import sys
import tempfile
import time


def predict(scene, model, block_size, batch, threads, tta=None):
    import torch

    from geoseg.prediction.options import PredictOptions
    from geoseg.model import load_bundle
    from geoseg.prediction.flow import predict_scene

    torch.set_num_threads(int(threads))
    bundle = load_bundle(model)
    with tempfile.TemporaryDirectory(dir="benchmarks/work") as out:
        start = time.perf_counter()
        # resample off: the benchmarks time scenes at any pixel size (OAM's 0.1 m too)
        summary = predict_scene(scene, out, model=bundle, options=PredictOptions(
            block_size=int(block_size), batch_size=int(batch), tta=tta, resample="off"))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tiles": summary["tiles_run"],
            "pixels": summary["height"] * summary["width"]}


def forward(scene, model, batch, threads, precision="auto", runtime="auto"):
    """Pure model time: the same tiles and batches, inputs already in memory as the arrays
    prediction hands the runtime (numpy for onnxruntime, tensors for torch), at the
    precision and on the runtime `geoseg predict` resolves on this machine (or the ones
    given)."""
    import numpy as np
    import rasterio

    from geoseg.model import forward_probabilities, load_for_prediction
    from geoseg.model.devices import set_model_threads
    from geoseg.model.meta import read_meta
    from geoseg.prediction.options import PredictOptions
    from geoseg.tiling import TileGrid

    options = PredictOptions(device="cpu", precision=precision, runtime=runtime).resolved(
        network=read_meta(model).network)
    set_model_threads(int(threads), options.runtime)  # torch imported for torch only
    precision = options.precision
    # the network as prediction runs it
    bundle = load_for_prediction(model, device="cpu", runtime=options.runtime)
    with rasterio.open(scene) as ds:
        grid = TileGrid.build(height=ds.height, width=ds.width, size=bundle.meta.tile_size,
                              overlap=bundle.meta.overlap)
        bands = ds.count
    batch = int(batch)
    x = np.random.default_rng(0).standard_normal((batch, bands, grid.size, grid.size),
                                                 dtype=np.float32)
    if bundle.runtime == "torch":  # the arrays prediction hands this runtime (geoseg.arrays)
        import torch

        x = torch.from_numpy(x)
    n = len(grid)
    # warm-up, as predict's first batch also pays it
    forward_probabilities(bundle, x[:1], precision=precision)
    start = time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        forward_probabilities(bundle, x[:k], precision=precision)
        done += k
    return {"seconds": time.perf_counter() - start, "tiles": n, "precision": precision,
            "runtime": options.runtime}


def copy(scene):
    """A plain rasterio read + write of the same scene, block by block (the I/O floor)."""
    import rasterio

    with rasterio.open(scene) as src, tempfile.TemporaryDirectory(dir="benchmarks/work") as d:
        from benchmarks.common import clean_profile

        profile = clean_profile(src, count=1)
        start = time.perf_counter()
        with rasterio.open(f"{d}/copy.tif", "w", **profile) as dst:
            for _, window in src.block_windows(1):
                data = src.read(window=window)
                dst.write(data[:1], window=window)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "pixels": src.width * src.height}


if __name__ == "__main__":
    from benchmarks.common import peak_rss_mb

    kind, *args = sys.argv[1:]
    result = {"predict": predict, "forward": forward, "copy": copy}[kind](*args)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))
