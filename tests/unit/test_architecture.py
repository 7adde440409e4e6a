"""The shape of the house: imports point one way (proxy → registry → config), no module imports itself back
through others, the domain starts no processes, and the fake upstream owes nothing to the product."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "registry", "proxy")  # folders at the root, installed as tunegate.config, …
NAMESPACE = "tunegate"
FORBIDDEN = {
    "config": {"registry", "proxy", "litestar", "httpx"},
    "registry": {"proxy", "litestar", "httpx"},
}
# What starts a process: a module for it, or one of os's spawning functions.
PROCESS_MODULES = {"subprocess", "multiprocessing", "concurrent.futures.process"}
PROCESS_CALLS = {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"}
FAKE_UPSTREAM = "proxy.fake_upstream"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def folder_name(module: str) -> str:
    """``tunegate.proxy.app`` (the installed name) → ``proxy.app`` (the folder's): the graph is drawn in folders."""
    return module.removeprefix(NAMESPACE + ".")


def imports_of(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` imports, wherever the import stands: at the top, in a function, under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (folder_name(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = folder_name(node.module or "")
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: {target for target in imports_of(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert circles(import_graph()) == []


def test_the_product_is_imported_by_its_installed_name() -> None:
    """``from tunegate.proxy.x import y``, never ``from proxy.x import y``: the wheel installs no ``proxy``."""
    offenders: dict[str, list[str]] = {}
    for path in sorted(p for folder in (*PACKAGES, "tests", "bench") for p in (ROOT / folder).rglob("*.py")):
        if ".work" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level]
        bare = sorted(n for n in names if n.split(".")[0] in PACKAGES)
        if bare:
            offenders[str(path.relative_to(ROOT))] = bare
    assert offenders == {}


def test_the_circle_check_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    offenders = {
        name: sorted({target.split(".")[0] for target in imports_of(path, name)} & FORBIDDEN[package])
        for name, path in project_modules().items()
        if name.split(".")[0] == package
        and {target.split(".")[0] for target in imports_of(path, name)} & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_registry_starts_no_processes() -> None:
    offenders: dict[str, list[str]] = {}
    for name, path in project_modules().items():
        if not name.startswith("registry"):
            continue
        found = sorted(
            {t for t in imports_of(path, name) if any(t == m or t.startswith(m + ".") for m in PROCESS_MODULES)}
        )
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
                continue
            if node.attr in PROCESS_CALLS or node.attr.startswith("spawn"):
                found.append(f"os.{node.attr}")
        if found:
            offenders[name] = found
    assert offenders == {}


def test_the_fake_upstream_imports_nothing_of_the_product() -> None:
    offenders = {
        name: sorted(
            target
            for target in imports_of(path, name)
            if target.split(".")[0] in PACKAGES and not target.startswith(FAKE_UPSTREAM)
        )
        for name, path in project_modules().items()
        if name.startswith(FAKE_UPSTREAM)
    }
    assert {name: found for name, found in offenders.items() if found} == {}
