"""Every scene in ../shared/data predicts cleanly, georeferenced exactly like its input.

A 1x1-convolution model keeps this fast; the network is not what is under test here.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import SHARED_DATA, shared_data
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.flow import predict_scene

SCENES = [
    "massachusetts/22978945_15_uint8_clipped.tif",
    "massachusetts/23429155_15_uint8_clipped.tif",
    "new_brunswick/23322E759967N_clipped_1m_1of2.tif",
    "new_brunswick/23322E759967N_clipped_1m_2of2.tif",
    "oam/5b90f92da0d7280005fab355_4310.tif",
    "oam/5dded5bc0140b80006d2e565_23.tif",
    "rasterio/RGB.byte.tif",
    "spacenet/SN4_Atlanta_PS-RGB_732701_3729639_clipped.tif",
    "spacenet/sample_geotiff.tif",
    "landsat/LC08_L1TP_224078_20200518_20200518_01_RT.TIF",
]


def test_the_list_covers_every_scene_in_shared_data():
    shared_data()
    found = sorted(str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.rglob("*")
                   if p.suffix.lower() in {".tif", ".tiff"})
    assert found == sorted(SCENES)


@pytest.mark.integration
@pytest.mark.parametrize("relative", SCENES)
def test_real_scene_predicts_with_exact_georeferencing(tmp_path, make_bundle, relative):
    scene = shared_data(relative)
    with rasterio.open(scene) as src:
        bands, crs, transform, shape = src.count, src.crs, src.transform, src.shape
        masks = src.dataset_mask()
        dtype = src.dtypes[0]
    model = make_bundle(arch="pixelwise", bands=bands, tile_size=256, overlap=64)
    # a uint8 model (scale 1/255): uint16 scenes need a stretch, or are refused (test_fit)
    stretch = (2, 98) if dtype != "uint8" else None
    summary = predict_scene(scene, tmp_path, model=model,
                            options=PredictOptions(block_size=1024, stretch=stretch))
    assert summary["tiles_run"] <= summary["tiles_in_grid"]
    with rasterio.open(tmp_path / scene.stem / "classes.tif") as out:
        assert out.crs == crs and out.transform == transform and out.shape == shape
        classes = out.read(1)
    # the scene's own mask decides nodata, pixel for pixel
    assert ((classes == 255) == (masks == 0)).all()
    assert summary["nodata_pixels"] == int((masks == 0).sum())
    assert set(np.unique(classes)) <= {0, 1, 255}
