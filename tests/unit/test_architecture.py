"""The layout the README's "Architecture" section promises: no import cycles among the
project's modules (function-level imports included), and no Python file of the repository over
~500 lines: the service's modules, and the benchmarks, scripts and tests people read too."""

from __future__ import annotations

import ast
from pathlib import Path

from face_service.settings import REPOSITORY_ROOT

ENTRY_MODULES = ("app", "pipeline", "triton_service", "extract_insightface_models")
MAX_LINES = 500
# Folders of the checkout that setup makes or tools fill, not the project's own files.
NOT_SOURCE = {".venv", ".git", "model_repository", "data", "build", "node_modules"}


def project_modules() -> dict[str, Path]:
    """Dotted name -> file, for the entry modules and everything in face_service/ and
    face_client/ (the Python client and CLI)."""
    modules = {name: REPOSITORY_ROOT / f"{name}.py" for name in ENTRY_MODULES}
    packages = ("face_service", "face_client")
    for path in sorted(
        p for package in packages for p in (REPOSITORY_ROOT / package).rglob("*.py")
    ):
        parts = path.relative_to(REPOSITORY_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (a function's body too): for
    ``from a.b import c`` that is ``a.b.c`` when it is a module, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it names. A package's __init__ running before its
    submodules is not counted as an edge: re-exporting them there is no cycle, while a
    submodule that imports its own package's __init__ back is (it names it, so it is one)."""
    modules = project_modules()
    graph = {name: imported_modules(path, modules) for name, path in modules.items()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if child == node:
                continue
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from face_service.gallery import sqlite\n")
    found = imported_modules(module, project_modules())
    assert "face_service.gallery.sqlite" in found


def test_no_import_cycles_among_the_project_modules() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def python_files() -> list[Path]:
    """Every Python file of the checkout outside the folders that setup makes."""
    return sorted(
        path
        for path in REPOSITORY_ROOT.rglob("*.py")
        if not NOT_SOURCE.intersection(path.relative_to(REPOSITORY_ROOT).parts[:-1])
    )


def test_the_file_walk_sees_every_part_of_the_project() -> None:
    folders = {path.relative_to(REPOSITORY_ROOT).parts[0] for path in python_files()}
    assert {"face_service", "face_client", "bench", "tests", "app.py", "pipeline.py"} <= folders
    assert not folders & NOT_SOURCE


def test_no_python_file_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(REPOSITORY_ROOT)): count
        for path in python_files()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern: {long}"
