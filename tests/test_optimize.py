"""The network in its inference form: batch norm folded, optionally compiled; prediction
outputs unchanged in practice and identical between the runners."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from conftest import smooth_noise, write_raster
from geoseg.prediction.options import PredictOptions
from geoseg.prediction.flow import predict_scene
from geoseg.model import (fold_batch_norm, for_inference, forward_probabilities,
                          load_bundle)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


class Untraceable(ConvBN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def trained_stats(network: nn.Module) -> nn.Module:
    """Running statistics far from the identity, as a trained network has them."""
    torch.manual_seed(0)
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return network.eval()


def test_batch_norm_is_folded_into_the_convolution_before_it():
    network = trained_stats(ConvBN())
    folded = fold_batch_norm(network)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in network.modules()), "copy, not in place"
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(folded(x), network(x), atol=1e-5)


def test_a_network_fx_cannot_trace_runs_as_it_is():
    network = trained_stats(Untraceable())
    assert fold_batch_norm(network) is network


def test_smp_unet_folds_and_predicts_the_same_probabilities(make_bundle):
    bundle = load_bundle(make_bundle(arch="Unet", encoder="resnet18", tile_size=64,
                                     overlap=32, arch_kwargs={"encoder_depth": 3,
                                                              "decoder_channels": (32, 16, 8)}))
    trained_stats(bundle.network)
    prepared = for_inference(bundle)
    assert prepared.prepared and for_inference(prepared) is prepared
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.network.modules())
    x = torch.randn(3, 3, 64, 64)
    assert torch.allclose(forward_probabilities(prepared, x),
                          forward_probabilities(bundle, x), atol=1e-4)


def test_compiled_network_pads_short_batches_and_predicts_the_same_classes(tmp_path,
                                                                           make_bundle):
    pytest.importorskip("torch._inductor")
    # 150 x 130 px at tile 64 / overlap 32: 16 tiles in blocks of up to 4, batches of 3: short
    # batches everywhere; the compiled network runs only batches of 3
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((150, 130), seed=2))
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    results = {}
    for compile in (False, True):
        out = tmp_path / f"out-{compile}"
        summary = predict_scene(scene, out, model=model, options=PredictOptions(
            block_size=64, batch_size=3, compile=compile, precision="float32"))
        with rasterio.open(out / "scene" / "classes.tif") as ds:
            results[compile] = ds.read(1), ds.tags()
        assert summary["tiles_run"] == 16
    (plain, plain_tags), (compiled, tags) = results[False], results[True]
    assert tags["GEOSEG_COMPILE"] == "inductor" and "GEOSEG_COMPILE" not in plain_tags
    assert 0.02 < (plain == 1).mean() < 0.98
    assert (compiled == plain).mean() >= 0.999
    assert np.array_equal(compiled == 255, plain == 255)
