"""The layers import only downward, and our modules import each other without cycles (issue 11).

    styrolite   the runtime          imports nothing of zoneinit, host, idm, zonebuild, zoneoci, shim
    idm         the wire protocol    imports nothing of styrolite, zoneinit, host, zonebuild, zoneoci, shim
    zoneoci     OCI content          imports nothing of styrolite, idm, zoneinit, host, zonebuild, shim
    zoneinit    the zone's PID 1     imports nothing of host, zonebuild, zoneoci, shim
    zonebuild   the image builders   imports nothing of host, shim
    host        zonehost             imports nothing of shim
    shim        the containerd shim  (may use all of them)

Every import counts, wherever it is written: at the top of a module, inside a function (a lazy import is
still a dependency) or under ``TYPE_CHECKING``. Read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# the project's top-level packages and their folders, declared once in pyproject.toml
PACKAGES: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["zone"]["packages"]
FORBIDDEN = {
    "styrolite": {"zoneinit", "host", "idm", "zonebuild", "zoneoci", "shim"},
    "idm": {"styrolite", "zoneinit", "host", "zonebuild", "zoneoci", "shim"},
    "zoneoci": {"styrolite", "idm", "zoneinit", "host", "zonebuild", "shim"},
    "zoneinit": {"host", "zonebuild", "zoneoci", "shim"},
    "zonebuild": {"host", "shim"},
    "host": {"shim"},
}


def _module_name(path: Path) -> str:
    for package, directory in PACKAGES.items():
        root = REPO / directory
        if path.is_relative_to(root):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in PACKAGES.values():
        for path in sorted((REPO / directory).rglob("*.py")):
            if "__pycache__" not in path.parts and "stage0" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports_in(nodes: Iterable[ast.AST], name: str) -> set[str]:
    """The modules of ours that the import statements among ``nodes`` (in module ``name``) import; a
    ``from package import submodule`` names the submodule."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), str(MODULES[name]))


GRAPH = {name: _imports_in(ast.walk(_tree(name)), name) for name in MODULES}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_packages_are_all_seen():
    assert {_top(m) for m in MODULES} == set(PACKAGES)
    assert "idm.server" in MODULES and "zoneinit.boot.phases" in MODULES and "host.link" in MODULES


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_downward(layer: str):
    wrong = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() if _top(module) == layer
                   for target in targets if _top(target) in FORBIDDEN[layer])
    assert not wrong, "\n".join(wrong)


def _missing_in(name: str) -> list[str]:
    """Imports in ``name`` of a module of ours that does not exist (``from pkg import name`` may name a
    module or an attribute of ``pkg``: only a dotted ``import``/``from`` target must be a module)."""
    missing = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            targets = [node.module]
        else:
            continue
        missing += [t for t in targets if _top(t) in PACKAGES and t not in MODULES]
    return missing


def test_every_import_of_ours_names_a_module_that_exists():
    """A moved module leaves no import behind (a lazy import inside a function fails only when it runs)."""
    wrong = sorted(f"{name} imports {target}" for name in MODULES for target in _missing_in(name))
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
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
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _reached(start: str) -> set[str]:
    reached: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += _top_level_imports(module)
    return reached


def test_pid1_first_import_stays_lean():
    """``import zoneinit.init`` (PID 1's start) reaches none of the heavy modules: the IDM server and msgpack,
    Styrolite's runtime, the config parser, the network's rtnetlink client (a forked helper's), the system
    extensions' handling are imported by the phases that need them (extensions: only when the config has some)."""
    heavy = {m for m in _reached("zoneinit.init")
             if m.startswith(("idm", "styrolite.api", "styrolite.lifecycle", "styrolite.spec", "zoneinit.config.parser",
                              "zoneinit.idm", "zoneinit.containers", "zoneinit.mounts.extensions",
                              "zoneinit.modules.firmware", "zoneinit.rtnetlink"))}
    assert not heavy, sorted(heavy)


def test_pid1_imports_the_config_parser_only_in_forked_children_or_when_asked():
    """The IDM phase (the service and its handlers) does not bring in the config parser: PID 1 reads its config
    in a child, and parses a container definition only when a container.create arrives."""
    assert "zoneinit.config.parser" not in _reached("zoneinit.idm.service")


def _top_level_imports(name: str) -> list[str]:
    """Imports that run when ``name`` is imported: module level, outside ``if TYPE_CHECKING``, not in functions;
    and its package's ``__init__``."""
    nodes = [node for node in _tree(name).body
             if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))]
    found = sorted(_imports_in(nodes, name))
    parent = name.rpartition(".")[0]
    if parent in MODULES:
        found.append(parent)
    return found
