"""The call-log writer: keeps database round trips off the caller's path.

Sessions hand it the fields that changed; it merges them per call and upserts in the
background.  If PostgreSQL is down, changes keep merging in memory and are written, in full,
once it is back: nothing is lost and no caller waits.
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
        self._last_warning = -1e9  # rate-limits the "will retry" warning during an outage

    def start(self) -> None:
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
        now = asyncio.get_running_loop().time()
        if now - self._last_warning > 30:
            log.warning("call log write failed (%s: %s); %d call(s) waiting, will retry", type(exc).__name__, exc,
                        len(self._pending) + len(list(items)))
            self._last_warning = now
        for call_id, fields in items:
            newer = self._pending.get(call_id, {})
            self._pending[call_id] = {**fields, **newer}

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
