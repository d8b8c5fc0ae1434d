"""The tree shows the flow: geoseg/ is layered by stage and no module imports a later stage
or takes part in an import cycle (DESIGN.md, "Layout").

The imports are read with ``ast`` (nothing is imported), every ``import`` counts: at module
level, inside functions (lazy) and under ``if TYPE_CHECKING:`` (types), since each of them
ties the two modules together just the same.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = {"geoseg": REPO / "geoseg", "geoseg_pipelines": REPO / "pipelines"}
"""Import name -> folder (pipelines/ installs as geoseg_pipelines)."""

STAGES = ("shared", "model", "inputs", "outputs", "vector", "prediction", "training", "api",
          "pipelines")
"""The stages in the order of the flow: a module may import its own stage and earlier ones.

The model's metadata comes before the inputs because deciding whether a scene fits (its
pixel size and values against the model's GSD and radiometry) needs them; outputs and
polygons come before prediction because the scene's flow (geoseg.prediction.flow) composes
every step of a block, from the model step to its polygons."""


def stage_of(module: str) -> str:
    """A module's stage: its subpackage of geoseg, ``shared`` for geoseg's top-level
    modules, ``pipelines`` for the orchestration."""
    parts = module.split(".")
    if parts[0] == "geoseg_pipelines":
        return "pipelines"
    if len(parts) == 1:
        return "shared"  # the package's facade: its version and the API's lazy names
    if parts[1] == "api":
        return "api"
    if parts[1] in STAGES and (PACKAGES["geoseg"] / parts[1]).is_dir():
        return parts[1]
    return "shared"


def modules() -> dict[str, Path]:
    found = {}
    for name, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports_of(module: str, path: Path) -> set[str]:
    """The geoseg and geoseg_pipelines modules ``module`` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from package import module` imports the module
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import geoseg.x.y` names a module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def test_the_walker_sees_lazy_and_type_only_imports():
    """The graph is what the layering tests judge: a lazy import inside a function and one
    under TYPE_CHECKING are edges like any other."""
    assert "geoseg.model.radiometry" in GRAPH["geoseg.inputs.fit"]  # module level
    assert "geoseg.inputs.scene" in GRAPH["geoseg.inputs.fit"]  # inside functions
    assert "geoseg.grid" in GRAPH["geoseg.inputs.fit"]  # TYPE_CHECKING only
    assert "geoseg_pipelines.batch" in GRAPH["geoseg.api"]  # inside predict()


def test_every_module_has_a_stage():
    packages = {p.name for p in PACKAGES["geoseg"].iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(STAGES) - {"shared", "api", "pipelines"}


def test_no_module_imports_a_later_stage():
    """inputs never import prediction, vector never imports the model, and so on; the one
    allowed exception is the API's batch function, which runs the pipelines' runners."""
    rank = {stage: i for i, stage in enumerate(STAGES)}
    upward = [f"{module} ({stage_of(module)}) imports {target} ({stage_of(target)})"
              for module, targets in sorted(GRAPH.items()) for target in sorted(targets)
              if rank[stage_of(target)] > rank[stage_of(module)]
              and not (module == "geoseg.api" and stage_of(target) == "pipelines")]
    assert not upward, "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm),
    each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(_path_through(graph, sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle inside a strongly connected component, from its first module back to it."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def test_the_cycle_finder_names_both_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"} - {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_geoseg_or_pipelines():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_package_says_what_it_owns_and_may_import():
    for module, path in MODULES.items():
        if path.name != "__init__.py" or module == "geoseg_pipelines":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert len(doc.splitlines()) >= 2, f"{module}: no docstring saying what it owns"
        assert "may import" in doc.lower(), f"{module}: its docstring names no imports"


def test_no_module_repeats_its_package_name():
    """``vector/files.py``, not ``vector/vector_files.py``."""
    repeats = []
    for module in MODULES:
        parts = module.split(".")
        if len(parts) < 3:
            continue
        package, leaf = parts[-2], parts[-1]
        if leaf.startswith(package.rstrip("s")) or package.startswith(leaf):
            repeats.append(module)
    assert not repeats, repeats


def test_module_names_are_unique_across_the_tree():
    """Two modules of one name (there were two report.py) say different things; each name
    is used once across geoseg/ and pipelines/ (package __init__ files aside)."""
    seen: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            seen.setdefault(path.stem, []).append(module)
    clashes = {name: found for name, found in seen.items() if len(found) > 1}
    assert not clashes, clashes


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("geoseg.")))
def test_importing_any_module_leaves_the_api_functions_in_place(module):
    """A subpackage called ``predict`` or ``vectorize`` would replace the API function of
    that name on the package once imported; none is."""
    import geoseg

    importlib.import_module(module)
    for name in ("predict", "predict_array", "vectorize", "load_model"):
        assert callable(getattr(geoseg, name)), (module, name)
