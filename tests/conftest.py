"""Shared by tests/unit and tests/e2e: the markers every test gets from where it lives.

Everything under tests/e2e is marked ``e2e`` (it needs a real component: the sandbox Asterisk,
PostgreSQL or Chromium), and every test that uses the ``sandbox`` fixture also ``asterisk``, so
``pytest -m "not e2e"`` runs exactly tests/unit (``make test-fast``).  The fixtures of real
components are in tests/e2e/conftest.py, out of reach of tests/unit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent / "e2e"


def _worker_slot() -> None:
    """Under pytest-xdist (``make test`` runs two workers), each worker drives its own sandbox Asterisk:
    worker gwN takes slot CALLREC_SANDBOX_SLOT + N (mod 10), or the N-th of CALLREC_SANDBOX_SLOTS
    (e.g. ``0,6``) when that is set.  Set before tools/sandbox.py is imported, which reads the slot once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return
    n = int(worker[2:])
    listed = [s.strip() for s in os.environ.get("CALLREC_SANDBOX_SLOTS", "").split(",") if s.strip()]
    if listed:
        if n >= len(listed):
            raise pytest.UsageError(f"CALLREC_SANDBOX_SLOTS={','.join(listed)}: no slot for worker {worker}")
        os.environ["CALLREC_SANDBOX_SLOT"] = listed[n]
        return
    base = os.environ.get("CALLREC_SANDBOX_SLOT", "0") or "0"
    if base.isdigit():
        os.environ["CALLREC_SANDBOX_SLOT"] = str((int(base) + n) % 10)


_worker_slot()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
        if "sandbox" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.asterisk)
