"""preview.png per scene (scene + classes + legend, at most 1024 px, from decimated reads)
and OUT/index.html per batch, rendered by a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from PIL import Image

from conftest import smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.flow import predict_scene
from geoseg.outputs.preview import LEGEND_ROW, PREVIEW_SIDE, preview_shape, stretch
from geoseg_pipelines.cli import cli

UTM = Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0)


def test_preview_shape_never_passes_the_side_nor_enlarges():
    assert preview_shape(3000, 1500) == (1024, 512)
    assert preview_shape(300, 200) == (300, 200)
    assert max(preview_shape(20000, 19999)) == PREVIEW_SIDE


def test_a_preview_shows_the_scene_its_classes_and_a_legend(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    pixels = (smooth_noise((1300, 1500), seed=6).astype(np.uint16) * 40 + 1000)
    pixels[:, :100, :100] = 0
    scene = write_raster(tmp_path / "big.tif", pixels, transform=UTM, nodata=0)
    predict_scene(scene, tmp_path / "out", model=model,
                  options=PredictOptions(input_range=(1000, 11200), block_size=512))
    folder = tmp_path / "out" / "big"
    image = np.asarray(Image.open(folder / "preview.png").convert("RGB")).astype(int)
    assert image.shape[1] == 1024  # 1500 px wide, shown at 1024
    height = round(1300 / (1500 / 1024))
    assert image.shape[0] == height + LEGEND_ROW * 3  # two classes and a margin
    with rasterio.open(folder / "classes.tif") as ds:
        classes = ds.read(1, out_shape=(height, 1024))
    # the scene's picture: the pixel nearest each preview pixel's centre, picked from the
    # blocks during the prediction (no second decode of the scene)
    rows = ((np.arange(height) + 0.5) * 1300 / height).astype(int)
    cols = ((np.arange(1024) + 0.5) * 1500 / 1024).astype(int)
    plain = stretch(pixels[:, rows][:, :, cols], classes != 255).astype(int)
    picture = image[:height]
    building, background = classes == 1, classes == 0
    assert 0.02 < building.mean() < 0.98
    assert np.array_equal(picture[background], plain[background])  # the scene as it is
    # buildings blended half with their red (228, 26, 28)
    assert np.abs(picture[building] - (plain[building] + [228, 26, 28]) / 2).max() <= 1
    grey = picture[classes == 255]
    assert len(grey) and np.ptp(grey, axis=-1).max() == 0  # nodata greyed
    legend = image[height:]
    assert (legend < 128).any()  # text and swatches drawn


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


def test_the_batch_index_renders_in_a_browser(tmp_path, make_bundle):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    good = [write_raster(tmp_path / f"good{i}.tif", smooth_noise((80, 90), seed=i),
                         transform=UTM) for i in range(2)]
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    result = run("predict", *good, bad, "-m", model, "-o", tmp_path / "out", "--vectorize")
    assert result.exit_code == 1
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count('<section class="scene') == 3 and "2 of 3 scene(s) complete" in page
    assert 'href="good0/classes.tif"' in page and 'href="good0/polygons.gpkg"' in page
    assert 'src="good1/preview.png"' in page
    assert re.search(r'<h2>broken.tif</h2>.*<p class="error">[^<]*broken.tif', page, re.S)
    assert re.search(r"<td>building</td><td>\d+\.\d%</td>", page)
    # a rerun skips both good scenes; the page still shows them whole
    assert run("predict", *good, "-m", model, "-o", tmp_path / "out",
               "--vectorize").exit_code == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'src="good0/preview.png"' in page and 'href="good1/polygons.gpkg"' in page
    if browser is None:
        pytest.skip("chromium is absent (apt-get install chromium; CI installs it)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--allow-file-access-from-files", "--virtual-time-budget=3000",
                          "--dump-dom", (tmp_path / "out" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-previews="2"' in dom, dom[:2000]  # both previews decoded and shown
    shot = tmp_path / "index.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--allow-file-access-from-files", "--window-size=1000,700",
                    f"--screenshot={shot}", (tmp_path / "out" / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a page with pictures


@pytest.mark.parametrize("block", [97, 512, 4096])
def test_the_scene_picture_picked_from_blocks_does_not_depend_on_them(block):
    """Any block grid, in any order, gives the one picture: each preview pixel is the scene
    pixel nearest its centre (0 where that pixel is not valid)."""
    from geoseg.grid import Window
    from geoseg.outputs.preview import Thumbnail

    rng = np.random.default_rng(block)
    height, width = 3001, 2047
    pixels = rng.integers(0, 4000, (3, height, width)).astype(np.uint16)
    valid = rng.random((height, width)) > 0.1
    parts = Thumbnail(height, width, bands=3, dtype="uint16")
    windows = [Window(r, c, min(block, height - r), min(block, width - c))
               for r in range(0, height, block) for c in range(0, width, block)]
    for w in reversed(windows):
        assert not parts.complete
        parts.add(pixels[:, w.row:w.row_stop, w.col:w.col_stop],
                  valid[w.row:w.row_stop, w.col:w.col_stop], w)
    assert parts.complete and parts.shape == (1024, 698)
    rows = ((np.arange(1024) + 0.5) * height / 1024).astype(int)
    cols = ((np.arange(698) + 0.5) * width / 698).astype(int)
    want = np.where(valid[np.ix_(rows, cols)], pixels[:, rows][:, :, cols], 0)
    assert np.array_equal(parts.picture, want)
