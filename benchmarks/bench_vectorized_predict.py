"""What ``--vectorize`` adds to ``geoseg predict``, through the command users run.

The 4096 x 4096 mirror-tiled enlargement of the OAM scene, ``--tta none``, default local
cluster (start-up included), with the shipped building model (``--model shipped``: what
users run; the network dominates) or a seeded 1x1-convolution model (``--model
pixelwise``: the pipeline's own cost dominates, and its noisy classes make ~10^5 polygons,
so the vectorization work shows). Each repeat runs ``geoseg
predict`` plain and with ``--vectorize``, back to back; with ``--baseline PATH`` (a checkout
of another geoseg version, e.g. ``git worktree add /tmp/base <commit>``) the same two runs of
that version are interleaved with these, on the same scene and model, so both versions see
the same machine. Absolute times move by 15% or more between runs on shared machines: the
ratios are what to compare. Printed as a table and appended to
benchmarks/results/vectorized_predict.md.

    .venv/bin/python -m benchmarks.bench_vectorized_predict [--baseline /tmp/base] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from benchmarks.common import (OAM, RESULTS, ROOT, WORK, geoseg_seconds, mirror_enlarge,
                               require, table)

SHIPPED = ROOT / "models" / "buildings-massachusetts.safetensors"


def model_path(name: str) -> Path:
    """The shipped bundle, or the benchmarks' seeded 1x1-conv bundle (made once)."""
    if name == "shipped":
        return SHIPPED
    from benchmarks.bench_predict import make_models

    return make_models()["pixelwise"]


def run_predict(tree: Path, model: Path, scene: Path, out: Path, *extra: str) -> float:
    """Wall seconds of one ``geoseg predict`` process of the checkout at ``tree``."""
    shutil.rmtree(out, ignore_errors=True)
    from benchmarks.bench_small_job import fit_anyway

    seconds = geoseg_seconds(tree, "predict", str(scene), "-m", str(model), "-o", str(out),
                             "--tta", "none", *fit_anyway(tree), *extra)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="checkout of the version to compare")
    parser.add_argument("--model", choices=("shipped", "pixelwise"), default="shipped")
    parser.add_argument("--label", default="this version")
    args = parser.parse_args(argv)
    scene = mirror_enlarge(require(OAM), args.size, WORK / f"oam_{args.size}.tif")
    model = model_path(args.model)
    trees = {args.label: ROOT}
    if args.baseline:
        trees = {f"baseline ({args.baseline.name})": args.baseline.resolve(), **trees}
    times: dict = {(name, mode): [] for name in trees for mode in ("plain", "vector")}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            times[name, "plain"].append(run_predict(tree, model, scene, WORK / "vp-plain"))
            times[name, "vector"].append(run_predict(tree, model, scene, WORK / "vp-vector",
                                                     "--vectorize"))
    rows = []
    for name in trees:
        plain = statistics.median(times[name, "plain"])
        vector = statistics.median(times[name, "vector"])
        rows.append({"version": name, "model": args.model,
                     "scene": f"{args.size}^2, {args.repeat} run(s)",
                     "predict s": f"{plain:.1f}", "predict --vectorize s": f"{vector:.1f}",
                     "vectorize adds s": f"{vector - plain:.1f}",
                     "vectorized / plain": f"**{vector / plain:.3f}**"})
    text = table(rows, list(rows[0]))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "vectorized_predict.md", "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
