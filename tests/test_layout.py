"""The tree shows the architecture: imports run one way between the stages and between the
probe's parts, no module imports another that imports it back (directly or through others,
at module level or inside a function), and no folder or module grows past what a reader
takes in."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"medprobe.cache": "cache", "medprobe.extract": "extract", "medprobe.probe": "probe"}
# part -> the parts it must never import (the run uses fit, stats and report; not the reverse)
FORBIDDEN = {
    "medprobe.probe.fit": (
        "medprobe.probe.run",
        "medprobe.probe.stats",
        "medprobe.probe.report",
        "medprobe.probe.similarity",
        "medprobe.probe.targets",
    ),
    "medprobe.probe.stats": (
        "medprobe.probe.run",
        "medprobe.probe.fit",
        "medprobe.probe.report",
        "medprobe.probe.similarity",
    ),
    "medprobe.probe.report": (
        "medprobe.probe.run",
        "medprobe.probe.fit",
        "medprobe.probe.similarity",
    ),
    "medprobe.probe.similarity": (
        "medprobe.probe.run",
        "medprobe.probe.fit",
        "medprobe.probe.report",
    ),
    "medprobe.cache": ("medprobe.probe", "medprobe.extract"),
    "medprobe.probe": ("medprobe.extract",),
}
MAX_MODULES_PER_FOLDER = 13  # about twelve: extract/datasets/ holds one adapter a dataset
MAX_LINES_PER_MODULE = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


GRAPH = {name: _imports(path, set(_modules())) for name, path in _modules().items()}


def test_no_import_cycle() -> None:
    """Depth-first search for a back edge among the project's modules (packages excluded:
    a package's __init__ importing its own modules is not a cycle between modules)."""
    graph = {m: {d for d in deps if d != m} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                cycle = [*path[path.index(dependency) :], dependency]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dependency not in state:
                visit(dependency)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_run_one_way(part: str) -> None:
    wrong = sorted(
        f"{module} imports {dependency}"
        for module, dependencies in GRAPH.items()
        if module == part or module.startswith(part + ".")
        for dependency in dependencies
        for forbidden in FORBIDDEN[part]
        if dependency == forbidden or dependency.startswith(forbidden + ".")
    )
    assert not wrong, wrong


def test_folders_and_modules_stay_small() -> None:
    too_big = []
    for path in _modules().values():
        if path.name != "__init__.py" and len(path.read_text().splitlines()) > MAX_LINES_PER_MODULE:
            too_big.append(f"{path.relative_to(ROOT)} has more than {MAX_LINES_PER_MODULE} lines")
    for folder in {p.parent for p in _modules().values()}:
        count = sum(1 for p in folder.glob("*.py") if p.name != "__init__.py")
        if count > MAX_MODULES_PER_FOLDER:
            too_big.append(f"{folder.relative_to(ROOT)}/ holds {count} modules")
    assert not too_big, too_big
