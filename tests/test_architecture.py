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


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports for annotations, never run."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(tree: ast.AST, runtime_only: bool = False):
    """Every import statement of ``tree``: module level, inside functions and methods (lazy
    imports) and in branches; with ``runtime_only`` not those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if runtime_only and _type_checking(node):
            for child in node.orelse:
                yield from import_nodes(ast.Module(body=[child], type_ignores=[]), runtime_only)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from import_nodes(node, runtime_only)


def imported_by(path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Modules one import statement names (``from pkg import name`` also counts ``pkg.name``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    module = resolve(path, node)
    return {module} | {f"{module}.{alias.name}" for alias in node.names}


def imports(path: Path) -> set[str]:
    """Modules imported anywhere in ``path`` (lazy and ``TYPE_CHECKING`` imports included)."""
    return set().union(*(imported_by(path, n) for n in import_nodes(ast.parse(path.read_text()))))


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


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {module of the package it imports at run time: "path:line" of the first such import}.

    Lazy imports (inside functions and methods) count: calling the function imports the module,
    so a circle through them is a circle of concepts all the same. ``if TYPE_CHECKING:`` imports
    do not (they never run), nor does a module's import of its own parent package (Python
    imports the parent before any of its modules)."""
    names = {module_name(p) for p in SOURCES}
    graph: dict[str, dict[str, str]] = {}
    for path in SOURCES:
        this = module_name(path)
        edges: dict[str, str] = {}
        for node in import_nodes(ast.parse(path.read_text()), runtime_only=True):
            for imported in imported_by(path, node):
                while imported and imported not in names:  # `from pkg import name`: the module part
                    imported = imported.rpartition(".")[0]
                if imported and imported != this and not this.startswith(imported + "."):
                    edges.setdefault(imported, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
        graph[this] = edges
    return graph


def circles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One shortest circle through each module that lies on one (breadth-first from it)."""
    found: dict[frozenset[str], list[str]] = {}
    for start in sorted(graph):
        trails, seen = [[start]], {start}
        while trails:
            trail = trails.pop(0)
            targets = graph.get(trail[-1], {})
            if start in targets:
                found.setdefault(frozenset(trail), [*trail, start])
                break
            for nxt in sorted(targets):
                if nxt not in seen:
                    seen.add(nxt)
                    trails.append([*trail, nxt])
    return list(found.values())


def test_imports_have_no_cycles_even_inside_functions():
    graph = import_graph()
    found = circles(graph)
    described = [c[0] + "".join(f" -> {b} ({graph[a][b]})" for a, b in zip(c, c[1:], strict=False)) for c in found]
    assert not found, "import cycles (each arrow: the import line that makes it):\n" + "\n".join(described)


def test_the_cycle_check_sees_lazy_imports():
    source = "def f():\n    from . import b\n    import pkg.c\n\nif TYPE_CHECKING:\n    from . import d\n"
    nodes = list(import_nodes(ast.parse(source), runtime_only=True))
    assert [n.lineno for n in nodes] == [2, 3]
    assert len(list(import_nodes(ast.parse(source)))) == 3
    graph = {"a": {"b": "a:2"}, "b": {"c": "b:1"}, "c": {"a": "c:9"}, "d": {"a": "d:1"}}
    assert circles(graph) == [["a", "b", "c", "a"]]  # d leads into the circle but is not on it


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


def test_only_the_cluster_module_uses_dask_distributed():
    users = {
        module_name(p)
        for p in SOURCES
        if any(m.split(".")[0] == "distributed" or m.startswith("dask.distributed") for m in imports(p))
    }
    assert users <= {"napari_label_anything.batch.cluster"}, users


# Each room's folder may use the rooms listed below it, never those above (module-level and lazy
# imports alike): files know nothing of models, models' sources nothing of segmenters, segmenters
# nothing of the jobs that run them, and none of them the training, the plugin or the CLI.
ROOMS_ABOVE = {
    "io": ("hub", "inference", "batch", "training", "widget", "cli"),
    "hub": ("inference", "batch", "training", "widget", "cli"),
    "inference": ("batch", "training", "widget", "cli"),
    "batch": ("training", "widget", "cli"),
}


def test_io_and_hub_import_neither_inference_nor_widget_and_no_room_imports_one_above_it():
    for path in SOURCES:
        room = path.relative_to(PACKAGE).parts[0]
        if room not in ROOMS_ABOVE:
            continue
        above = tuple(f"napari_label_anything.{r}" for r in ROOMS_ABOVE[room])
        found = {m for m in imports(path) if m in above or m.startswith(tuple(a + "." for a in above))}
        assert not found, f"{module_name(path)} imports {sorted(found)} (rooms above {room}/)"
