"""CUDA errors are one line that fails a scene (DESIGN.md promise 12): out of memory, a bad
ordinal, a busy or exclusive GPU, a torch build without kernels for the GPU, a missing
compiler for --compile; injected here, since this machine has no GPU."""

from __future__ import annotations

import json

import pytest

from conftest import smooth_noise, write_raster
from geoseg.errors import DeviceError
from geoseg.model.devices import device_error


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError (matched by name, as torch's own)."""


class BackendCompilerFailed(RuntimeError):
    """Stands in for torch._dynamo.exc.BackendCompilerFailed."""


CASES = [
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB "
                      "total capacity)"), "out of GPU memory", "--batch-size"),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously "
                  "reported"), "out of GPU memory", "--block-size"),
    (RuntimeError("CUDA error: invalid device ordinal\nCompile with TORCH_USE_CUDA_DSA"),
     "no such CUDA device", "CUDA_VISIBLE_DEVICES"),
    (RuntimeError("CUDA error: CUDA-capable device(s) is/are busy or unavailable"),
     "busy or in exclusive-process mode", "another process holds it"),
    (RuntimeError("CUDA error: no kernel image is available for execution on the device"),
     "no kernels for the GPU", "compute capability"),
    (RuntimeError("The NVIDIA driver on your system is too old (found version 11040)... "
                  "CUDA driver version is insufficient for CUDA runtime version"),
     "NVIDIA driver", "--device cpu"),
    (BackendCompilerFailed("backend='inductor' raised:\nInvalidCxxCompiler: No working C++ "
                           "compiler found"), "--compile could not compile", "without --compile"),
    (RuntimeError("InductorError: RuntimeError: Failed to find C compiler. Please specify "
                  "via CC environment variable"), "--compile could not compile", "gcc"),
]


@pytest.mark.parametrize("exc, what, fix", CASES)
def test_cuda_errors_become_one_line_that_says_what_to_do(exc, what, fix):
    mapped = device_error(exc)
    assert isinstance(mapped, DeviceError) and isinstance(mapped, RuntimeError)
    line = str(mapped)
    assert "\n" not in line and what in line and fix in line
    assert type(exc).__name__ in line  # the original named, for a search


def test_other_errors_stay_what_they_are():
    assert device_error(ValueError("bad value")) is None
    assert device_error(RuntimeError("shape mismatch in add_")) is None
    assert device_error(MemoryError()) is None  # host memory is not the GPU's


@pytest.fixture
def scenes(tmp_path):
    return [write_raster(tmp_path / f"s{i}.tif", smooth_noise((96, 96), seed=i))
            for i in range(2)]


def _predict(args):
    from click.testing import CliRunner

    from geoseg_pipelines.cli import cli

    return CliRunner().invoke(cli, ["predict", *map(str, args)], obj={})


def test_out_of_memory_in_process_fails_the_scene_and_writes_the_summary(
        tmp_path, scenes, tiny_model_file, monkeypatch):
    """The first scene's forward pass runs out of GPU memory: that scene fails in one line,
    the next one runs, the summary is written, no traceback reaches the terminal."""
    import geoseg.model.inference as inference

    real, calls = inference.forward_probabilities, []

    def flaky(bundle, batch, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(bundle, batch, **kwargs)

    monkeypatch.setattr(inference, "forward_probabilities", flaky)
    out = tmp_path / "out"
    result = _predict([*scenes, "-m", tiny_model_file, "-o", out, "--runner", "local",
                       "--no-preview"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "out of GPU memory" in errors[0]
    assert "1 of 2 scene(s) failed" in errors[1]
    summary = json.loads((out / "summary.json").read_text())
    status = {s["scene"].rsplit("/", 1)[-1]: s["status"] for s in summary["scenes"]}
    assert status == {"s0.tif": "failed", "s1.tif": "done"}
    assert not (out / "s0").exists()  # nothing partial under a final name
    assert (out / "s1" / "classes.tif").is_file()


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_model_that_cannot_load_on_its_device_is_one_line(tmp_path, scenes, runtime,
                                                            tiny_model_file, monkeypatch):
    import geoseg.model.bundle as bundle
    import geoseg.model.onnx_graphs as onnx_graphs
    import geoseg.model.loading as loading

    def busy(*args, **kwargs):
        raise RuntimeError("CUDA error: CUDA-capable device(s) is/are busy or unavailable")

    monkeypatch.setattr(bundle, "load_bundle", busy)
    monkeypatch.setattr(loading, "load_bundle", busy)
    monkeypatch.setattr(onnx_graphs, "ort_session", busy)  # the session takes the device
    result = _predict([scenes[0], "-m", tiny_model_file, "-o", tmp_path / "out",
                       "--runner", "local", "--runtime", runtime])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "busy or in exclusive-process mode" in result.output


def test_a_dask_task_s_cuda_error_reaches_the_client_as_one_line():
    """Tasks raise the mapped error without the torch exception chained to it (tblib would
    pickle the chain to the client)."""
    from geoseg_pipelines.tasks import portable_errors

    @portable_errors
    def predict_task():
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    with pytest.raises(DeviceError, match="out of GPU memory") as info:
        predict_task()
    assert info.value.__cause__ is None and info.value.__context__ is None
