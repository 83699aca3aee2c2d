"""Declared dependencies match what the code imports; the version is written once."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

import napari_label_anything

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "napari_label_anything"
# Declared but never imported by our code, each for a reason.
USED_WITHOUT_IMPORT = {
    "npe2": "napari reads the plugin manifest (napari.yaml) through it",
    "torchvision": "segment-anything imports it; pinned as torch's pair",
    "imagecodecs": "tifffile decodes LZW, zstd, JPEG... TIFFs through it",
}


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "napari_label_anything"}


def test_every_imported_package_is_declared():
    project = _project()
    declared = {_requirement_name(s) for s in project["dependencies"]}
    # Optional modules (the widget's Qt, ONNX Runtime, dask.distributed) are declared in an extra.
    for extra in project["optional-dependencies"].values():
        declared |= {_requirement_name(s) for s in extra}
    distributions = packages_distributions()
    undeclared = {}
    for module in _imported_top_level_modules():
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_used():
    imported = set()
    distributions = packages_distributions()
    for module in _imported_top_level_modules():
        imported |= {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
    unused = {_requirement_name(s) for s in _project()["dependencies"]} - imported - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared but never imported (drop them or say why in USED_WITHOUT_IMPORT): {unused}"


def test_version_is_written_once():
    assert "version" in _project()["dynamic"]
    assert "version" not in _project()
    assert version("napari-label-anything") == napari_label_anything.__version__
