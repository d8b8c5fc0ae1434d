"""Test-time augmentation: views undone exactly, equivariance, and the pipeline around it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import smooth_noise, write_raster
from geoseg.model.tta import TTA_MODES
from geoseg.prediction.options import PredictOptions
from geoseg.errors import ConfigError
from geoseg.model import TTA, forward_probabilities, load_bundle
from geoseg.prediction.flow import predict_scene
from geoseg.tiling import TileGrid
from test_predict import counting


def random_batch(n=2, c=3, size=64, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, c, size, size))
                            .astype(np.float32))


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_every_view_is_undone_before_averaging(make_bundle, tta):
    # a 1x1 convolution commutes with every rotation and flip: misaligned undo would show
    bundle = load_bundle(make_bundle(arch="pixelwise"))
    x = random_batch()
    plain = forward_probabilities(bundle, x).numpy()
    np.testing.assert_allclose(forward_probabilities(bundle, x, tta=tta).numpy(), plain,
                               atol=1e-6)


def test_d4_prediction_turns_and_mirrors_with_the_input(make_bundle):
    bundle = load_bundle(make_bundle(arch="tinycnn", seed=3))
    x = random_batch(seed=1)

    def predicted(batch, tta):
        return forward_probabilities(bundle, batch, tta=tta)

    for tta, equivariant in (("none", False), ("d4", True)):
        turned = predicted(torch.rot90(x, 1, (2, 3)), tta)
        mirrored = predicted(x.flip(3), tta)
        reference = predicted(x, tta)
        same = (torch.allclose(turned, torch.rot90(reference, 1, (2, 3)), atol=1e-5)
                and torch.allclose(mirrored, reference.flip(3), atol=1e-5))
        assert same == equivariant, f"tta={tta}"


def test_the_modes_and_their_views_agree():
    assert tuple(TTA) == TTA_MODES
    assert [len(TTA[m]) for m in TTA_MODES] == [1, 4, 8]
    assert len(set(TTA["d4"])) == 8 and TTA["none"] == ((0, False),)


def test_tta_is_the_mean_of_the_views_probabilities(make_bundle):
    # checks the averaging (the views here are built like the code's; the undo itself is
    # checked by the two tests above, which do not rely on it)
    bundle = load_bundle(make_bundle(arch="tinycnn", seed=1))
    x = random_batch(n=1, seed=2)
    with torch.inference_mode():
        views = [torch.softmax(bundle.network(torch.rot90(x, k, (2, 3)).flip(3) if f
                                              else torch.rot90(x, k, (2, 3))), 1)
                 for k, f in TTA["d4"]]
        undone = [torch.rot90(p.flip(3) if f else p, -k, (2, 3))
                  for p, (k, f) in zip(views, TTA["d4"])]
    expected = torch.stack(undone).mean(0)
    torch.testing.assert_close(forward_probabilities(bundle, x, tta="d4"), expected,
                               atol=1e-6, rtol=1e-5)
    probs = forward_probabilities(bundle, x, tta="d4")
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs.sum(1)))


def test_tta_keeps_outputs_seamless_and_runs_each_tile_once_per_view(tmp_path, make_bundle):
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((150, 120), seed=4))
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32, seed=2)
    grid = TileGrid.build(height=150, width=120, size=64, overlap=32)
    outputs = {}
    for tta, block_size in (("flips", 32), ("flips", 96), ("none", 32)):
        bundle = counting(load_bundle(model))
        out = tmp_path / f"{tta}-{block_size}"
        summary = predict_scene(scene, out, model=bundle, options=PredictOptions(
            tta=tta, block_size=block_size, probabilities=True))
        assert summary["tta"] == tta
        assert summary["tiles_run"] == len(grid) == 12
        # 12 tiles at batch 8: two batches of 6 a view, whatever the block size
        assert bundle.network.batches == [6] * 2 * len(TTA[tta])
        with rasterio.open(out / "scene" / "classes.tif") as ds:
            assert ds.tags()["GEOSEG_TTA"] == tta
        outputs[tta, block_size] = [(out / "scene" / n).read_bytes()
                                    for n in ("classes.tif", "probabilities.tif")]
    assert outputs["flips", 32] == outputs["flips", 96]
    pixels = {}
    for tta in ("flips", "none"):
        with rasterio.open(tmp_path / f"{tta}-32" / "scene" / "probabilities.tif") as ds:
            pixels[tta] = ds.read()
    assert (pixels["flips"] != pixels["none"]).any()


def test_the_bundle_default_applies_unless_an_option_overrides_it(tmp_path, make_bundle):
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((70, 70)))
    model = make_bundle(tta="flips")
    assert load_bundle(model).meta.tta == "flips"
    summary = predict_scene(scene, tmp_path / "a", model=model, options=PredictOptions())
    assert summary["tta"] == "flips"
    summary = predict_scene(scene, tmp_path / "b", model=model,
                            options=PredictOptions(tta="none"))
    assert summary["tta"] == "none"


def test_unknown_tta_is_refused_with_the_valid_ones(make_bundle):
    with pytest.raises(ConfigError, match="none, flips, d4"):
        PredictOptions(tta="rotations")
    with pytest.raises(ConfigError, match="none, flips, d4"):
        make_bundle(tta="all")


def test_a_bundle_with_an_unknown_tta_is_refused_when_read(tmp_path, make_bundle):
    from dataclasses import replace

    from geoseg.errors import BundleError
    from geoseg.model import read_meta, save_bundle

    bundle = load_bundle(make_bundle())
    path = tmp_path / "odd.safetensors"
    save_bundle(replace(bundle, meta=replace(bundle.meta, tta="sideways")), path)
    with pytest.raises(BundleError, match=r"odd.safetensors.*tta 'sideways'"):
        read_meta(path)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_views_go_through_together_where_the_device_wants_it(make_bundle, monkeypatch, tta):
    """On CUDA every view of a batch goes through the network in one call (views x batch
    tiles); the probabilities are those of one view at a time, up to float rounding."""
    import geoseg.model.inference as inference

    bundle = load_bundle(make_bundle(arch="tinycnn", seed=2))
    x = random_batch(n=3, seed=4)
    one_at_a_time = forward_probabilities(bundle, x, tta=tta)
    calls = []
    network = bundle.network

    class Counting(torch.nn.Module):
        def forward(self, batch):
            calls.append(batch.shape[0])
            return network(batch)

    monkeypatch.setattr(inference, "views_per_forward", lambda device, views: views)
    import dataclasses

    counted = dataclasses.replace(bundle, network=Counting())
    together = forward_probabilities(counted, x, tta=tta)
    assert calls == [3 * len(TTA[tta])]
    torch.testing.assert_close(together, one_at_a_time, atol=1e-5, rtol=1e-5)
    assert inference.views_per_forward.__name__ == "<lambda>"  # the patch took effect
