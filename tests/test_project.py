"""Promises about the project itself: dependencies listed twice agree, layering holds."""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import sys
import tomllib
from dataclasses import fields

import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch": "torch"}
TORCH_MODULES = {"bundle.py", "networks.py", "inference.py", "optimize.py", "onnx_graphs.py",
                 "exporting.py", "loop.py"}
"""The model package's modules that need torch to be imported at all, and the training loop."""


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_name_the_same_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        pip |= {_name(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {CONDA_NAMES.get(_name(d), _name(d)) for d in env["dependencies"]
             if isinstance(d, str)} - {"python", "pip"}
    assert conda == pip


def _top_level_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _all_imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_never_imports_dask_or_pipelines():
    """geoseg.predict (api.py) is the library's one door into the batch runners: it imports
    geoseg_pipelines inside the function, never at module level; nothing else does."""
    for path in sorted((REPO / "geoseg").rglob("*.py")):
        assert not _all_imports(path) & {"dask", "distributed", "dask_jobqueue",
                                         "pipelines"}, path
        imports = _top_level_imports if path.name == "api.py" else _all_imports
        assert "geoseg_pipelines" not in imports(path), path


def test_only_model_and_train_import_torch_at_module_level():
    for path in sorted((REPO / "geoseg").rglob("*.py")):
        if path.name not in TORCH_MODULES:
            assert not _top_level_imports(path) & {"torch", "segmentation_models_pytorch"}, path


def test_vector_only_use_stays_light():
    code = ("import sys, geoseg.grid, geoseg.tiling, geoseg.prediction.stitch, "
            "geoseg.inputs.scene, geoseg.outputs.rasters, geoseg.config, "
            "geoseg.prediction.blocks, geoseg.prediction.flow, geoseg.vector.layer;"
            "print(sorted(m for m in ('torch', 'dask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == "[]"


def test_configs_predict_yaml_holds_the_library_defaults():
    from geoseg.prediction.options import PredictOptions

    data = yaml.safe_load((REPO / "configs" / "predict.yaml").read_text())["predict"]
    assert set(data) == {f.name for f in fields(PredictOptions)}
    defaults = PredictOptions()
    for key, value in data.items():
        value = tuple(value) if isinstance(value, list) else value  # YAML lists: tuples
        assert value == getattr(defaults, key), key


def test_readme_starts_with_the_two_commands():
    head = (REPO / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head


BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}
PROTOCOL_RAISES = {("model/__init__.py", "AttributeError"), ("__init__.py", "AttributeError"),
                   ("prediction/flow.py", "KeyboardInterrupt")}
"""Builtin exceptions that a protocol demands, not user input: a module's __getattr__, and
the local runner stopping at a block boundary when Ctrl-C set its stop flag."""


def test_the_library_raises_geoseg_errors_only():
    """Every error geoseg raises on purpose is a GeosegError subclass (which also derives
    from the fitting builtin), so the CLI turns it into one line; a bare ValueError or
    FileNotFoundError would escape as a traceback."""
    found = []
    for path in sorted((REPO / "geoseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.id if isinstance(exc, ast.Name) else getattr(exc, "attr", "")
            where = str(path.relative_to(REPO / "geoseg"))
            if name in BUILTIN_ERRORS and (where, name) not in PROTOCOL_RAISES:
                found.append(f"{where}:{node.lineno}: raise {name}")
    assert not found, found


def test_every_geoseg_error_derives_from_a_builtin_too():
    import geoseg.errors as errors

    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.GeosegError) \
                and value is not errors.GeosegError:
            assert any(base.__name__ in BUILTIN_ERRORS for base in value.__mro__[1:]
                       if base is not BaseException and base is not Exception), value


def test_option_names_come_from_the_registries():
    """The CLI's choices and the YAML checks use the same lists of names."""
    from click.testing import CliRunner

    from geoseg.prediction.options import PredictOptions
    from geoseg.model.devices import check_device
    from geoseg.model.tta import TTA, TTA_MODES
    from geoseg.prediction.stitch import WEIGHT_WINDOWS
    from geoseg_pipelines.cli import cli

    params = {p.name: p for p in cli.commands["predict"].params}
    assert list(params["stitch"].type.choices) == list(WEIGHT_WINDOWS)
    assert list(params["tta"].type.choices) == list(TTA_MODES) == list(TTA)
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert check_device(device) == PredictOptions(device=device).device
    result = CliRunner().invoke(cli, ["predict", "x.tif", "-m", "m", "-o", "o",
                                      "--device", "tpu"])
    assert result.exit_code == 2 and "unknown device 'tpu'" in result.output


def test_every_output_and_part_name_comes_from_one_module():
    """No module but geoseg/names.py spells an output, staging or part file name."""
    spelled = re.compile(r"[\"'](\.parts|classes\.tif|probabilities\.tif|polygons\.gpkg|"
                         r"manifest\.json|summary\.json)[\"']|\.partial-|\.tmp-")
    offenders = []
    for path in sorted([*(REPO / "geoseg").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")]):
        if path.name == "names.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if spelled.search(line) and "help=" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_the_batch_client_never_imports_torch():
    """A batch's client plans scenes from the bundle's metadata; only workers load torch
    (its import alone is hundreds of MB of the client's memory)."""
    code = ("import sys, geoseg_pipelines.cli, geoseg_pipelines.run, "
            "geoseg_pipelines.resume, geoseg_pipelines.graph, "
            "geoseg.prediction.flow, geoseg.model as m; "
            "m.read_meta('models/buildings-massachusetts.safetensors'); "
            "m.file_sha256('models/buildings-massachusetts.safetensors'); "
            "print(sorted(k for k in ('torch', 'segmentation_models_pytorch') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == "[]"


def test_pipelines_never_import_themselves_by_a_top_level_name():
    """pipelines/ installs as geoseg_pipelines; its modules import each other relatively,
    so no module of it names a top-level `pipelines` another project may own."""
    for path in sorted((REPO / "pipelines").rglob("*.py")):
        assert "pipelines" not in _all_imports(path), path


def test_an_unrelated_pipelines_package_neither_shadows_nor_is_shadowed(tmp_path):
    """Another project's top-level `pipelines` first on the path and in the working folder:
    the geoseg command still runs its own code, and `import pipelines` still gets theirs."""
    import os
    from pathlib import Path

    theirs = tmp_path / "pipelines"
    theirs.mkdir()
    (theirs / "__init__.py").write_text("MINE = 'theirs'\n")
    (theirs / "cli.py").write_text("raise SystemExit('their pipelines.cli was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    geoseg = str(Path(sys.executable).with_name("geoseg"))  # the console script
    info = subprocess.run([geoseg, "info", str(REPO / "models" /
                                               "buildings-massachusetts.safetensors")],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert info.returncode == 0, info.stderr
    assert "building" in info.stdout
    mine = subprocess.run([sys.executable, "-c", "import pipelines; print(pipelines.MINE)"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert mine.stdout.strip() == "theirs"


def test_geoseg_imports_from_the_folder_that_holds_the_clone(tmp_path):
    """A clone named `geoseg` in the working folder is a directory without __init__.py:
    Python must still import the installed package, not that folder as a namespace."""
    clone = tmp_path / "geoseg"
    (clone / "docs").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-c", "import geoseg; print(geoseg.__version__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+", out.stdout.strip())
