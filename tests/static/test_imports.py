"""The code's shape, read with `ast` (nothing is imported or run): services stay in their rooms,
imports never go round in a circle, and no function of the platform's own grows past a page.

- A module under services/<x>/ imports nothing from services/<y>/: names that services share live in
  contracts/, code they share in the library package services/common/ (its docstring says why).
- services/local.py is no service: it is the host-side launcher of `make local`, the counterpart of
  docker-compose.yml and its init jobs (it has no image and nothing imports it). Like the compose file
  names each service's command, it calls what each service's package exports (access's provisioning,
  the MLflow server's auth config), so it is exempt from the rule, and only it.
- No import cycle among our modules (services/, contracts/, trainer/, infra/*.py), counting imports
  inside functions too: a lazy import in a circle is still a circle.
- No function over MAX_STATEMENTS statements (every statement in its body, nested ones included) in
  the platform's own code: services/, contracts/, trainer/, infra/*.py; the stand-ins under
  infra/offline and the tests are not the platform's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAX_STATEMENTS = 50
LIBRARY = "common"  # services/common/: the one package every service may import
HOST_TOOLS = {"services/local.py": "the local-mode launcher (make local), not a service"}


def platform_files() -> list[Path]:
    """The platform's own modules: every .py under services/, contracts/, trainer/, and infra/*.py."""
    files = [p for top in ("services", "contracts", "trainer") for p in (ROOT / top).rglob("*.py")]
    return sorted([*files, *(ROOT / "infra").glob("*.py")])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything the module imports, anywhere in it; `from a import b` yields
    `a.b` (a submodule, or a name in `a`: the caller decides which exists)."""
    package = module_name(path).split(".")
    if not is_package(path):
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module or "")))
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


@pytest.fixture(scope="module")
def trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in platform_files()}


def owner(path: Path) -> str | None:
    """The service a module under services/ belongs to (its folder), else None."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "services" and len(parts) > 2 else None


def test_no_service_imports_another_service(trees: dict[Path, ast.Module]) -> None:
    found: dict[tuple[str, int, str], str] = {}  # (file, line, other service) -> the longest name
    for path, tree in trees.items():
        me, rel = owner(path), str(path.relative_to(ROOT))
        if rel in HOST_TOOLS or not rel.startswith("services/"):
            continue
        for line, name in imported(path, tree):
            parts = name.split(".")
            other = parts[1] if parts[0] == "services" and len(parts) > 1 else me
            if other not in (me, LIBRARY) and (ROOT / "services" / str(other)).is_dir():
                found[rel, line, other] = max(found.get((rel, line, other), ""), name, key=len)
    assert not found, (
        "a service imports another service's internals; shared names go to contracts/, shared code "
        f"to services/{LIBRARY}/:\n"
        + "\n".join(
            f"{rel}:{line} imports {name} (service {other!r})"
            for (rel, line, other), name in sorted(found.items())
        )
    )


def import_graph(trees: dict[Path, ast.Module]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (names that are not modules count as their module)."""
    ours = {module_name(path) for path in trees}
    graph: dict[str, set[str]] = {}
    for path, tree in trees.items():
        me = module_name(path)
        targets = {name if name in ours else name.rpartition(".")[0] for _, name in imported(path, tree)}
        graph[me] = {t for t in targets if t in ours and t != me}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle(trees: dict[Path, ast.Module]) -> None:
    found = cycles(import_graph(trees))
    assert not found, "import cycles among our modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_are_read_absolute_relative_and_lazy() -> None:
    """The checks see every form of import, so a relative or in-function import cannot slip by."""
    path = ROOT / "services" / "access" / "example.py"
    code = "\n".join(
        [
            "from . import api",
            "from ..gateway import app",
            "import services.monitor.metrics",
            "def f():",
            "    from x import y",
        ]
    )
    found = {name for _, name in imported(path, ast.parse(code))}
    assert found == {
        "services.access", "services.access.api", "services.gateway", "services.gateway.app",
        "services.monitor.metrics", "x", "x.y",
    }  # fmt: skip
    init = ROOT / "services" / "access" / "__init__.py"
    assert {name for _, name in imported(init, ast.parse("from .api import AuthApi"))} == {
        "services.access.api",
        "services.access.api.AuthApi",
    }


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Statements in the function's body, nested ones (inner functions, loops' bodies) included."""
    return sum(isinstance(node, ast.stmt) for node in ast.walk(function)) - 1


def test_no_function_over_the_limit(trees: dict[Path, ast.Module]) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {count} statements"
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (count := statements(node)) > MAX_STATEMENTS
    ]
    assert not found, f"functions over {MAX_STATEMENTS} statements; split them:\n" + "\n".join(found)


def test_init_files_of_the_split_packages_hold_only_exports(trees: dict[Path, ast.Module]) -> None:
    """Every service package's __init__.py defines nothing: it holds a docstring and exports (the
    settings class lives in settings.py, the logic in modules named for what they do)."""
    for name in sorted(p.parent.name for p in (ROOT / "services").glob("*/__init__.py")):
        tree = trees[ROOT / "services" / name / "__init__.py"]
        defined = [
            n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        assert not defined, f"services/{name}/__init__.py defines {[n.name for n in defined]}"
