"""Memory of the whole process tree of `geoseg predict`, and how soon a huge scene's first
block is done.

Scenes are VRTs of the OAM scene resampled on read (``gdal_translate -of VRT -outsize N N``,
so a 70000^2 scene costs no disk). Model: the benchmarks' seeded 1x1-convolution bundle, so
the pipeline, not the network, sets the pace. `geoseg predict` runs as a process with the
default local cluster (client + 2 worker processes); the resident set sizes of the client
and every descendant are summed every 0.2 s (psutil). Full runs at 2048^2 and 16384^2 give
the peak-RSS ratio (target <= 1.25: memory flat in scene size). The 70000^2 run is stopped
with Ctrl-C ``--huge-seconds`` after its first block is done: time to the first finished
block (a block's ``done`` part file) and the peak until then. Absolute numbers move between
runs on shared machines; ratios are the result. Written to benchmarks/results/memory.md.

    .venv/bin/python -m benchmarks.bench_memory_tree [--sizes 2048 16384] [--huge 70000]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import OAM, RESULTS, ROOT, WORK, require, table


def vrt(size: int) -> Path:
    """The OAM scene resampled to ``size`` x ``size`` on read (a VRT, no pixels on disk)."""
    path = WORK / f"oam_{size}.vrt"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gdal_translate", "-q", "-of", "VRT", "-outsize", str(size),
                        str(size), str(require(OAM)), str(path)], check=True)
    return path


def tree_rss(proc) -> int:  # noqa: ANN001 - a psutil.Process
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(scene: Path, model: Path, *, stop_after_first: float | None = None) -> dict:
    """One `geoseg predict` process; its tree's peak RSS, wall time, first block time."""
    import psutil

    out = WORK / "memory-out"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()", "predict",
               str(scene), "-m", str(model), "-o", str(out), "--tta", "none"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak, first = 0, None
    while proc.poll() is None:
        peak = max(peak, tree_rss(watched))
        elapsed = time.perf_counter() - start
        if first is None and next(out.glob("*/.parts/done-*.npz"), None) is not None:
            first = elapsed
        if stop_after_first is not None and first is not None \
                and elapsed > first + stop_after_first:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=120)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 130):
        raise SystemExit(f"geoseg predict {scene.name} failed:\n{stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return {"peak_mb": peak / 2**20, "wall_s": wall, "first_block_s": first}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384])
    parser.add_argument("--huge", type=int, default=70000)
    parser.add_argument("--huge-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    from benchmarks.bench_predict import make_models

    model = make_models()["pixelwise"]
    rows, peaks = [], {}
    for size in args.sizes:
        result = run(vrt(size), model)
        peaks[size] = result["peak_mb"]
        rows.append({"scene": f"{size}^2 VRT", "run": "complete",
                     "wall s": f"{result['wall_s']:.1f}",
                     "first block s": f"{result['first_block_s']:.1f}",
                     "peak RSS, process tree": f"{result['peak_mb']:.0f} MB"})
    if args.huge:
        result = run(vrt(args.huge), model, stop_after_first=args.huge_seconds)
        rows.append({"scene": f"{args.huge}^2 VRT",
                     "run": f"Ctrl-C {args.huge_seconds:.0f} s after its first block",
                     "wall s": f"{result['wall_s']:.1f}",
                     "first block s": f"{result['first_block_s']:.1f}",
                     "peak RSS, process tree": f"{result['peak_mb']:.0f} MB"})
    text = table(rows, list(rows[0]))
    sizes = sorted(peaks)
    if len(sizes) > 1:
        text += (f"\n\npeak RSS {sizes[-1]}^2 / {sizes[0]}^2 = "
                 f"**{peaks[sizes[-1]] / peaks[sizes[0]]:.2f}** (target <= 1.25)")
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.md").write_text("# Memory of the process tree (benchmarks/"
                                       "bench_memory_tree.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
