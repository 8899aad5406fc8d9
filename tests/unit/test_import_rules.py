"""The layout's import rules hold for every import in the package, including those inside functions:
what each folder may import (the table in docs/ARCHITECTURE.md), no private names taken from
another module, and no circle between modules."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from support import REPO

PACKAGE = REPO / "callrec"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (a submodule when a name is one)
    name: str | None  # the name taken from it, if any
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    return (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}:{node.lineno}: relative import (the package imports absolutely)"
            if node.module and node.module.split(".")[0] == "callrec":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    target = sub if sub in MODULES else node.module
                    found.append(Import(module, target, None if target == sub else alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [Import(module, a.name, None, node.lineno) for a in node.names
                      if a.name.split(".")[0] == "callrec"]
    return found


ALL = [imp for module in sorted(MODULES) for imp in imports_of(module)]


def room(module: str) -> str:
    """The folder (``calls/``) or top-level module (``app.py``) a module lives in."""
    parts = module.split(".")
    if len(parts) == 1:
        return "callrec"
    if f"callrec.{parts[1]}" in MODULES and (PACKAGE / f"{parts[1]}.py").exists():
        return f"{parts[1]}.py"
    return f"{parts[1]}/"


def documented_rules() -> dict[str, set[str]]:
    text = ARCHITECTURE.read_text()
    section = text.split("## What may import what", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w./]+`", cells[0]):
            rules[cells[0].strip("`")] = set(re.findall(r"`([\w./]+)`", cells[1]))
    return rules


def test_every_room_of_the_package_has_a_documented_rule() -> None:
    rules = documented_rules()
    rooms = {room(m) for m in MODULES} - {"callrec"}
    assert rooms <= rules.keys(), f"rooms without a row in ARCHITECTURE.md: {sorted(rooms - rules.keys())}"
    assert rules.keys() <= rooms, f"rows for rooms that do not exist: {sorted(rules.keys() - rooms)}"


def test_every_import_follows_the_documented_table() -> None:
    rules = documented_rules()
    wrong = []
    for imp in ALL:
        here, there = room(imp.module), room(imp.target)
        if there in (here, "callrec"):  # its own room, or the package's __version__
            continue
        if there not in rules.get(here, set()):
            wrong.append(f"{imp.module}:{imp.line} imports {imp.target} ({here} may not import {there})")
    assert not wrong, "\n".join(wrong)


def test_no_module_takes_private_names_from_another() -> None:
    private = [f"{i.module}:{i.line} takes {i.name} from {i.target}" for i in ALL
               if i.name and i.name.startswith("_") and not i.name.startswith("__") and i.target != i.module]
    assert not private, "\n".join(private)


def test_modules_import_each_other_without_a_circle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL:
        if imp.target in graph and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_checks_see_imports_inside_functions() -> None:
    """The CLI imports some modules lazily (a quick ``--help``); those count like any other."""
    inside = [i for i in ALL if MODULES[i.module].read_text().splitlines()[i.line - 1].startswith(" ")]
    assert inside, "no import inside a function was found: the walk would miss hidden circles"
    assert len(MODULES) > 60 and len(ALL) > 200
