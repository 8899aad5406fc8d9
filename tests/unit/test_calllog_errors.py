"""Which database errors the call-log writer retries (the writer itself is in tests/e2e/test_calllog.py)."""

from __future__ import annotations

import asyncpg

from callrec.store.calllog import is_transient


def test_error_classes() -> None:
    assert is_transient(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_transient(asyncpg.exceptions.DeadlockDetectedError("x"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(asyncpg.exceptions.CheckViolationError("x"))
    assert not is_transient(asyncpg.exceptions._base.DataError("cannot encode"))
