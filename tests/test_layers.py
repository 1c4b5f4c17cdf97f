"""The package's layers: each part imports only the parts below it, and no modules import
each other in a loop.

From the bottom: the error tree; the domain core (`pci/`, no I/O); beside each other the
simulated hardware, the host side, the controller (whose REST routers sit above its
use cases and below the app that assembles them) and the fleet page; the HTTP client,
which knows of the controller only its published settings and names; the served
application, which mounts the page beside the API; the demo; the CLI on top. Every
import counts, a function's or a type checker's own included, since each is a
dependency a reader has to follow. `tests/cli/test_import_weight.py` checks what a CLI
command loads at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import passthru

#: Each part of the package and the parts it may import besides itself. A module belongs
#: to the longest part its name starts with.
ALLOWED: Mapping[str, frozenset[str]] = {
    part: frozenset(below) for part, below in {
        "errors": (),
        "pci": ("errors",),
        "sim": ("errors", "pci"),
        "host": ("errors", "pci"),
        "controller.enums": (),
        "controller.settings": ("errors", "controller.enums"),
        "controller": ("errors", "pci", "controller.enums", "controller.settings"),
        "controller.api": ("errors", "pci", "controller", "controller.enums",
                           "controller.settings"),
        "controller.app": ("errors", "pci", "controller", "controller.api",
                           "controller.enums", "controller.settings"),
        "web": ("errors",),
        "client": ("errors", "pci", "controller.enums", "controller.settings"),
        "asgi": ("controller.app", "controller.settings", "web"),
        "demo": ("errors", "pci", "sim", "host", "client", "controller.enums",
                 "controller.settings"),
        "cli": ("errors", "pci", "sim", "host", "client", "controller", "controller.api",
                "controller.app", "controller.enums", "controller.settings", "asgi", "demo"),
    }.items()
}

ROOT = Path(passthru.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool) -> set[str]:
    """The passthru modules (or packages) `source`, the module `name`, imports."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in found if target.split(".")[0] == "passthru"}


def package_imports() -> dict[str, set[str]]:
    """Every module of passthru and the passthru modules it imports."""
    sources = {module_name(path): path for path in ROOT.rglob("*.py")}
    return {name: {target for target in imports_of(path.read_text(), name,
                                                   path.name == "__init__.py")
                   if target in sources and target != name}
            for name, path in sources.items()}


def part_of(module: str) -> str:
    relative = module.removeprefix("passthru.")
    matches = [part for part in ALLOWED
               if relative == part or relative.startswith(f"{part}.")]
    assert matches, f"{module} is in no part of ALLOWED; add it where it belongs"
    return max(matches, key=len)


def upward(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Each import from one part into a part it may not import."""
    return sorted(f"{module} imports {target} ({part_of(module)} -> {part_of(target)})"
                  for module, targets in graph.items() for target in targets
                  if module != "passthru" and target != "passthru"
                  and part_of(target) != part_of(module)
                  and part_of(target) not in ALLOWED[part_of(module)])


def loops(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The sets of modules that import each other, directly or in a ring (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            ring = []
            while (member := stack.pop()) != module:
                ring.append(member)
            if ring:
                found.append(sorted([module, *ring]))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_no_part_imports_a_part_above_it() -> None:
    assert upward(package_imports()) == []


def test_no_modules_import_each_other() -> None:
    assert loops(package_imports()) == []


def test_every_part_is_a_real_module() -> None:
    modules = {name.removeprefix("passthru.") for name in package_imports()}
    assert sorted(part for part in ALLOWED if part not in modules) == []


def test_the_checks_see_an_upward_import_and_a_loop() -> None:
    source = "from passthru.controller import models\nfrom ..cli import output\n"
    graph = {"passthru.pci.device": imports_of(source, "passthru.pci.device", False)}
    assert graph["passthru.pci.device"] >= {"passthru.controller.models",
                                            "passthru.cli.output"}
    assert upward(graph) == [
        "passthru.pci.device imports passthru.cli (pci -> cli)",
        "passthru.pci.device imports passthru.cli.output (pci -> cli)",
        "passthru.pci.device imports passthru.controller (pci -> controller)",
        "passthru.pci.device imports passthru.controller.models (pci -> controller)",
    ]
    assert loops({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
