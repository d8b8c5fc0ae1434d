"""What ``--vectorize`` adds to ``geoseg predict``, through the command users run.

The 4096 x 4096 mirror-tiled enlargement of the OAM scene, the shipped building model,
``--tta none``, default local cluster (start-up included). Two runs in one process of this
script, back to back: ``geoseg predict`` plain and with ``--vectorize``; printed as wall
times and their ratio (absolute times move by 15% or more between runs on shared machines;
the ratio is what to compare across versions). Written to
benchmarks/results/vectorized_predict.md.

    .venv/bin/python -m benchmarks.bench_vectorized_predict [--size 4096] [--label after]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import OAM, RESULTS, ROOT, WORK, mirror_enlarge, require, table

MODEL = ROOT / "models" / "buildings-massachusetts.safetensors"


def run_predict(scene: Path, out: Path, *extra: str) -> float:
    """Wall seconds of one ``geoseg predict`` process."""
    shutil.rmtree(out, ignore_errors=True)
    geoseg = Path(sys.executable).with_name("geoseg")
    start = time.perf_counter()
    proc = subprocess.run([str(geoseg), "predict", str(scene), "-m", str(MODEL), "-o",
                           str(out), "--tta", "none", *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"geoseg predict {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--label", default="this version")
    args = parser.parse_args(argv)
    scene = mirror_enlarge(require(OAM), args.size, WORK / f"oam_{args.size}.tif")
    plain = run_predict(scene, WORK / "vp-plain")
    vectorized = run_predict(scene, WORK / "vp-vector", "--vectorize")
    row = {"version": args.label, "scene": f"{args.size}^2",
           "predict s": f"{plain:.1f}", "predict --vectorize s": f"{vectorized:.1f}",
           "ratio": f"**{vectorized / plain:.3f}**",
           "vectorize adds s": f"{vectorized - plain:.1f}"}
    text = table([row], list(row))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "vectorized_predict.md", "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
