"""The one way a command opens PostgreSQL (``database.dsn``).

A database that cannot be reached is one line that names the host and the database (never the
password) and exit 2. The daemon (``serve``) opens its own pool in callrec.app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, overload
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from callrec.cli.common import CommandError
from callrec.config.settings import Settings
from callrec.store import connect_pool
from callrec.store.migrate import pending

# What asyncpg raises when it cannot open a connection: refused, unknown host, time-out, refused
# credentials or database (PostgresError), an unusable DSN (ValueError, InterfaceError).
CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError,
                  asyncpg.exceptions.TargetServerAttributeNotMatched)


def where(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: the user name and password are left out."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
    except ValueError:
        return "(unparsable database.dsn)"
    host = parts.netloc.rpartition("@")[2] or ",".join(query.get("host", [])) or "localhost"
    database = unquote(parts.path.lstrip("/")) or ",".join(query.get("dbname", [])) or "(the user's database)"
    return f"{host}/{database}"


def unreachable(dsn: str, exc: BaseException, key: str = "database.dsn") -> CommandError:
    """The one-line refusal for a database that cannot be opened."""
    text = str(exc) or type(exc).__name__
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")  # asyncpg does not echo it today; make sure it never does
    return CommandError(f"{key}: cannot connect to PostgreSQL at {where(dsn)}: {text}", 2)


@overload
def open_database(settings: Settings, *, pool: Literal[False] = False, current_schema: bool = False,
                  timeout: float = 10.0) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


@overload
def open_database(settings: Settings, *, pool: Literal[True], current_schema: bool = False,
                  timeout: float = 10.0) -> AbstractAsyncContextManager[asyncpg.Pool]: ...


def open_database(settings: Settings, *, pool: bool = False, current_schema: bool = False,
                  timeout: float = 10.0) -> AbstractAsyncContextManager[Any]:
    """``async with open_database(settings) as conn``: one connection for the command, closed after it.

    ``pool=True`` gives a small pool instead, for the data jobs that run their own transactions
    (retention run, subject erase). ``current_schema=True`` refuses (exit 1) a database whose
    migrations are not all applied.
    """
    return _opened(settings.database.dsn, pool, current_schema, timeout)


@asynccontextmanager
async def _opened(dsn: str, pool: bool, current_schema: bool, timeout: float) -> AsyncIterator[Any]:
    if current_schema or not pool:
        try:
            conn = await asyncpg.connect(dsn, timeout=timeout, server_settings={"application_name": "callrec"})
        except CONNECT_ERRORS as exc:
            raise unreachable(dsn, exc) from None
        try:
            if current_schema and (missing := await pending(conn)):
                raise CommandError(f"database: schema not up to date ({', '.join(missing)} pending); "
                                   "run `callrec migrate`", 1)
            if not pool:
                yield conn
                return
        finally:
            await conn.close()
    # A pool only for the jobs that take one (migrate.pending above takes a plain connection).
    try:
        jobs = await connect_pool(dsn, 1, 2, timeout=timeout)
    except CONNECT_ERRORS as exc:
        raise unreachable(dsn, exc) from None
    try:
        yield jobs
    finally:
        await jobs.close()
