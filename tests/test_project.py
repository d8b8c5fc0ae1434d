"""Promises about the project itself: dependencies listed twice agree, layering holds."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from dataclasses import fields

import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch": "torch"}
TORCH_MODULES = {"model.py", "train.py"}


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
    for path in sorted((REPO / "geoseg").glob("*.py")):
        assert not _all_imports(path) & {"dask", "distributed", "dask_jobqueue", "pipelines"}, path


def test_only_model_and_train_import_torch_at_module_level():
    for path in sorted((REPO / "geoseg").glob("*.py")):
        if path.name not in TORCH_MODULES:
            assert not _top_level_imports(path) & {"torch", "segmentation_models_pytorch"}, path


def test_vector_only_use_stays_light():
    code = ("import sys, geoseg.grid, geoseg.tiling, geoseg.stitch, geoseg.scene, "
            "geoseg.writers, geoseg.config, geoseg.predict, geoseg.flow, geoseg.vectorize;"
            "print(sorted(m for m in ('torch', 'dask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == "[]"


def test_configs_predict_yaml_holds_the_library_defaults():
    from geoseg.config import PredictOptions

    data = yaml.safe_load((REPO / "configs" / "predict.yaml").read_text())["predict"]
    assert set(data) == {f.name for f in fields(PredictOptions)}
    defaults = PredictOptions()
    for key, value in data.items():
        assert value == getattr(defaults, key), key


def test_readme_starts_with_the_two_commands():
    head = (REPO / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head
