"""The Dask runner against the in-process runner on one machine (issue 22's targets: at most
1.10x on the 4096^2 field, at most 1.25x on 24 chips of 200^2).

Two batches, each `geoseg predict` as a process (start-up included), the in-process runner
(``--runner local``) and ``--runner dask`` (the local cluster of this machine's layout)
interleaved in pairs:

* ``field``: the 4096^2 mirror-tiled OAM enlargement, smp Unet resnet18 (random weights),
  batch 8, ``--tta none`` (needs ../shared/data);
* ``chips``: 24 chips of 200^2 cut from the bundled demo scene on a 6 x 4 grid of offsets,
  the shipped model, ``--tta none`` (needs nothing from ../shared).

With ``--baseline PATH`` (a checkout of another version) that version's pair runs in the
same round. Ratios per round and their mean; appended to benchmarks/results/runners.md.

    .venv/bin/python -m benchmarks.bench_runners [--pairs 2] [--only chips] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.common import (ROOT, WORK, append_result, clean_profile, geoseg_seconds,
                               ratio_lines)

DEMO_MODEL = ROOT / "models" / "buildings.safetensors"
DEMO_SCENE = ROOT / "data" / "demo" / "23429155_15_uint8_clipped.tif"
CHIP = 200


def chips(count: int = 24) -> Path:
    """A folder of ``count`` 200^2 chips of the demo scene (6 x 4 offsets, overlapping)."""
    import rasterio
    from rasterio.windows import Window

    folder = WORK / f"chips_{count}"
    if len(list(folder.glob("*.tif"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with rasterio.open(DEMO_SCENE) as src:
        cols, rows = 6, -(-count // 6)
        for i in range(count):
            r, c = divmod(i, cols)
            window = Window(c * (src.width - CHIP) // (cols - 1),
                            r * (src.height - CHIP) // max(1, rows - 1), CHIP, CHIP)
            profile = clean_profile(src, height=CHIP, width=CHIP, blockxsize=256,
                                    blockysize=256, tiled=False,
                                    transform=src.window_transform(window))
            with rasterio.open(folder / f"chip{i:02d}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    return folder


def batches(only: str | None) -> dict[str, tuple[Path, Path]]:
    jobs = {}
    if only in (None, "chips"):
        jobs["chips"] = (chips(), DEMO_MODEL)
    if only in (None, "field"):
        from benchmarks.bench_throughput import field_inputs

        jobs["field"] = field_inputs(4096)
    return jobs


def run(tree: Path, scene: Path, model: Path, runner: str) -> float:
    out = WORK / "runners-out"
    shutil.rmtree(out, ignore_errors=True)
    seconds = geoseg_seconds(tree, "predict", str(scene), "-m", str(model), "-o", str(out),
                             "--tta", "none", "--batch-size", "8", "--runner", runner)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--only", choices=("chips", "field"))
    parser.add_argument("--baseline", type=Path, help="checkout of the version to compare")
    args = parser.parse_args(argv)
    trees = {"this version": ROOT}
    if args.baseline:
        trees[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    text = ""
    for job, (scene, model) in batches(args.only).items():
        ratios: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.pairs):
            for name, tree in trees.items():
                local = run(tree, scene, model, "local")
                dask = run(tree, scene, model, "dask")
                ratios[name].append(dask / local)
                print(f"{job} ({name}): in-process {local:.1f} s, dask {dask:.1f} s: "
                      f"{dask / local:.3f}", flush=True)
        text += (f"`--runner dask` / in-process, {job}, {args.pairs} pairs\n\n"
                 + ratio_lines(ratios) + "\n")
    append_result("runners", text)


if __name__ == "__main__":
    main()
