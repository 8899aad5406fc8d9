"""The call-log writer: keeps database round trips off the caller's path.

Sessions hand it the fields that changed; it merges them per call and upserts in the
background.  If PostgreSQL is down, changes keep merging in memory and are written, in full,
once it is back: nothing is lost and no caller waits.  An outage is logged twice: one WARNING
when the database goes away, one INFO when it is back with how many calls' changes were written
(no traceback for a connection error; asyncpg's own pool messages are quieted, ``quiet_pool_log``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from callrec.store.db import Conn
from callrec.store.record import COLUMNS

log = logging.getLogger("callrec.calllog")

_COLUMN_SET = frozenset(COLUMNS)
# Not a column: the full list of the call's parties (callrec.calls.parties), upserted into call_parties.
PARTIES = "parties"
# SQLSTATE classes after which the same write can succeed later: connection (08), resources (53),
# operator intervention / server shutting down (57), rollback (40); lock timeout, read-only standby.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_STATES = ("55P03", "25006")


def is_transient(exc: BaseException) -> bool:
    """Retry later (True) or give the write up (False: the data itself is refused)."""
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value asyncpg cannot encode
        return False
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return False


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class _QuietPool(logging.Filter):
    """asyncpg's pool logs each failed reconnect with a traceback; a connection error is no bug:
    keep it at DEBUG, one line, and leave the outage to the writer's WARNING and INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_transient(exc):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {_brief(exc)}"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET_POOL = _QuietPool()


def quiet_pool_log() -> None:
    """Install the filter on asyncpg's pool logger (idempotent)."""
    logger = logging.getLogger("asyncpg.pool")
    if _QUIET_POOL not in logger.filters:
        logger.addFilter(_QUIET_POOL)


def storable_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL or lone surrogates: escape just those, keep the rest verbatim."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


class CallLogWriter:
    def __init__(self, pool: asyncpg.Pool, retry_delay: float = 1.0) -> None:
        self.pool = pool
        self.retry_delay = retry_delay
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self.failures = 0
        self.down_since: float | None = None  # loop time the current outage began (None: no outage)

    @property
    def pending_calls(self) -> int:
        """Calls with changes not yet written (the metrics' backlog figure)."""
        return len(self._pending)

    def start(self) -> None:
        quiet_pool_log()
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    def update(self, call_id: str, changes: dict[str, Any]) -> None:
        """Queue changed fields of one call (never blocks, never raises on bad data)."""
        if not changes:
            return
        unknown = set(changes) - _COLUMN_SET - {PARTIES}
        if unknown:
            raise ValueError(f"not call-log columns: {sorted(unknown)}")
        self._pending.setdefault(call_id, {}).update(changes)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 10.0) -> None:
        if not await self.flush(timeout):
            log.error("call log: %d call(s) could not be written before shutdown", len(self._pending))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    await self._write_pending()
                if not self._pending:
                    self._idle.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die quietly: log, pause, go on
                log.exception("call log writer error; continuing")
                self._wake.set()
                await asyncio.sleep(self.retry_delay)

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch.items())
            self.writes += len(batch)
            self._back(len(batch))
            return
        except Exception as exc:
            if is_transient(exc):
                self._requeue(batch.items(), exc)
                await asyncio.sleep(self.retry_delay)
                return
        # One bad row must not hold back the others: write them one by one.
        for item in batch.items():
            try:
                await self._write([item])
                self.writes += 1
                self._back(1)
            except Exception as exc:
                if is_transient(exc):
                    self._requeue([item], exc)
                    continue
                self.failures += 1
                log.error("call log: call %s rejected by the database (%s); fields %s dropped",
                          item[0], exc, sorted(item[1]))

    def _requeue(self, items: Iterable[tuple[str, dict[str, Any]]], exc: BaseException) -> None:
        """Put changes back under anything newer, to be written when the database answers."""
        self.failures += 1
        items = list(items)
        if self.down_since is None:
            self.down_since = asyncio.get_running_loop().time()
            log.warning("call log: database unreachable (%s: %s); changes of %d call(s) are kept in memory and "
                        "written when it is back", type(exc).__name__, _brief(exc), len(self._pending) + len(items))
        else:
            log.debug("call log: write failed again (%s: %s)", type(exc).__name__, _brief(exc))
        for call_id, fields in items:
            newer = self._pending.get(call_id, {})
            self._pending[call_id] = {**fields, **newer}

    def _back(self, written: int) -> None:
        """A write went through: if it ends an outage, say so once, with what was caught up."""
        if self.down_since is None:
            return
        waited = asyncio.get_running_loop().time() - self.down_since
        self.down_since = None
        log.info("call log: the database is back after %.0f s; changes of %d call(s) written", waited,
                 written)

    async def _write(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for call_id, fields in items:
                fields = {k: _storable(v) for k, v in fields.items() if k != "id"}
                parties = fields.pop(PARTIES, None)
                cols = list(fields)
                log.debug("write call %s: %s", call_id, ", ".join(cols))
                if not cols:
                    pass  # only the parties changed
                elif "door" in fields:
                    # The first write of a call carries every field (PostgreSQL checks NOT NULL before
                    # ON CONFLICT, so a partial upsert would fail even for an existing row).
                    placeholders = ", ".join(f"${i + 2}" for i in range(len(cols)))
                    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
                    sql = (
                        f"INSERT INTO calls (id, {', '.join(cols)}) VALUES ($1, {placeholders}) "
                        f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()"
                    )
                    await conn.execute(sql, call_id, *fields.values())
                else:
                    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
                    status = await conn.execute(f"UPDATE calls SET {sets}, updated_at = now() WHERE id = $1",
                                                call_id, *fields.values())
                    if status == "UPDATE 0":
                        log.error("call log: call %s has no row; fields %s lost", call_id, sorted(cols))
                if parties:
                    await _write_parties(conn, call_id, parties)


async def _write_parties(conn: Conn, call_id: str, parties: list[dict[str, Any]]) -> None:
    """Upsert the call's whole party list (it only grows; ``left_at`` and roles change)."""
    await conn.executemany(
        "INSERT INTO call_parties (call_id, seq, number, name, channel, role, joined_at, left_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_id, seq) DO UPDATE SET "
        "number = EXCLUDED.number, name = EXCLUDED.name, channel = EXCLUDED.channel, role = EXCLUDED.role, "
        "joined_at = EXCLUDED.joined_at, left_at = EXCLUDED.left_at",
        [(call_id, p["seq"], _storable(p["number"]), _storable(p["name"]), _storable(p["channel"] or ""), p["role"],
          p["joined_at"], p["left_at"]) for p in parties])
