"""What GIS software sees of the outputs: class names as categories and an attribute
table (gdalinfo), a QGIS style beside classes.tif with background transparent, and
probabilities with a mask on nodata pixels and GDAL scale 1/255."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.flow import predict_scene

UTM = Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0)


@pytest.fixture
def outputs(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32,
                        classes=("background", "building", "water"))
    pixels = smooth_noise((70, 90), seed=3)
    pixels[:, :20, :30] = 0
    scene = write_raster(tmp_path / "s.tif", pixels, transform=UTM, nodata=0)
    predict_scene(scene, tmp_path / "out", model=model,
                  options=PredictOptions(probabilities=True))
    return tmp_path / "out" / "s"


def test_class_names_are_categories_and_an_attribute_table(outputs):
    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo is absent (apt-get install gdal-bin; CI installs it)")
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(outputs / "classes.tif")],
                                     capture_output=True, text=True, check=True).stdout)
    band = info["bands"][0]
    assert band["categories"] == ["background", "building", "water"]
    rat = info["rat"]  # gdalinfo -json puts the first band's table at the top
    assert rat["tableType"] == "thematic"
    assert [f["name"] for f in rat["fieldDefn"]][:2] == ["value", "class"]
    rows = [r["f"] for r in rat["row"]]
    assert [r[:2] for r in rows] == [[0, "background"], [1, "building"], [2, "water"]]
    assert rows[0][5] == 0 and rows[1][5] == 255  # background transparent


def test_a_qgis_style_sits_beside_the_class_raster(outputs):
    root = ET.parse(outputs / "classes.qml").getroot()
    renderer = root.find("./pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    entries = {e.get("label"): e for e in renderer.iter("paletteEntry")}
    assert list(entries) == ["background", "building", "water"]
    assert entries["background"].get("alpha") == "0"
    assert entries["building"].get("alpha") == "255"
    assert entries["building"].get("color") == "#e41a1c"


def test_probabilities_are_masked_on_nodata_and_scaled(outputs):
    with rasterio.open(outputs / "probabilities.tif") as ds, \
            rasterio.open(outputs / "classes.tif") as classes:
        assert ds.scales == (1 / 255,) * 3 and ds.offsets == (0.0,) * 3
        assert all(rasterio.enums.MaskFlags.per_dataset in f for f in ds.mask_flag_enums)
        mask = ds.read_masks(1)
        nodata = classes.read(1) == 255
        assert nodata[:20, :30].all()
        assert (mask[nodata] == 0).all() and (mask[~nodata] == 255).all()
        values = ds.read(masked=True)
        assert values.mask[:, :20, :30].all()
        # scaled back, the probabilities of a pixel sum to about 1
        total = (ds.read().astype(np.float64) * ds.scales[0]).sum(axis=0)[~nodata]
        assert np.allclose(total, 1.0, atol=3 / 255)
