"""The import graph of src/torch_consistency, built with `ast` from every import statement (those inside functions
and under `if TYPE_CHECKING:` too): no module is part of an import cycle, and the mathematical modules import only
each other, errors.py, torch, numpy and the standard library. The layers between the other parts are import-linter
contracts (pyproject.toml, run by `make test` as lint-imports; README.md, "Architecture")."""

import ast
import re
import sys
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "torch_consistency"
MATH = ("sigmas", "parameterization", "schedules", "distances", "solvers", "samplers", "objectives", "trigflow",
        "gaussian", "guidance", "embedding", "editing")  # fmt: skip


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (a subpackage is named by its __init__.py)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str] | dict[str, Path]) -> list[tuple[str, str | None]]:
    """(absolute name as written, the module of the package it imports or None) for every import statement."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, alias.name if alias.name in modules else None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"  # `from . import editing` imports the module editing
                target = submodule if submodule in modules else base if base in modules else None
                found.append((base, target))
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the modules of the package it imports (anywhere in its code)."""
    files = module_files(package)
    return {name: {t for _, t in imports_of(name, path, files) if t and t != name} for name, path in files.items()}


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the modules that import each other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def a_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module, as the path of imports a → b → … → a."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for successor in sorted(graph[node] & members):
            if successor == start:
                return [*paths[node], start]
            if successor not in paths:
                paths[successor] = [*paths[node], successor]
                frontier.append(successor)
    raise AssertionError(f"{component} is not strongly connected")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [a_cycle(c, graph) for c in strongly_connected_components(graph) if len(c) > 1]


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 60 and "torch_consistency.editing" in graph["torch_consistency.model"]
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" → ".join(cycle) for cycle in found)


def test_the_graph_sees_every_kind_of_import_and_names_the_cycle(tmp_path):
    """On a small package: an import inside a function and one under TYPE_CHECKING close a cycle; `from . import
    sub` imports the submodule sub, not the package; an import of a name imports its module."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import sub\n",
        "a.py": "def f():\n    from .b import g\n    return g\n",
        "b.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .c import h\n",
        "c.py": "import pkg.a\nimport torch\n",
        "sub/__init__.py": "from ..c import h\n",
        "sub/leaf.py": "from .. import a\nfrom . import x\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph == {
        "pkg": {"pkg.sub"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
        "pkg.sub": {"pkg.c"},
        "pkg.sub.leaf": {"pkg.a", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_mathematical_modules_import_only_each_other_errors_torch_numpy_and_the_standard_library():
    files = module_files(PACKAGE)
    outside = set(sys.stdlib_module_names) | {"torch", "numpy"}

    def allowed(written: str, target: str | None) -> bool:
        if written.split(".")[0] == "torch_consistency":
            return target is not None and target.split(".")[1] in (*MATH, "errors")
        return written.split(".")[0] in outside

    math_modules = [name for name in files if name.count(".") and name.split(".")[1] in MATH]
    assert len(math_modules) == len(MATH) + 2  # editing is a package of three
    wrong = [
        f"{name} imports {target or written}"
        for name in math_modules
        for written, target in imports_of(name, files[name], files)
        if not allowed(written, target)
    ]
    assert not wrong, wrong


def test_the_readme_lists_the_layers_that_the_contracts_enforce():
    """README.md's "Architecture" names every layer of pyproject.toml's layers contract, top to bottom."""
    root = PACKAGE.parents[1]
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    modules = [name.strip() for layer in layers for name in re.split(r"[|:]", layer)]
    section = (root / "README.md").read_text().split("## Architecture")[1].split("\n## ")[0]
    listed = re.findall(r"`([\w.]+)`", "\n".join(re.findall(r"^\s*\d+\. .*(?:\n {3,}.*)*", section, re.MULTILINE)))
    named = [name for name in dict.fromkeys(listed) if name in modules]
    assert named == modules
