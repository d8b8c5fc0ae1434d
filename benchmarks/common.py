"""Helpers the benchmarks share: mirror-tiled enlargements, child runs with peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"
OAM = SHARED / "oam" / "5b90f92da0d7280005fab355_4310.tif"


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"{path} is absent: the benchmarks need ../shared/data beside the repo")
    return path


def mirror_enlarge(src: Path, size: int, dst: Path) -> Path:
    """A ``size`` x ``size`` scene from ``src`` tiled with alternating mirror flips, written
    block by block (never a whole-scene array); georeferenced from ``src``'s origin."""
    import rasterio

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as ds:
        base = ds.read()
        profile = clean_profile(ds, height=size, width=size)
    _, h, w = base.shape
    tmp = dst.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        for i, row in enumerate(range(0, size, h)):
            for j, col in enumerate(range(0, size, w)):
                tile = base[:, ::(-1 if i % 2 else 1), ::(-1 if j % 2 else 1)]
                hh, ww = min(h, size - row), min(w, size - col)
                out.write(np.ascontiguousarray(tile[:, :hh, :ww]),
                          window=((row, row + hh), (col, col + ww)))
    tmp.rename(dst)
    return dst


def clean_profile(ds, **changes) -> dict:
    """``ds``'s georeferencing and pixel type in a plain tiled DEFLATE GeoTIFF profile."""
    profile = dict(driver="GTiff", height=ds.height, width=ds.width, count=ds.count,
                   dtype=ds.dtypes[0], crs=ds.crs, transform=ds.transform, nodata=ds.nodata,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   BIGTIFF="IF_SAFER")
    profile.update(changes)
    return profile


def run_child(module: str, *args) -> dict:
    """Run ``python -m module args`` and return the JSON its last stdout line prints."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def publish(name: str, heading: str, rows: list[dict]) -> None:
    """Print ``heading`` and a table of ``rows`` and keep them in results/``name``.md."""
    text = f"{heading}\n\n{table(rows, list(rows[0]))}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def ratio_lines(ratios: dict[str, list[float]]) -> str:
    """A markdown line per version: its ratios, their mean and median."""
    import statistics

    return "".join(f"- {name}: " + ", ".join(f"{r:.3f}" for r in values)
                   + f"; mean {statistics.mean(values):.3f}, median "
                   f"{statistics.median(values):.3f}\n" for name, values in ratios.items())


def append_result(name: str, text: str) -> None:
    """Print ``text`` and append it to results/``name``.md (the runs kept over time)."""
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.md", "a") as f:
        f.write(text)


def geoseg_seconds(tree: Path, *args: str) -> float:
    """Wall seconds of one ``geoseg ARGS`` process of the geoseg checkout at ``tree`` (its
    ``pipelines/cli.py:main``, the console script's entry point, imported from the tree as
    ``pipelines``: its modules import each other relatively), start-up included; exits
    with the command's stderr when it fails."""
    import os
    import time

    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from pipelines.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=tree)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: geoseg {' '.join(map(str, args))} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return took
