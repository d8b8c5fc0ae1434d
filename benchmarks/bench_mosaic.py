"""Seams at scene borders: rasterio's RGB.byte.tif cut into four adjacent pieces (as its
rgb1..rgb4 test files are), predicted by `geoseg predict` as processes one by one and as
one ``--mosaic``, each against predicting the whole file: the share of valid pixels within
8 and 64 px of the internal borders whose class differs. Shipped model, ``--tta none``,
``--resample off`` (the scene is 300 m; the question here is seams, not fit). Prints a
markdown table and writes benchmarks/results/mosaic.md.

    python -m benchmarks.bench_mosaic
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import ROOT, SHARED, WORK, geoseg_seconds, publish, require

MODEL = ROOT / "models" / "buildings-massachusetts.safetensors"
SCENE = SHARED / "rasterio" / "RGB.byte.tif"
CUT = (359, 395)  # rows, cols: near the middle, on no tile or block multiple


def cut_pieces(work) -> list:
    import rasterio
    from rasterio.windows import Window

    out = []
    with rasterio.open(SCENE) as ds:
        r, c = CUT
        for i, (r0, r1) in enumerate(((0, r), (r, ds.height))):
            for j, (c0, c1) in enumerate(((0, c), (c, ds.width))):
                window = Window(c0, r0, c1 - c0, r1 - r0)
                path = work / f"rgb{2 * i + j + 1}.tif"
                profile = dict(ds.profile, height=r1 - r0, width=c1 - c0,
                               transform=ds.window_transform(window))
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(ds.read(window=window))
                out.append(path)
    return out


def classes(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform


def border_distance(shape) -> np.ndarray:
    rows = np.abs(np.arange(shape[0]) + 0.5 - CUT[0])[:, None]
    cols = np.abs(np.arange(shape[1]) + 0.5 - CUT[1])[None, :]
    return np.minimum(rows, cols)


def main() -> None:
    require(SCENE)
    work = WORK / "mosaic"
    work.mkdir(parents=True, exist_ok=True)
    pieces = cut_pieces(work)
    common = ["-m", MODEL, "--tta", "none", "--resample", "off", "--overwrite"]
    seconds = {"whole file": geoseg_seconds(ROOT, "predict", SCENE, "-o", work / "whole",
                                            *common)}
    seconds["one by one"] = geoseg_seconds(ROOT, "predict", *pieces, "-o", work / "pieces",
                                           *common)
    seconds["--mosaic"] = geoseg_seconds(ROOT, "predict", *pieces, "-o", work / "mosaic",
                                         "--mosaic", *common)
    whole, origin = classes(work / "whole" / SCENE.stem / "classes.tif")
    separate = np.full_like(whole, 255)
    for path in pieces:
        data, t = classes(work / "pieces" / path.stem / "classes.tif")
        col, row = ~origin * (t.c, t.f)
        separate[round(row):round(row) + data.shape[0],
                 round(col):round(col) + data.shape[1]] = data
    mosaic, m_origin = classes(work / "mosaic" / "mosaic" / "classes.tif")
    assert m_origin == origin and mosaic.shape == whole.shape
    valid = whole != 255
    near = border_distance(whole.shape)
    rows = []
    for name, result in (("one by one", separate), ("--mosaic", mosaic)):
        row = {"run": name}
        for px in (8, 64):
            zone = valid & (near < px)
            row[f"differ within {px} px"] = f"{100 * (result != whole)[zone].mean():.2f}%"
        row["differ anywhere"] = f"{100 * (result != whole)[valid].mean():.2f}%"
        ratio = seconds[name] / seconds["whole file"]
        row["predict s"] = f"{seconds[name]:.1f} ({ratio:.2f}x whole)"
        rows.append(row)
    publish("mosaic", "Four adjacent pieces of RGB.byte.tif against predicting the whole "
            "file (valid pixels whose class differs)", rows)


if __name__ == "__main__":
    main()
