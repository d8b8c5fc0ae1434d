"""One lazy prediction as a user runs it (a process): a chunked DataArray from
rioxarray, ``geoseg.predict_array`` (lazy), the classes written to Zarr.

    python -m benchmarks.lazy_child SCENE MODEL OUT.zarr CHUNK [SCHEDULER]

SCHEDULER: ``threads`` (dask's default) or ``distributed`` (a LocalCluster of one worker
process with two threads). Prints one JSON line: seconds and peak RSS (MB).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    start = time.perf_counter()
    scene, model, out, chunk = sys.argv[1:5]
    scheduler = sys.argv[5] if len(sys.argv) > 5 else "threads"
    import rioxarray

    import geoseg
    from benchmarks.common import peak_rss_mb

    client = None
    if scheduler == "distributed":
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                     dashboard_address=None))
    array = rioxarray.open_rasterio(scene, chunks={"x": int(chunk), "y": int(chunk)})
    classes, _ = geoseg.predict_array(array, model, tta="none", batch_size=8)
    classes.to_dataset().to_zarr(out, mode="w")
    if client is not None:
        client.close()
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
