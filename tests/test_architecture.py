"""The house rules of docs/architecture.md, checked on the source (imports read with ast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_label_anything"
GUI_MODULES = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(path: Path, node: ast.ImportFrom) -> str:
    """Absolute module name of a (possibly relative) ``from ... import``."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules imported by ``path`` (``from pkg import name`` also counts ``pkg.name``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = resolve(path, node)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_only_the_widget_imports_napari_or_qt():
    offenders = {
        module_name(p): sorted(m for m in imports(p) if m.split(".")[0] in GUI_MODULES)
        for p in SOURCES
        if "widget" not in p.relative_to(PACKAGE).parts
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_model_imports_nothing_else_of_the_package():
    for path in (PACKAGE / "model").rglob("*.py"):
        outside = {
            m
            for m in imports(path)
            if m.startswith("napari_label_anything.") and not m.startswith("napari_label_anything.model")
        }
        assert not outside, f"{module_name(path)} imports {sorted(outside)}"


def test_module_level_imports_have_no_cycles():
    graph: dict[str, set[str]] = {}
    names = {module_name(p) for p in SOURCES}
    for path in SOURCES:
        targets = set()
        for imported in imports(path, top_level_only=True):
            while imported and imported not in names:  # `from pkg import name`: the module part
                imported = imported.rpartition(".")[0]
            if imported and imported != module_name(path):
                targets.add(imported)
        graph[module_name(path)] = targets
    # A package's __init__ importing its own submodules is not a cycle of concepts.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".") or not t}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for m in graph if (c := cycle_from(m))]
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_importing_the_package_loads_neither_torch_nor_qt():
    code = (
        "import sys, napari_label_anything as nla; nla.Episode(['a']); "
        "heavy = sorted(m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'dask', 'zarr') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == ""


def test_widget_inference_and_model_never_import_training():
    rooms = ("widget", "inference", "model")
    for path in SOURCES:
        if path.relative_to(PACKAGE).parts[0] not in rooms:
            continue
        found = {m for m in imports(path) if m.startswith("napari_label_anything.training")}
        assert not found, f"{module_name(path)} imports {sorted(found)} (the widget goes through finetune_session)"


def test_only_the_distributed_module_uses_torch_distributed():
    users = {module_name(p) for p in SOURCES if any(m.startswith("torch.distributed") for m in imports(p))}
    assert users <= {"napari_label_anything.training.distributed"}, users
