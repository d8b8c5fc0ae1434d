"""Any model in and out (DESIGN.md promise 13): TorchScript, torch.export and ONNX files
imported behind one metadata contract, ONNX/pt2 exported with an MLM item, runtimes by name.

The networks are made here: a plain torch module (not smp), scripted, exported and
converted to ONNX with QGIS Deepness metadata."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import warnings
from click.testing import CliRunner
from torch import nn

from conftest import REPO, smooth_noise, write_raster
from geoseg_pipelines.cli import cli

DEMO = REPO / "data" / "demo" / "23429155_15_uint8_clipped.tif"
SHIPPED = REPO / "models" / "buildings.safetensors"
SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"


class Plain(nn.Module):
    """Two 3x3 convolutions: a network that is no smp architecture."""

    def __init__(self, channels: int = 3, classes: int = 2, softmax: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(channels, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 3, padding=1)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(torch.relu(self.a(x / 255.0)))
        return torch.softmax(y, dim=1) if self.softmax else y


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    return result.exit_code, result.output


def scene(tmp_path: Path, name: str = "scene.tif", size: int = 96) -> Path:
    return write_raster(tmp_path / name, smooth_noise((size, size)))


def onnx_file(path: Path, network: nn.Module, *, shape=(1, 3, 64, 64), dynamic=False,
              props: dict | None = None) -> Path:
    import onnx

    from geoseg.model.onnx_graphs import to_onnx

    if dynamic:
        data = to_onnx(network, in_channels=shape[1], size=shape[2])
    else:
        import io

        buf = io.BytesIO()
        program = torch.onnx.export(network.eval(), (torch.zeros(*shape),), dynamo=True)
        program.save(buf)
        data = buf.getvalue()
    model = onnx.load_model_from_string(data)
    for key, value in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    path.write_bytes(model.SerializeToString())
    return path


DEEPNESS = {"model_type": "Segmentor", "class_names": {"0": "background", "1": "building"},
            "resolution": 200, "tiles_size": 64, "tiles_overlap": 25,
            "standardization_mean": [0.0, 0.0, 0.0],
            "standardization_std": [1 / 255, 1 / 255, 1 / 255]}


def classes_of(folder: Path) -> np.ndarray:
    with rasterio.open(next(folder.glob("*/classes.tif"))) as ds:
        return ds.read(1)


def direct_classes(network: nn.Module, path: Path) -> np.ndarray:
    """The network on the whole scene at once (a 2-layer network: tiling with overlap
    changes nothing), as classes."""
    with rasterio.open(path) as ds:
        x = torch.from_numpy(ds.read().astype(np.float32))[None]
    with torch.inference_mode():
        return network.eval()(x)[0].argmax(0).numpy().astype(np.uint8)


def test_torchscript_module_imports_and_predicts_its_own_classes(tmp_path):
    network = Plain()
    file = tmp_path / "plain.pt"
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; users still have it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(network), str(file))
    code, out = run("model", "import", file, "-o", tmp_path / "m.safetensors", "--classes",
                    "background,building", "--bands", "red,green,blue", "--scale", "1",
                    "--tile-size", "64", "--overlap", "16")
    assert code == 0, out
    assert "TorchScript module" in out and "logits out" in out
    assert "receptive field 5 px" in out  # two 3x3 convolutions, measured
    code, info = run("info", tmp_path / "m.safetensors")
    assert "TorchScript module, logits out; runs on torch" in info
    image = scene(tmp_path)
    code, out = run("predict", image, "--model", tmp_path / "m.safetensors", "--out",
                    tmp_path / "out", "--no-preview")
    assert code == 0, out
    got = classes_of(tmp_path / "out")
    assert (got == direct_classes(network, image)).mean() == 1.0
    with rasterio.open(next((tmp_path / "out").glob("*/classes.tif"))) as ds:
        assert ds.tags()["GEOSEG_RUNTIME"] == "torch"


def test_pt2_program_imports_with_dynamic_shapes(tmp_path):
    network = Plain().eval()
    dims = ({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
             3: torch.export.Dim.DYNAMIC},)
    program = torch.export.export(network, (torch.zeros(2, 3, 64, 64),), dynamic_shapes=dims)
    file = tmp_path / "plain.pt2"
    torch.export.save(program, str(file))
    code, out = run("model", "import", file, "-o", tmp_path / "m.safetensors", "--classes",
                    "background,building", "--bands", "r,g,b", "--scale", "1",
                    "--tile-size", "64")
    assert code == 0, out
    assert "torch.export program" in out and "output stride 1" in out
    image = scene(tmp_path)
    code, out = run("predict", image, "--model", tmp_path / "m.safetensors", "--out",
                    tmp_path / "out", "--no-preview", "--block-size", "64")
    assert code == 0, out
    assert (classes_of(tmp_path / "out") == direct_classes(network, image)).all()


def test_onnx_with_deepness_metadata_takes_its_classes_tiles_and_scaling(tmp_path):
    network = Plain(softmax=True)
    file = onnx_file(tmp_path / "deep.onnx", network, props=DEEPNESS)
    bundle = tmp_path / "m.safetensors"
    code, out = run("model", "import", file, "-o", bundle)
    assert code == 0, out
    from geoseg.model.meta import read_meta

    meta = read_meta(bundle)
    assert meta.network == "onnx" and meta.output == "probabilities"
    assert [c.name for c in meta.classes] == ["background", "building"]
    assert meta.tile_size == 64 and meta.fixed_tile and meta.fixed_batch == 1
    assert meta.overlap == 16 and meta.gsd == 2.0
    # Deepness divides by 255 and standardizes with mean 0, std 1/255: raw values in
    assert np.allclose(np.array(meta.scale) / np.array(meta.std), 1.0)
    image = scene(tmp_path)
    code, out = run("predict", image, "--model", bundle, "--out", tmp_path / "out",
                    "--no-preview")
    assert code == 0, out
    assert (classes_of(tmp_path / "out") == direct_classes(network, image)).mean() > 0.999
    with rasterio.open(next((tmp_path / "out").glob("*/classes.tif"))) as ds:
        assert ds.tags()["GEOSEG_RUNTIME"] == "onnxruntime"
    code, out = run("predict", image, "--model", bundle, "--out", tmp_path / "o2",
                    "--runtime", "torch")
    assert code == 2 and out.count("\n") == 1
    assert "ONNX graph, which runs on onnxruntime" in out


def test_export_round_trip_on_the_demo_scene_and_mlm_item_validates(tmp_path):
    """The shipped model exported to ONNX (normalization and softmax in the graph),
    imported back and predicted: the same classes on at least 99.9% of the demo's pixels;
    its STAC item validates against the MLM v1.5 schema (kept offline in tests/data)."""
    code, out = run("model", "export", SHIPPED, "--format", "onnx", "-o", tmp_path / "exp")
    assert code == 0, out
    onnx_path, item_path = tmp_path / "exp" / "buildings.onnx", tmp_path / "exp" / "buildings.json"
    assert onnx_path.is_file() and item_path.is_file()
    validate_mlm(json.loads(item_path.read_text()))
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["class_names"]) == {"0": "background", "1": "building"}
    assert json.loads(props["tiles_size"]) == 256 and json.loads(props["resolution"]) == 100
    code, out = run("model", "import", onnx_path, "-o", tmp_path / "back.safetensors",
                    "--mlm", item_path)
    assert code == 0, out
    code, out = run("predict", DEMO, "--model", SHIPPED, "--out", tmp_path / "a",
                    "--no-preview", "--runtime", "torch")
    assert code == 0, out
    code, out = run("predict", DEMO, "--model", tmp_path / "back.safetensors", "--out",
                    tmp_path / "b", "--no-preview")
    assert code == 0, out
    agree = (classes_of(tmp_path / "a") == classes_of(tmp_path / "b")).mean()
    assert agree >= 0.999


def validate_mlm(item: dict) -> None:
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        uri = schema.get("$id") or schema.get("id")
        resources.append((uri, Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / "mlm-v1.5.0.json").read_text())
    jsonschema.Draft7Validator(schema, registry=registry).validate(item)


def test_mlm_validation_catches_a_broken_item(tmp_path, make_bundle):
    """The schema check can fail: an item without mlm:input is refused."""
    import jsonschema

    from geoseg.model.meta import read_meta
    from geoseg.model.mlm import mlm_item

    item = mlm_item(read_meta(make_bundle()), kind="onnx", href="./m.onnx",
                    framework_version="2.14.1", created="2026-01-01T00:00:00+00:00")
    validate_mlm(item)
    del item["properties"]["mlm:input"]
    with pytest.raises(jsonschema.ValidationError):
        validate_mlm(item)


def test_pt2_export_imports_back(tmp_path, make_bundle):
    path = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    code, out = run("model", "export", path, "--format", "pt2", "-o", tmp_path / "exp")
    assert code == 0, out
    program = next((tmp_path / "exp").glob("*.pt2"))
    code, out = run("model", "import", program, "-o", tmp_path / "back.safetensors",
                    "--mlm", program.with_suffix(".json"))
    assert code == 0, out
    assert "probabilities out" in out
    image = scene(tmp_path)
    for model, dest in ((path, "a"), (tmp_path / "back.safetensors", "b")):
        code, out = run("predict", image, "--model", model, "--out", tmp_path / dest,
                        "--no-preview", "--runtime", "torch")
        assert code == 0, out
    assert (classes_of(tmp_path / "a") == classes_of(tmp_path / "b")).mean() >= 0.999


def test_runtime_is_in_tags_manifest_and_resume_identity(tmp_path, make_bundle):
    model = make_bundle()
    image = scene(tmp_path)
    code, out = run("predict", image, "--model", model, "--out", tmp_path / "out",
                    "--no-preview")
    assert code == 0, out
    manifest = json.loads(next((tmp_path / "out").glob("*/manifest.json")).read_text())
    assert manifest["options"]["runtime"] == "onnxruntime"  # auto on a CPU
    assert manifest["software"]["onnxruntime"]
    code, out = run("predict", image, "--model", model, "--out", tmp_path / "out",
                    "--no-preview", "--runtime", "torch")
    assert code == 1 and "runtime onnxruntime (now torch)" in out, out
    torch_classes = None
    code, out = run("predict", image, "--model", model, "--out", tmp_path / "t",
                    "--no-preview", "--runtime", "torch")
    assert code == 0, out
    torch_classes = classes_of(tmp_path / "t")
    assert (torch_classes == classes_of(tmp_path / "out")).mean() >= 0.999


def test_onnxruntime_is_byte_identical_across_block_sizes_and_runners(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn")
    image = scene(tmp_path, size=160)
    outputs = []
    for name, extra in (("a", ["--block-size", "64"]), ("b", ["--block-size", "1024"]),
                        ("c", ["--runner", "dask", "--workers", "1",
                               "--dashboard", "127.0.0.1:0"])):
        code, out = run("predict", image, "--model", model, "--out", tmp_path / name,
                        "--no-preview", "--probabilities", "--runtime", "onnxruntime",
                        "--threads", "1", *extra)
        assert code == 0, out
        with rasterio.open(next((tmp_path / name).glob("*/probabilities.tif"))) as ds:
            outputs.append(ds.read())
    assert all((o == outputs[0]).all() for o in outputs[1:])


# ---- bad input: one line each, exit 2 for options, nothing written ----------------------


def refused(tmp_path: Path, *args) -> str:
    out_file = tmp_path / "bad.safetensors"
    code, out = run("model", "import", *args, "-o", out_file)
    assert code != 0 and out.startswith("error:") and out.count("\n") == 1, out
    assert not out_file.exists() and not list(tmp_path.glob(".bad*"))
    return out


def test_pickled_checkpoint_is_refused(tmp_path):
    file = tmp_path / "model.pt"
    torch.save(Plain(), file)
    assert "pickled torch checkpoint" in refused(tmp_path, file, "--classes", "a,b")


def test_onnx_with_dynamic_channels_needs_bands(tmp_path):
    file = onnx_file(tmp_path / "dyn.onnx", Plain(), dynamic=True)
    from geoseg.model.onnx_graphs import ort_session

    assert ort_session(file.read_bytes(), device="cpu").get_inputs()[0].shape[1] == 3
    # a graph whose channel dimension is dynamic: a 1x1 convolution per channel group
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["input"], ["output"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["n", "c", "h", "w"])], [helper.make_tensor_value_info(
            "output", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "any.onnx")
    out = refused(tmp_path, tmp_path / "any.onnx", "--classes", "a,b", "--scale", "1")
    assert "channel count is dynamic" in out and "--bands" in out
    out = refused(tmp_path, tmp_path / "any.onnx", "--classes", "a,b", "--scale", "1",
                  "--bands", "r,g,b")
    assert "outputs 3 channels" in out and "2 classes" in out


def test_output_of_the_wrong_rank_or_class_count_is_refused(tmp_path):
    class Flat(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    file = onnx_file(tmp_path / "flat.onnx", Flat(), props=DEEPNESS)
    assert "rank 2" in refused(tmp_path, file)
    file = onnx_file(tmp_path / "three.onnx", Plain(classes=3, softmax=True), props=DEEPNESS)
    assert "outputs 3 channels" in refused(tmp_path, file)


def test_missing_classes_and_scaling_are_named_with_their_flags(tmp_path):
    file = onnx_file(tmp_path / "bare.onnx", Plain())
    assert "--classes" in refused(tmp_path, file, "--scale", "1")
    assert "--scale" in refused(tmp_path, file, "--classes", "a,b")


def test_pt2_from_another_torch_major_is_refused(tmp_path):
    program = torch.export.export(Plain().eval(), (torch.zeros(1, 3, 64, 64),))
    good = tmp_path / "good.pt2"
    torch.export.save(program, str(good))
    bad = tmp_path / "old.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry.filename)
            if "/models/" in entry.filename and entry.filename.endswith(".json"):
                doc = json.loads(data)
                doc["torch_version"] = "1.13.1"
                data = json.dumps(doc).encode()
            dst.writestr(entry, data)
    out = refused(tmp_path, bad, "--classes", "a,b", "--scale", "1")
    assert "torch 1.13.1" in out and "major version" in out


def test_mlm_item_whose_bands_the_scene_lacks(tmp_path):
    network = Plain(channels=4)
    file = onnx_file(tmp_path / "four.onnx", network, shape=(1, 4, 64, 64))
    item = {"type": "Feature", "properties": {
        "mlm:name": "four", "mlm:architecture": "plain",
        "mlm:input": [{"name": "x", "bands": ["B02", "B03", "B04", "B08"],
                       "input": {"shape": [1, 4, 64, 64],
                                 "dim_order": ["batch", "channel", "height", "width"],
                                 "data_type": "float32"},
                       "value_scaling": [{"type": "scale", "value": 1}]}],
        "mlm:output": [{"name": "y", "tasks": ["semantic-segmentation"],
                        "result": {"shape": [1, 2, 64, 64],
                                   "dim_order": ["batch", "class", "height", "width"],
                                   "data_type": "float32"},
                        "classification:classes": [{"value": 0, "name": "a"},
                                                   {"value": 1, "name": "b"}]}]},
        "assets": {}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    code, out = run("model", "import", file, "--mlm", tmp_path / "item.json", "-o",
                    tmp_path / "m.safetensors")
    assert code == 0, out
    image = scene(tmp_path)  # 3 bands
    code, out = run("predict", image, "--model", tmp_path / "m.safetensors", "--out",
                    tmp_path / "out", "--no-preview")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1 and "B02, B03, B04, B08" in errors[0], out


def test_runtime_onnxruntime_without_onnxruntime_names_the_pip_line(tmp_path, make_bundle,
                                                                     monkeypatch):
    import geoseg.model.runtimes as runtimes

    monkeypatch.setattr(runtimes, "onnxruntime_installed", lambda: False)
    code, out = run("predict", scene(tmp_path), "--model", make_bundle(), "--out",
                    tmp_path / "out", "--runtime", "onnxruntime")
    assert code == 2 and "pip install onnxruntime" in out and out.count("\n") == 1, out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.tif"))


def test_resolve_runtime_by_device_kind_and_precision():
    from geoseg.errors import ConfigError
    from geoseg.model.runtimes import resolve_runtime

    cpu = dict(device="cpu", precision="auto")
    assert resolve_runtime("auto", kind="smp", onnxruntime=True, **cpu) == "onnxruntime"
    assert resolve_runtime("auto", kind="smp", onnxruntime=False, **cpu) == "torch"
    # a CPU with native bfloat16 runs torch's bfloat16 faster than float32 anywhere
    assert resolve_runtime("auto", kind="smp", onnxruntime=True, auto_precision="bfloat16",
                           **cpu) == "torch"
    assert resolve_runtime("auto", kind="smp", device="cuda", precision="auto",
                           onnxruntime=True) == "torch"
    assert resolve_runtime("auto", kind="pt2", onnxruntime=True, **cpu) == "torch"
    assert resolve_runtime("auto", kind="onnx", onnxruntime=True, **cpu) == "onnxruntime"
    assert resolve_runtime("auto", kind="smp", compile=True, onnxruntime=True,
                           **cpu) == "torch"
    for bad in (dict(runtime="onnxruntime", precision="bfloat16"),
                dict(runtime="torch", kind="onnx"),
                dict(runtime="onnxruntime", kind="torchscript")):
        args = {"runtime": "auto", "kind": "smp", "device": "cpu", "precision": "auto",
                "onnxruntime": True, **bad}
        with pytest.raises(ConfigError):
            resolve_runtime(args.pop("runtime"), **args)


@pytest.mark.parametrize("network", ["onnx", "smp"])
def test_onnxruntime_prediction_imports_no_torch(tmp_path, make_bundle, network):
    """Light start-up: predicting on onnxruntime imports neither torch nor smp, timm or
    torchvision, for an imported ONNX graph and for an smp bundle whose graph is in the
    cache (geoseg.arrays: numpy all the way), nor dask or scipy in the local runner
    (polygons are not asked for); the classes equal an in-process run's."""
    import subprocess
    import sys

    if network == "onnx":
        file = onnx_file(tmp_path / "deep.onnx", Plain(softmax=True), props=DEEPNESS)
        bundle = tmp_path / "m.safetensors"
        assert run("model", "import", file, "-o", bundle)[0] == 0
    else:
        bundle = make_bundle()
    image = scene(tmp_path)
    code, out = run("predict", image, "--model", bundle, "--out", tmp_path / "first",
                    "--no-preview")  # exports and caches an smp network's graph
    assert code == 0, out
    code = (f"import sys, geoseg; geoseg.predict({str(image)!r}, {str(bundle)!r}, "
            f"{str(tmp_path / 'out')!r}, runner='local'); "
            "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'timm', "
            "'torchvision', 'dask', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (classes_of(tmp_path / "out") == classes_of(tmp_path / "first")).all()


def test_train_exports_when_it_finishes(tmp_path):
    from test_train import make_labels, make_recipe, make_scene

    recipe = make_recipe(tmp_path, make_scene(tmp_path), make_labels(tmp_path), steps=2,
                         val_every=1)
    code, out = run("train", recipe, "--no-progress", "--export", "onnx")
    assert code == 0, out
    assert (tmp_path / "tiny.onnx").is_file() and (tmp_path / "tiny.json").is_file()
    validate_mlm(json.loads((tmp_path / "tiny.json").read_text()))
