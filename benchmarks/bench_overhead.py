"""`geoseg predict` against the network alone, in interleaved pairs (issue 23's target:
predict at most 1.10x the same runtime's forward pass over the same tiles).

The 4096^2 mirror-tiled OAM enlargement, smp Unet resnet18 (random weights, seed 0), tile
256, overlap 64, batch 8, ``--tta none``, the default runtime. Each pair runs
``benchmarks/predict_child.py forward`` (a process that loads the bundle and runs the same
tiles in the same batches from memory) and then ``geoseg predict``, both processes with
start-up included; with ``--baseline PATH`` (a checkout of another version) that version's
``geoseg predict`` runs in the same round. Ratios per round, their mean and median;
appended to benchmarks/results/overhead.md.

    .venv/bin/python -m benchmarks.bench_overhead [--pairs 6] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.bench_throughput import field_inputs, predict, process_seconds
from benchmarks.common import ROOT, append_result, ratio_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--baseline", type=Path, help="checkout of the version to compare")
    args = parser.parse_args(argv)
    scene, model = field_inputs(args.size)
    trees = {"this version": ROOT}
    if args.baseline:
        trees[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    ratios: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.pairs):
        forward, _ = process_seconds(["-m", "benchmarks.predict_child", "forward",
                                      str(scene), str(model), "8", "2"])
        for name, tree in trees.items():
            seconds = predict(tree, scene, model)
            ratios[name].append(seconds / forward)
            print(f"forward {forward:.1f} s, predict ({name}) {seconds:.1f} s: "
                  f"{seconds / forward:.3f}", flush=True)
    text = f"predict / forward, {args.size}^2, Unet r18, batch 8, tta none, {args.pairs} rounds\n\n"
    append_result("overhead", text + ratio_lines(ratios) + "\n")


if __name__ == "__main__":
    main()
