"""Numerics stated and tested: the classifier's logits in float32 under autocast, IEEE
float32 unless tf32 is asked for, non-finite network output fails a scene in one line."""

from __future__ import annotations

import pytest
import torch

from conftest import smooth_noise, write_raster
from geoseg.classes import make_classes
from geoseg.model.bundle import create_bundle
from geoseg.model.optimize import Float32Classifier, for_inference


def _bundle(arch="tinycnn", **kwargs):
    torch.manual_seed(0)
    return create_bundle(arch=arch, encoder="resnet18", classes=make_classes(("a", "b")),
                         bands=("r", "g", "b"), tile_size=64, overlap=32, **kwargs)


def test_the_classifier_runs_in_float32_under_bfloat16_autocast():
    plain = _bundle()
    prepared = for_inference(plain)
    heads = [m for m in prepared.network.modules() if isinstance(m, Float32Classifier)]
    assert len(heads) == 1
    assert not any(isinstance(m, Float32Classifier) for m in plain.network.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain.network(x).dtype == torch.bfloat16
        assert prepared.network(x).dtype == torch.float32
    with torch.inference_mode():  # under float32 nothing changes
        assert torch.equal(plain.network(x), prepared.network(x))


def test_float32_logits_are_not_rounded_to_bfloat16():
    """What the float32 classifier buys under bfloat16: logits with float32's 24 mantissa
    bits, where a network run wholly in bfloat16 rounds them to 8 before the softmax."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 2, 1)).eval()
    x = torch.randn(4, 3, 32, 32) * 4
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = net(x).float()
        net[2] = Float32Classifier(net[2])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept = net(x)
    assert kept.dtype == torch.float32
    assert torch.equal(rounded, rounded.bfloat16().float())
    assert (kept != kept.bfloat16().float()).float().mean() > 0.9


def test_smp_networks_get_their_segmentation_head_wrapped():
    prepared = for_inference(_bundle(arch="Unet", arch_kwargs={"encoder_depth": 3,
                                                              "decoder_channels": (16, 8, 4)}))
    names = [n for n, m in prepared.network.named_modules()
             if isinstance(m, Float32Classifier)]
    assert names == ["segmentation_head.0"]


@pytest.mark.parametrize("precision, allowed", [("float32", False), ("tf32", True),
                                                ("bfloat16", False)])
def test_float32_means_ieee_float32_on_cuda(precision, allowed):
    from geoseg.model.devices import set_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allowed
        set_tf32("cuda:0", precision)
        assert torch.backends.cuda.matmul.allow_tf32 is allowed
        assert torch.backends.cudnn.allow_tf32 is allowed
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allowed
        set_tf32("cpu", precision)  # the CPU has no TF32: nothing changes
        assert torch.backends.cudnn.allow_tf32 is (not allowed)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_refused_on_the_cpu(tmp_path, tiny_model_file):
    from click.testing import CliRunner

    from geoseg_pipelines.cli import cli

    scene = write_raster(tmp_path / "s.tif", smooth_noise((64, 64)))
    result = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(tiny_model_file),
                                      "-o", str(tmp_path / "out"), "--device", "cpu",
                                      "--precision", "tf32"], obj={})
    assert result.exit_code == 2, result.output
    assert "tf32 is a CUDA precision" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_non_finite_output_fails_the_scene_in_one_line(tmp_path, tiny_model_file,
                                                       monkeypatch, runtime):
    from click.testing import CliRunner

    import geoseg.model.inference as inference
    from geoseg_pipelines.cli import cli

    real = inference.forward_probabilities

    def overflowing(bundle, batch, **kwargs):
        probs = real(bundle, batch, **kwargs) + 0  # a copy, a tensor or a numpy array
        probs[0, :, 3, 5] = float("nan")  # softmax of an infinite logit
        return probs

    monkeypatch.setattr(inference, "forward_probabilities", overflowing)
    scene = write_raster(tmp_path / "s.tif", smooth_noise((64, 64)))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(tiny_model_file),
                                      "-o", str(out), "--runner", "local", "--runtime",
                                      runtime], obj={})
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("error:"))
    assert "not finite" in line and "--precision float32" in line
    assert not (out / "s" / "classes.tif").exists()
