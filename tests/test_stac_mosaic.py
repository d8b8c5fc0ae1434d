"""STAC items in (assets picked by band names, stacked on one grid) and out (an item per
scene, an ItemCollection per batch); adjacent scenes predicted as one mosaic without seams;
bands picked by their descriptions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from conftest import smooth_noise, write_raster
from geoseg.errors import InvalidInputError
from geoseg.inputs.vrt import mosaic_vrt
from geoseg_pipelines.cli import cli

pystac = pytest.importorskip("pystac")

ORIGIN = Affine(1.0, 0, 500000, 0, -1.0, 5000000)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


@pytest.fixture
def rgb_model(make_bundle):
    """A tiny model whose bands are named as STAC common names are."""
    return make_bundle(arch="tinycnn", bands=("red", "green", "blue"), name="rgb")


def classes(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs


# --- mosaics -----------------------------------------------------------------------------

def pieces(tmp_path, pixels, cuts, nodata=None):
    """Adjacent pieces of ``pixels`` (rows, cols split at ``cuts``), each its own file."""
    (r, c) = cuts
    out = []
    for i, (r0, r1) in enumerate(((0, r), (r, pixels.shape[1]))):
        for j, (c0, c1) in enumerate(((0, c), (c, pixels.shape[2]))):
            out.append(write_raster(tmp_path / f"piece{i}{j}.tif", pixels[:, r0:r1, c0:c1],
                                    transform=ORIGIN * Affine.translation(c0, r0),
                                    nodata=nodata))
    return out


def test_a_mosaic_predicts_like_the_whole_scene_and_pieces_do_not(tmp_path,
                                                                  tiny_model_file):
    pixels = smooth_noise((190, 230), seed=11)
    whole = write_raster(tmp_path / "whole.tif", pixels, transform=ORIGIN)
    parts = pieces(tmp_path, pixels, (77, 101))
    assert run("predict", whole, "-m", tiny_model_file, "-o", tmp_path / "a").exit_code == 0
    result = run("predict", *parts, "-m", tiny_model_file, "-o", tmp_path / "b", "--mosaic")
    assert result.exit_code == 0, result.output
    expected, transform, crs = classes(tmp_path / "a" / "whole" / "classes.tif")
    mosaic, m_transform, m_crs = classes(tmp_path / "b" / "mosaic" / "classes.tif")
    assert (m_transform, m_crs, mosaic.shape) == (transform, crs, expected.shape)
    assert np.array_equal(mosaic, expected)
    # one by one, the pieces disagree with the whole near their borders: the seams
    assert run("predict", *parts, "-m", tiny_model_file, "-o", tmp_path / "c").exit_code == 0
    separate = np.zeros_like(expected)
    for path in parts:
        data, t, _ = classes(tmp_path / "c" / path.stem / "classes.tif")
        col, row = ~ORIGIN * (t.c, t.f)
        separate[round(row):round(row) + data.shape[0], round(col):round(col) + data.shape[1]] \
            = data
    assert (separate != expected).any()
    assert (tmp_path / "b" / "items.json").is_file()


def test_a_mosaic_of_scenes_with_nodata_keeps_their_validity(tmp_path, tiny_model_file):
    """Pieces with nodata 0 (a nodata corner, and pixels where one band alone is 0, as on
    Landsat's edges): the mosaic reads every pixel, valid or not, as the whole file does."""
    pixels = smooth_noise((150, 170), seed=4)
    pixels[:, :30, :40] = 0
    pixels[0, 60:90, 50:120] = 0  # one band 0: still valid
    whole = write_raster(tmp_path / "whole.tif", pixels, transform=ORIGIN, nodata=0)
    parts = pieces(tmp_path, pixels, (71, 83), nodata=0)
    assert run("predict", whole, "-m", tiny_model_file, "-o", tmp_path / "a").exit_code == 0
    assert run("predict", *parts, "-m", tiny_model_file, "-o", tmp_path / "b",
               "--mosaic").exit_code == 0
    expected, _, _ = classes(tmp_path / "a" / "whole" / "classes.tif")
    mosaic, _, _ = classes(tmp_path / "b" / "mosaic" / "classes.tif")
    assert (expected == 255).sum() == 30 * 40
    assert np.array_equal(mosaic, expected)


def test_gaps_between_mosaic_pieces_are_nodata(tmp_path, tiny_model_file):
    pixels = smooth_noise((128, 128), seed=3)
    a = write_raster(tmp_path / "a.tif", pixels[:, :64, :64], transform=ORIGIN)
    b = write_raster(tmp_path / "b.tif", pixels[:, 64:, 64:],
                     transform=ORIGIN * Affine.translation(64, 64))
    assert run("predict", a, b, "-m", tiny_model_file, "-o", tmp_path / "out",
               "--mosaic").exit_code == 0
    data, _, _ = classes(tmp_path / "out" / "mosaic" / "classes.tif")
    assert data.shape == (128, 128)
    assert (data[:64, 64:] == 255).all() and (data[64:, :64] == 255).all()
    assert (data[:64, :64] != 255).all() and (data[64:, 64:] != 255).all()


@pytest.mark.parametrize("second, message", [
    (dict(crs="EPSG:32634"), "is in EPSG:32634.*warp them to one with --crs"),
    (dict(transform=ORIGIN * Affine.translation(64.5, 0)),
     "not on the pixel grid.*--resolution 1,"),
    (dict(transform=Affine(2.0, 0, 500064, 0, -2.0, 5000000)),
     "resample them to one with --crs EPSG:32633"),
])
def test_scenes_that_do_not_share_a_grid_are_refused(tmp_path, second, message):
    pixels = smooth_noise((64, 64), seed=1)
    a = write_raster(tmp_path / "a.tif", pixels, transform=ORIGIN)
    kwargs = dict(transform=ORIGIN * Affine.translation(64, 0))
    kwargs.update(second)
    b = write_raster(tmp_path / "b.tif", pixels, **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        mosaic_vrt([str(a), str(b)], tmp_path / "m.vrt")


def test_scenes_in_other_crss_are_warped_onto_one_grid_with_crs(tmp_path, tiny_model_file):
    """The right half of a scene delivered in Web Mercator: refused as it is; with --crs
    EPSG:32633 --resolution 1 both halves are read (warped on the fly) onto one 1 m grid
    and predicted as one scene, with no gap between them."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    pixels = smooth_noise((160, 192), seed=7)
    whole = write_raster(tmp_path / "whole.tif", pixels, transform=ORIGIN)
    left = write_raster(tmp_path / "left.tif", pixels[:, :, :96], transform=ORIGIN)
    right_utm = ORIGIN * Affine.translation(96, 0)
    bounds = (right_utm.c, right_utm.f - 160, right_utm.c + 96, right_utm.f)
    transform, width, height = calculate_default_transform("EPSG:32633", "EPSG:3857", 96, 160,
                                                           *bounds)
    merc = np.zeros((3, height, width), np.uint8)
    reproject(pixels[:, :, 96:], merc, src_transform=right_utm, src_crs="EPSG:32633",
              dst_transform=transform, dst_crs="EPSG:3857", resampling=Resampling.bilinear,
              dst_nodata=0)
    right = write_raster(tmp_path / "right.tif", merc, transform=transform, crs="EPSG:3857",
                         nodata=0)
    refused = run("predict", left, right, "-m", tiny_model_file, "-o", tmp_path / "no",
                  "--mosaic")
    assert refused.exit_code == 1 and "--crs CRS --resolution PIXEL_SIZE" in refused.output
    assert run("predict", whole, "-m", tiny_model_file, "-o", tmp_path / "a").exit_code == 0
    result = run("predict", left, right, "-m", tiny_model_file, "-o", tmp_path / "b",
                 "--mosaic", "--crs", "EPSG:32633", "--resolution", "1")
    assert result.exit_code == 0, result.output
    expected, _, _ = classes(tmp_path / "a" / "whole" / "classes.tif")
    mosaic, m_transform, m_crs = classes(tmp_path / "b" / "mosaic" / "classes.tif")
    assert m_crs == "EPSG:32633" and (m_transform.a, m_transform.e) == (1.0, -1.0)
    col, row = ~m_transform * (ORIGIN.c, ORIGIN.f)
    assert (col, row) == (round(col), round(row)) and col == 0  # on the same 1 m grid
    # the whole scene's pixels within the mosaic (the warped half may reach a pixel further)
    mosaic = mosaic[round(row):round(row) + 160, :192]
    assert (mosaic[2:158, :190] != 255).all()  # no gap where the halves meet
    # the scenes' pixels as the mosaic reads them: the left half exactly (its grid is the
    # mosaic's), the right half within a few values after two bilinear warps
    with rasterio.open(tmp_path / "b" / "mosaic.vrt") as ds:
        read = ds.read(window=((round(row), round(row) + 160), (0, 192))).astype(int)
    assert np.array_equal(read[:, :, :96], pixels[:, :, :96])
    assert np.abs(read[:, 2:158, 98:190] - pixels[:, 2:158, 98:190]).mean() < 8
    # the tile grid starts a row higher than the whole scene's: classes agree, not exactly
    assert (mosaic[2:158, :190] == expected[2:158, :190]).mean() > 0.9


@pytest.mark.parametrize("args, message", [
    (["--crs", "EPSG:32633", "--resolution", "1"], "add --mosaic"),
    (["--mosaic", "--crs", "EPSG:32633"], "go together"),
    (["--mosaic", "--crs", "EPSG:nope", "--resolution", "1"], "not a CRS GDAL knows"),
    (["--mosaic", "--crs", "EPSG:32633", "--resolution", "0"], "positive pixel size"),
])
def test_bad_warp_options_are_usage_errors(tmp_path, tiny_model_file, args, message):
    a = write_raster(tmp_path / "a.tif", smooth_noise((32, 32)), transform=ORIGIN)
    result = run("predict", a, a, "-m", tiny_model_file, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


# --- bands by description ----------------------------------------------------------------

def test_bands_are_picked_by_their_descriptions(tmp_path, make_bundle):
    from geoseg.prediction.options import PredictOptions
    from geoseg.prediction.flow import predict_scene

    pixels = smooth_noise((64, 64), seed=2, bands=4)
    scene = write_raster(tmp_path / "bgrn.tif", pixels)
    with rasterio.open(scene, "r+") as ds:
        for i, name in enumerate(("Blue", "green", "RED", "nir"), start=1):
            ds.set_band_description(i, name)
    model = make_bundle(arch="pixelwise", bands=("red", "green", "blue"), tile_size=64,
                        overlap=32)
    reordered = write_raster(tmp_path / "rgb.tif", pixels[[2, 1, 0]])
    predict_scene(scene, tmp_path / "out", model=model)
    predict_scene(reordered, tmp_path / "out", model=model, options=PredictOptions())
    assert np.array_equal(classes(tmp_path / "out" / "bgrn" / "classes.tif")[0],
                          classes(tmp_path / "out" / "rgb" / "classes.tif")[0])


# --- STAC --------------------------------------------------------------------------------

def band_files(tmp_path, pixels, *, names=("red", "green", "blue")):
    folder = tmp_path / "assets"
    folder.mkdir(exist_ok=True)
    return {n: write_raster(folder / f"{n}.tif", pixels[i], transform=ORIGIN)
            for i, n in enumerate(names)}


def make_item(item_id, files, *, eo=True, keys=None):
    from pystac.extensions.eo import Band, EOExtension

    item = pystac.Item(id=item_id, geometry={"type": "Point", "coordinates": [15.0, 45.0]},
                       bbox=[15, 45, 15, 45], datetime=pystac.utils.str_to_datetime(
                           "2024-05-01T10:00:00Z"), properties={})
    for (name, path), key in zip(files.items(), keys or files, strict=True):
        asset = pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF,
                             roles=["data"])
        item.add_asset(key, asset)
        if eo:
            EOExtension.ext(asset, add_if_missing=True).bands = [
                Band.create(name=f"B-{name}", common_name=name)]
    return item


def test_a_stac_item_predicts_like_the_stacked_scene(tmp_path, rgb_model):
    pixels = smooth_noise((150, 130), seed=9)
    direct = write_raster(tmp_path / "rgb.tif", pixels, transform=ORIGIN)
    item = make_item("scene-2024", band_files(tmp_path, pixels), keys=["b4", "b3", "b2"])
    item_path = tmp_path / "catalog" / "scene-2024.json"
    item.set_self_href(str(item_path))
    item.save_object(include_self_link=True)
    result = run("predict", item_path, "-m", rgb_model, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    run("predict", direct, "-m", rgb_model, "-o", tmp_path / "direct")
    got = classes(tmp_path / "out" / "scene-2024" / "classes.tif")
    want = classes(tmp_path / "direct" / "rgb" / "classes.tif")
    assert np.array_equal(got[0], want[0]) and got[1:] == want[1:]
    out_item = json.loads((tmp_path / "out" / "scene-2024" / "item.json").read_text())
    assert out_item["properties"]["proj:code"] == "EPSG:32633"  # projection v2
    assert out_item["properties"]["proj:shape"] == [150, 130]
    assert out_item["properties"]["datetime"] == "2024-05-01T10:00:00Z"
    assert out_item["properties"]["processing:software"]["geoseg"]
    classes_asset = out_item["assets"]["classes"]
    assert classes_asset["href"] == "./classes.tif"
    names = [c["name"] for c in classes_asset["classification:classes"]]
    assert names == ["background", "building"]
    assert classes_asset["file:checksum"].startswith("1220")
    assert classes_asset["raster:bands"][0]["nodata"] == 255
    rels = {link["rel"]: link["href"] for link in out_item["links"]}
    assert rels["derived_from"] == str(item_path) and "ml-model" in rels
    collection = json.loads((tmp_path / "out" / "items.json").read_text())
    assert [f["id"] for f in collection["features"]] == ["scene-2024"]
    assert collection["features"][0]["assets"]["classes"]["href"] == \
        "./scene-2024/classes.tif"


def test_a_collection_over_http_with_bands_at_two_resolutions(tmp_path, rgb_model,
                                                              http_root):
    root, url, _ = http_root
    pixels = smooth_noise((128, 128), seed=4)
    files = band_files(root, pixels)
    coarse = pixels[2].reshape(64, 2, 64, 2).mean(axis=(1, 3)).astype(np.uint8)
    files["blue"] = write_raster(root / "assets" / "blue-2m.tif", coarse,
                                 transform=Affine(2.0, 0, 500000, 0, -2.0, 5000000))
    collection = pystac.Collection(id="c", description="test", extent=pystac.Extent(
        pystac.SpatialExtent([[15, 45, 15, 45]]), pystac.TemporalExtent([[None, None]])))
    for item_id in ("north", "south"):
        item = make_item(item_id, {n: f"{url}/assets/{Path(p).name}"
                                   for n, p in files.items()})
        collection.add_item(item)
    collection.normalize_hrefs(str(root / "stac"))
    collection.make_all_asset_hrefs_absolute()
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    result = run("predict", f"{url}/stac/collection.json", "-m", rgb_model, "-o",
                 tmp_path / "out")
    assert result.exit_code == 0, result.output
    for item_id in ("north", "south"):
        data, transform, _ = classes(tmp_path / "out" / item_id / "classes.tif")
        assert data.shape == (128, 128) and transform == ORIGIN  # the finest band's grid
    collection = json.loads((tmp_path / "out" / "items.json").read_text())
    features = collection["features"]  # written an item at a time: still an ItemCollection
    assert sorted(f["id"] for f in features) == ["north", "south"]
    assert sorted(i.id for i in pystac.ItemCollection.from_dict(collection)) == \
        ["north", "south"]
    assert not list((tmp_path / "out").glob(".items*"))


def test_assets_without_band_names_need_assets_option(tmp_path, rgb_model):
    pixels = smooth_noise((64, 64), seed=5)
    item = make_item("plain", band_files(tmp_path, pixels), eo=False, keys=["b4", "b3", "b2"])
    item_path = tmp_path / "plain.json"
    item.set_self_href(str(item_path))
    item.save_object()
    result = run("predict", item_path, "-m", rgb_model, "-o", tmp_path / "out")
    assert result.exit_code != 0
    assert "no asset holds band 'red'" in result.output and "--assets" in result.output
    result = run("predict", item_path, "-m", rgb_model, "-o", tmp_path / "out",
                 "--assets", "b4,b3,b2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "plain" / "classes.tif").is_file()
    shutil.rmtree(tmp_path / "out")


def test_scenes_with_their_own_alpha_band_are_warped_too(tmp_path):
    from geoseg.inputs.vrt import Warp, mosaic_vrt

    pixels = smooth_noise((64, 64), seed=1, bands=4)
    pixels[3] = 255
    pixels[3, :10] = 0
    a = write_raster(tmp_path / "a.tif", pixels, transform=ORIGIN, photometric="RGB",
                     alpha="YES")
    b = write_raster(tmp_path / "b.tif", pixels[:3], transform=ORIGIN * Affine.translation(64, 0),
                     crs="EPSG:32633")
    vrt = mosaic_vrt([str(a), str(b)], tmp_path / "m.vrt", warp=Warp("EPSG:32633", 1.0))
    with rasterio.open(vrt) as ds:
        assert ds.count == 3 and ds.width >= 128
        mask = ds.dataset_mask()
        assert (mask[:10, :64] == 0).all() and (mask[12:60, 2:126] == 255).all()
