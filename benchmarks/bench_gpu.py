"""GPU throughput: `geoseg predict` end to end against the network alone, on one device.

One command, made to finish in under 8 minutes on a CUDA machine:

1. a scene: the mirror-tiled enlargement of the OAM scene (16384^2 by default, written on
   the machine that runs this), or ``--scene PATH``;
2. model only: the scene's tile count through the network as prediction prepares it
   (batch norm folded, channels_last, ``--precision auto``: bfloat16 on CUDA) from random
   tensors already on the device, for each ``--batches`` size; the fastest sets the batch;
3. end to end: `geoseg predict SCENE --device DEV --batch-size B --tta none` as a process
   (start-up included), with the GPU's utilization sampled every 0.2 s (``nvidia-smi``);
4. the ratio end to end / model only in scene MPix/s (target >= 0.8), printed, appended to
   benchmarks/results/gpu.md and written as JSON (``--json``).

``--device cpu --quick`` runs the same steps on a 1024^2 scene on the CPU (the test suite
runs it that way on a tiny model and scene).

    .venv/bin/python -m benchmarks.bench_gpu                       # CUDA, 16384^2
    .venv/bin/python -m benchmarks.bench_gpu --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import OAM, RESULTS, ROOT, WORK, mirror_enlarge, require, table


class GpuSampler:
    """GPU utilization (%) every ``every`` seconds from ``nvidia-smi`` while in use; no
    samples where there is no nvidia-smi (a CPU run)."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits", "--id=0"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __enter__(self) -> "GpuSampler":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a (no nvidia-smi)"
        return (f"mean {statistics.mean(self.samples):.0f}%, median "
                f"{statistics.median(self.samples):.0f}% ({len(self.samples)} samples)")


def tile_count(scene: Path, size: int, overlap: int) -> tuple[int, int]:
    """(tiles, pixels) of ``scene`` on geoseg's tile grid."""
    import rasterio

    from geoseg.tiling import TileGrid

    with rasterio.open(scene) as ds:
        grid = TileGrid.build(height=ds.height, width=ds.width, size=size, overlap=overlap)
        return len(grid), ds.height * ds.width


def model_only(model: Path, device: str, batch: int, tiles: int, bands: int) -> dict:
    """Seconds to run ``tiles`` tiles through the prepared network in batches of ``batch``
    from tensors already on ``device`` (the network alone)."""
    import torch

    from geoseg.model import forward_probabilities, load_for_prediction
    from geoseg.model.devices import resolve_precision

    bundle = load_for_prediction(model, device=device, batch_size=batch)
    precision = resolve_precision("auto", device)
    size = bundle.meta.tile_size
    x = torch.randn((batch, bands, size, size), device=device).contiguous(
        memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    forward_probabilities(bundle, x, precision=precision)  # warm-up (cuDNN picks kernels)
    sync()
    start = time.perf_counter()
    done = 0
    while done < tiles:
        k = min(batch, tiles - done)
        forward_probabilities(bundle, x[:k], precision=precision)
        done += k
    sync()
    return {"batch": batch, "seconds": time.perf_counter() - start, "precision": precision}


def end_to_end(scene: Path, model: Path, device: str, batch: int, out: Path) -> dict:
    """`geoseg predict` as a process, its wall seconds and the GPU's utilization."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()", "predict",
           str(scene), "-m", str(model), "-o", str(out), "--device", device, "--tta",
           "none", "--batch-size", str(batch)]
    with GpuSampler() as gpu:
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"geoseg predict failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads(next(out.glob("*/manifest.json")).read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "gpu": gpu.summary(),
            "scene_seconds": manifest["timings"]["wall_seconds"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="a 1024^2 scene")
    parser.add_argument("--size", type=int, help="scene side (default 16384; 1024 quick)")
    parser.add_argument("--scene", type=Path, help="a scene instead of the OAM enlargement")
    parser.add_argument("--model", type=Path, help="a bundle (default: Unet resnet18)")
    parser.add_argument("--batches", default=None,
                        help="batch sizes to try, e.g. 8,16,32,64 (default: 8,16,32,64 on "
                             "CUDA, 8 on the CPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from benchmarks.bench_predict import make_models
    from geoseg.model import read_meta

    cuda = args.device.startswith("cuda")
    size = args.size or (1024 if args.quick else 16384)
    scene = args.scene or mirror_enlarge(require(OAM), size, WORK / f"oam_{size}.tif")
    model = args.model or make_models()["Unet"]
    meta = read_meta(model)
    tiles, pixels = tile_count(scene, meta.tile_size, meta.overlap)
    mpix = pixels / 1e6
    batches = [int(b) for b in (args.batches or ("8,16,32,64" if cuda else "8")).split(",")]
    sweeps = [model_only(model, args.device, b, tiles, meta.in_channels) for b in batches]
    best = min(sweeps, key=lambda r: r["seconds"])
    e2e = end_to_end(scene, model, args.device, best["batch"], WORK / "gpu-out")
    ratio = best["seconds"] / e2e["seconds"]
    rows = [{"run": f"model only, batch {r['batch']} ({r['precision']}, channels_last)",
             "seconds": f"{r['seconds']:.2f}", "MPix/s": f"{mpix / r['seconds']:.2f}"}
            for r in sweeps]
    rows.append({"run": f"geoseg predict --device {args.device} --batch-size {best['batch']}"
                        " (process)",
                 "seconds": f"{e2e['seconds']:.2f}", "MPix/s": f"{mpix / e2e['seconds']:.2f}",
                 "GPU utilization": e2e["gpu"]})
    rows.append({"run": "  of which the scene itself (manifest wall_seconds)",
                 "seconds": f"{e2e['scene_seconds']:.2f}",
                 "MPix/s": f"{mpix / e2e['scene_seconds']:.2f}"})
    text = (f"GPU benchmark, {args.device}, {scene.name} ({mpix:.1f} MPix, {tiles} tiles of "
            f"{meta.tile_size} px), {meta.arch}/{meta.encoder}\n\n"
            + table(rows, ["run", "seconds", "MPix/s", "GPU utilization"])
            + f"\n\nend to end / model only: **{ratio:.2f}** (target >= 0.8); the scene "
            f"alone, start-up left out: {best['seconds'] / e2e['scene_seconds']:.2f}\n\n")
    print(text)
    result = {"device": args.device, "scene": str(scene), "mpix": mpix, "tiles": tiles,
              "model_only": sweeps, "batch": best["batch"], "end_to_end": e2e,
              "ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "gpu.md", "a") as f:
            f.write(text)
    return result


if __name__ == "__main__":
    main()
