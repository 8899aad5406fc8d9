"""Which database errors the call-log writer retries (the writer itself is in tests/e2e/test_calllog.py)."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from callrec.store.calllog import is_transient
from callrec.store.db import NoPrimary, ServerWatch, is_stale


def test_error_classes() -> None:
    assert is_transient(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_transient(asyncpg.exceptions.DeadlockDetectedError("x"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(asyncpg.exceptions.CheckViolationError("x"))
    assert not is_transient(asyncpg.exceptions._base.DataError("cannot encode"))


def test_failover_errors() -> None:
    """A multi-host DSN with no host taking writes yet (a standby not promoted) is waited out."""
    assert is_transient(asyncpg.exceptions.TargetServerAttributeNotMatched("none"))
    assert is_transient(NoPrimary("no host takes writes yet"))
    assert is_transient(asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"))


def test_stale_connections() -> None:
    """Which errors drop every connection of the DSN (the server refuses writes or is gone)."""
    assert is_stale(asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only"))
    assert is_stale(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_stale(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert is_stale(ConnectionResetError())
    assert not is_stale(None)
    assert not is_stale(asyncpg.exceptions.UniqueViolationError("dup"))
    assert not is_stale(asyncpg.exceptions.QueryCanceledError("statement timeout"))


class _Conn:
    """What ServerWatch reads of a new connection: asyncpg's record of the address it reached."""

    def __init__(self, host: str, port: int) -> None:
        self._addr = (host, port)


async def test_one_line_per_switch(caplog: pytest.LogCaptureFixture) -> None:
    watch = ServerWatch("postgresql://h1,h2/db", "primary")
    with caplog.at_level(logging.INFO, logger="callrec.database"):
        for conn in (_Conn("h1", 5432), _Conn("h1", 5432), _Conn("h2", 5432), _Conn("h2", 5432)):
            await watch.connected(conn)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["database: now on h2:5432, was h1:5432 (the primary changed); every connection to the old "
                     "server is dropped and re-made here"]
    assert (watch.server, watch.switches, watch.expired) == ("h2:5432", 1, 1)
