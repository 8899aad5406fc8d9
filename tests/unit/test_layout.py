"""The test layout keeps its promise: tests/unit needs no Asterisk, PostgreSQL or browser (it cannot
even ask for their fixtures), and the markers select exactly the folders (``-m "not e2e"`` is tests/unit)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from support import REPO

TESTS = REPO / "tests"


def fixtures_defined(path: Path) -> set[str]:
    """Functions decorated with ``pytest.fixture`` (with or without arguments)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "fixture":
                    names.add(node.name)
    return names


def parametrized(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The argument names ``pytest.mark.parametrize`` supplies (they are not fixtures)."""
    names: set[str] = set()
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize" and dec.args:
            first = dec.args[0]
            items = first.elts if isinstance(first, ast.Tuple | ast.List) else [first]
            for item in items:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    names.update(n.strip() for n in item.value.split(","))
    return names


def fixtures_requested(path: Path) -> dict[str, set[str]]:
    """Per function: the fixtures its parameters name, and the names in ``usefixtures``."""
    wanted: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
            wanted[node.name] = params - parametrized(node)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "usefixtures":
            wanted.setdefault("usefixtures", set()).update(
                a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return wanted


# The real components' fixtures: tests/e2e/conftest.py and those the e2e modules make on top of them.
E2E_FIXTURES = set().union(*(fixtures_defined(p) for p in (TESTS / "e2e").rglob("*.py")))


def test_the_e2e_fixtures_are_found() -> None:
    assert {"sandbox", "asterisk", "pg_admin_dsn", "database", "settings", "daemon", "api_daemon", "tester",
            "browser"} <= E2E_FIXTURES


def test_no_unit_test_asks_for_a_real_component() -> None:
    offenders = []
    for path in sorted((TESTS / "unit").glob("*.py")):
        own = fixtures_defined(path)
        for function, params in fixtures_requested(path).items():
            bad = (params & E2E_FIXTURES) - own
            if bad:
                offenders.append(f"{path.relative_to(REPO)}::{function} uses {sorted(bad)}")
    assert offenders == [], "tests/unit must not need Asterisk, PostgreSQL or a browser; move these to " \
                            "tests/e2e:\n  " + "\n  ".join(offenders)


def test_every_test_file_is_in_unit_or_e2e() -> None:
    stray = [p.relative_to(REPO) for p in TESTS.rglob("test_*.py") if p.parent not in (TESTS / "unit", TESTS / "e2e")]
    assert stray == []
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names))  # rootdir-relative imports: one module name per file


def collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_markers_select_the_folders() -> None:
    not_e2e = collected("-m", "not e2e")
    assert not_e2e and not_e2e == collected("tests/unit")
    e2e = collected("-m", "e2e")
    assert e2e and all(n.startswith("tests/e2e/") for n in e2e)
    on_asterisk = collected("-m", "asterisk")
    assert on_asterisk and set(on_asterisk) < set(e2e)
    assert "tests/e2e/test_calls_e2e.py::test_notice_mode_records_with_implied_consent" in on_asterisk
    assert not any(n.startswith("tests/e2e/test_hooks.py") for n in on_asterisk)  # PostgreSQL only
