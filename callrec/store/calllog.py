"""The call-log writer: keeps database round trips off the caller's path.

Sessions hand it the fields that changed; it merges them per call and upserts in the
background.  If PostgreSQL is down, changes keep merging in memory and are written, in full,
once it is back: nothing is lost and no caller waits.  With a journal (``store.journal``) every
change is also appended to local disk (fsync'd, off the caller's path) until it is written, so a
daemon stopped or killed before the database returns replays it at its next start.  The database
writes wait for ``ready`` (set once the daemon has checked the schema: it may start without the
database).  An outage is logged twice: one WARNING
when the database goes away, one INFO when it is back with how many calls' changes were written
(no traceback for a connection error; asyncpg's own pool messages are quieted, ``quiet_pool_log``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from callrec import phone
from callrec.phone import DEFAULT_COUNTRY
from callrec.store.db import Conn
from callrec.store.journal import Journal, merge_into
from callrec.store.record import COLUMNS

log = logging.getLogger("callrec.calllog")

_COLUMN_SET = frozenset(COLUMNS)
# Not a column: the full list of the call's parties (callrec.calls.parties), upserted into call_parties.
PARTIES = "parties"
# SQLSTATE classes after which the same write can succeed later: connection (08), resources (53),
# operator intervention / server shutting down (57), rollback (40); lock timeout, read-only standby.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_STATES = ("55P03", "25006")


# What a database call can raise besides a bug: a connection problem, a refusal, or (a multi-host
# DSN) no host that takes writes yet.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
             asyncpg.exceptions.TargetServerAttributeNotMatched)


def is_transient(exc: BaseException) -> bool:
    """Retry later (True) or give the write up (False: the data itself is refused)."""
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value asyncpg cannot encode
        return False
    # No host of a multi-host DSN takes writes yet: a failover under way (the standby not promoted yet).
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError
                  | asyncpg.exceptions.TargetServerAttributeNotMatched):
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
    def __init__(self, pool: asyncpg.Pool, retry_delay: float = 1.0, journal: Journal | None = None,
                 ready: bool = True, node: str | None = None, default_country: str = DEFAULT_COUNTRY,
                 coalesce: float = 0.02, hold: float = 5.0) -> None:
        self.pool = pool
        self.coalesce = coalesce  # seconds a flush waits for more changes to write with them
        # Seconds the connection is kept after the last change (then given back); never with a pool of one, whose
        # other users (hooks, recording control, the sweeps) would wait on it.
        max_size = getattr(pool, "get_max_size", None)  # None: a stand-in without one (the unit tests')
        self.hold = hold if max_size is None or max_size() > 1 else 0.0
        # This daemon's node ([node] name): written with each call's first row (the journal is the node's own,
        # so a replayed call is this node's too).
        self.node = node
        self.default_country = default_country  # [search] default_country: numbers' search digits
        self.retry_delay = retry_delay
        self.journal = journal
        self._pending: dict[str, dict[str, Any]] = {}
        self._inflight: dict[str, dict[str, Any]] = {}  # the batch being written
        self._unjournaled: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._journal_wake = asyncio.Event()
        self._journal_idle = asyncio.Event()
        self._journal_idle.set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Database writes wait for this: the daemon sets it once the schema is checked.
        self.ready = asyncio.Event()
        if ready:
            self.ready.set()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # the connection held while batches keep coming (see _write)
        self._journal_task: asyncio.Task[None] | None = None
        self.writes = 0
        self.failures = 0
        self.journaled = 0  # changes appended to the journal
        self.replayed = 0  # calls whose changes came from the journal at start
        # This run's calls, noted until the daemon has read the open rows of earlier runs (None: done).
        self._own: set[str] | None = set()
        self.down_since: float | None = None  # loop time the current outage began (None: no outage)

    @property
    def pending_calls(self) -> int:
        """Calls with changes not yet written (the metrics' backlog figure)."""
        return len(self._pending)

    def start(self) -> None:
        quiet_pool_log()
        self._task = asyncio.create_task(self._run(), name="calllog-writer")
        if self.journal is not None:
            self._journal_task = asyncio.create_task(self._run_journal(), name="calllog-journal")

    def replay(self, state: dict[str, dict[str, Any]]) -> None:
        """Changes an earlier run journaled and may not have written: queued (they are in the
        journal already).  Call before anything else is queued."""
        for call_id, fields in state.items():
            unknown = set(fields) - _COLUMN_SET - {PARTIES}
            if unknown:  # a journal from another version: what we know is still worth writing
                log.warning("call log journal: call %s: unknown fields %s dropped", call_id, sorted(unknown))
                fields = {k: v for k, v in fields.items() if k not in unknown}
            if fields:
                merge_into(self._pending, call_id, fields)
        self.replayed = len(state)
        if self._pending:
            self._idle.clear()
            self._wake.set()

    def own_calls(self, done: bool = False) -> set[str]:
        """The calls this run queued changes for (not replayed ones: those are an earlier run's).
        ``done``: stop noting them (the open rows of earlier runs have been read)."""
        own = set(self._own or ())
        if done:
            self._own = None
        return own

    def pending_call_ids(self) -> set[str]:
        """The calls with changes not yet written."""
        return set(self._pending) | set(self._inflight)

    def pending_fields(self, call_id: str) -> dict[str, Any]:
        return {**self._inflight.get(call_id, {}), **self._pending.get(call_id, {})}

    def update(self, call_id: str, changes: dict[str, Any]) -> None:
        """Queue changed fields of one call (never blocks, never raises on bad data)."""
        if not changes:
            return
        unknown = set(changes) - _COLUMN_SET - {PARTIES}
        if unknown:
            raise ValueError(f"not call-log columns: {sorted(unknown)}")
        self._pending.setdefault(call_id, {}).update(changes)
        if self._own is not None:
            self._own.add(call_id)
        if self.journal is not None:
            self._unjournaled.append((call_id, dict(changes)))
            self._journal_idle.clear()
            self._journal_wake.set()
        self._idle.clear()
        self._wake.set()

    # -- the journal --------------------------------------------------------------------------

    async def _run_journal(self) -> None:
        assert self.journal is not None
        while True:
            await self._journal_wake.wait()
            self._journal_wake.clear()
            try:
                if self._unjournaled:
                    items, self._unjournaled = self._unjournaled, []
                    await self._journal_append(items)
                elif self._all_written() and self.journal.size:
                    # Everything journaled is in the database: a checkpoint.
                    was_full = self.journal.full
                    await asyncio.to_thread(self.journal.clear)
                    if was_full:
                        log.info("call log journal: written to the database and emptied; journaling again")
            except OSError as exc:
                # A disk problem must not stop the call log: the changes stay in memory.
                log.error("call log journal: %s: %s; changes are kept in memory only until it works again",
                          self.journal.path, exc.strerror or exc)
                await asyncio.sleep(self.retry_delay)
            if not self._unjournaled:
                self._journal_idle.set()

    async def _journal_append(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        assert self.journal is not None
        if self.journal.full:
            return  # said once; a checkpoint clears it
        if self.journal.size > self.journal.max_bytes:
            # Compact: one line per pending call, merged (the items are in _pending already).
            state = {c: self.pending_fields(c) for c in self.pending_call_ids()}
            await asyncio.to_thread(self.journal.compact, state)
            if self.journal.size > self.journal.max_bytes:
                self.journal.full = True
                log.error("call log journal full: %d bytes for %d pending call(s), database.journal_max_bytes is %d; "
                          "further changes are kept in memory only (lost if the daemon stops before the database "
                          "is back)", self.journal.size, len(state), self.journal.max_bytes)
            return
        await asyncio.to_thread(self.journal.append, items)
        self.journaled += len(items)
        if self._all_written():
            self._journal_wake.set()  # written to the database meanwhile: a checkpoint is due

    def _all_written(self) -> bool:
        return not self._pending and not self._inflight and not self._unjournaled

    async def journal_flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change queued so far is in the journal (True), or the timeout passes."""
        if self.journal is None:
            return True
        try:
            await asyncio.wait_for(self._journal_idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 10.0) -> None:
        journaled = await self.journal_flush(timeout) and self.journal is not None and not self.journal.full
        if journaled and (not self.ready.is_set() or self.down_since is not None):
            # The database is away: waiting for it gains nothing, the journal has every change.
            if self._pending or self._inflight:
                log.info("call log: changes of %d call(s) are in the journal %s; written when the database is "
                         "back, at the next start", len(self.pending_call_ids()), self.journal.path)  # type: ignore[union-attr]
        elif not await self.flush(timeout):
            log.error("call log: %d call(s) could not be written before shutdown%s", len(self.pending_call_ids()),
                      " (they are in the journal)" if journaled else "")
        for task in (self._task, self._journal_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self.journal is not None:
            self.journal.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._wake.wait()
                self._wake.clear()
                await self.ready.wait()
                try:
                    while True:
                        if self.coalesce > 0:
                            # The changes of the next moments (a call's start and its notice starting, a
                            # burst of calls) go in the same statement; and a burst's notices go out first.
                            await asyncio.sleep(self.coalesce)
                        while self._pending:
                            await self._write_pending()
                        if self._conn is None or self.hold <= 0:
                            break
                        if not self._pending:
                            self._idle.set()
                            self._journal_wake.set()  # a checkpoint may be due
                        # The connection is kept while changes keep coming: giving it back costs a round
                        # trip of its own (the pool resets the session), as much as a write.
                        if not await self._woken(self.hold):
                            break
                finally:
                    await self._release()
                if not self._pending:
                    self._idle.set()
                    self._journal_wake.set()  # a checkpoint may be due
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die quietly: log, pause, go on
                log.exception("call log writer error; continuing")
                self._wake.set()
                await asyncio.sleep(self.retry_delay)

    async def _woken(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for more changes (True: they came)."""
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that comes as the wait
            # ends (the writer would then outlive close()).
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, {}
        self._inflight = batch
        try:
            await self._write_batch(batch)
        finally:
            self._inflight = {}

    async def _write_batch(self, batch: dict[str, dict[str, Any]]) -> None:
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
            log.warning("call log: database unreachable (%s: %s); changes of %d call(s) are kept in memory%s and "
                        "written when it is back", type(exc).__name__, _brief(exc), len(self._pending) + len(items),
                        " and in the journal" if self.journal is not None else "")
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
        """Write a batch: one statement, one round trip (``batched_write``); the row-by-row way
        when the batch cannot go that way (a first write missing columns, a value JSON cannot carry)."""
        items = list(items)
        payload = _batch_payload([(call_id, self._derived(fields)) for call_id, fields in items])
        if payload is None:
            await self._write_rows(items)
            return
        # One connection for a run of flushes (released once nothing is pending): a release costs a
        # round trip of its own (the pool resets the session), as much as the write.
        if self._conn is None:
            self._conn = await self.pool.acquire()
        try:
            missing = await self._conn.fetchval(_BATCH_SQL, payload)
        except BaseException:
            await self._release()  # a broken connection is not kept
            raise
        for call_id in missing or ():
            log.error("call log: call %s has no row; fields %s lost", call_id,
                      sorted(k for k in dict(items)[call_id] if k != PARTIES))

    def _derived(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The columns the writer adds to what the call reported: the numbers' search digits, and this node's
        name with a call's first write (as ``_write_rows`` does)."""
        out = dict(fields)
        _add_digits(out, self.default_country)
        if self.node is not None and "door" in out:
            out["node"] = self.node
        return out

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.pool.release(conn)
            except Exception as exc:  # the pool drops a connection it cannot reset
                log.debug("call log: releasing the connection: %s", exc)

    async def _write_rows(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for call_id, fields in items:
                fields = {k: _storable(v) for k, v in fields.items() if k != "id"}
                parties = fields.pop(PARTIES, None)
                _add_digits(fields, self.default_country)
                cols = list(fields)
                log.debug("write call %s: %s", call_id, ", ".join(cols))
                if not cols:
                    pass  # only the parties changed
                elif "door" in fields:
                    # The first write of a call carries every field (PostgreSQL checks NOT NULL before
                    # ON CONFLICT, so a partial upsert would fail even for an existing row).
                    if self.node is not None:
                        fields["node"] = self.node
                        cols.append("node")
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


def _add_digits(fields: dict[str, Any], country: str) -> None:
    """The search digits of the numbers being written (migration 014), parsed here, off the call's path."""
    for number, digits in (("caller_number", "caller_digits"), ("called_number", "called_digits")):
        if number in fields:
            fields[digits] = phone.digits(fields[number], country)


async def _write_parties(conn: Conn, call_id: str, parties: list[dict[str, Any]]) -> None:
    """Upsert the call's whole party list (it only grows; ``left_at`` and roles change)."""
    await conn.executemany(
        "INSERT INTO call_parties (call_id, seq, number, name, channel, role, joined_at, left_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_id, seq) DO UPDATE SET "
        "number = EXCLUDED.number, name = EXCLUDED.name, channel = EXCLUDED.channel, role = EXCLUDED.role, "
        "joined_at = EXCLUDED.joined_at, left_at = EXCLUDED.left_at",
        [(call_id, p["seq"], _storable(p["number"]), _storable(p["name"]), _storable(p["channel"] or ""), p["role"],
          p["joined_at"], p["left_at"]) for p in parties])


# -- one round trip per flush ------------------------------------------------------------------
# The batch travels as one JSON array, [{"c": <call id>, "f": {<column>: <value>, ...}}, ...];
# PostgreSQL turns each "f" into a calls row (jsonb_populate_record) and in one statement inserts
# the calls seen for the first time (their first write carries every column), updates only the
# columns each other call changed (the others keep their values), and upserts the parties.  It
# returns the updated calls that had no row (logged, as the row-by-row write does).  A statement
# is atomic: a batch is written whole or not at all, and a failure falls back to row by row.
# Besides the call's own fields: what the writer derives (``_derived``); not required of a first write.
_DERIVED_COLUMNS = ("node", "caller_digits", "called_digits")
_FULL = frozenset(c for c in COLUMNS if c != "id")
_DATA_COLUMNS = (*(c for c in COLUMNS if c != "id"), *_DERIVED_COLUMNS)
_BATCH_SQL = (
    "WITH d AS (SELECT (e->>'c')::uuid AS call_id, e->'f' AS f, (e->'f') ? 'door' AS fresh "
    "FROM jsonb_array_elements($1::jsonb) AS e), "
    f"r AS (SELECT d.call_id, d.f, d.fresh, {', '.join(f'p.{c}' for c in _DATA_COLUMNS)} "
    "FROM d CROSS JOIN LATERAL jsonb_populate_record(NULL::calls, d.f) AS p), "
    f"ins AS (INSERT INTO calls (id, {', '.join(_DATA_COLUMNS)}) "
    f"SELECT call_id, {', '.join(_DATA_COLUMNS)} FROM r WHERE fresh "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _DATA_COLUMNS)}, "
    "updated_at = now()), "
    "upd AS (UPDATE calls AS c SET "
    + ", ".join(f"{c} = CASE WHEN r.f ? '{c}' THEN r.{c} ELSE c.{c} END" for c in _DATA_COLUMNS)
    + ", updated_at = now() FROM r WHERE c.id = r.call_id AND NOT r.fresh AND (r.f - 'parties') <> '{}'::jsonb "
    "RETURNING c.id), "
    "par AS (INSERT INTO call_parties (call_id, seq, number, name, channel, role, joined_at, left_at) "
    "SELECT d.call_id, p.seq, p.number, p.name, p.channel, p.role, p.joined_at, p.left_at "
    "FROM d CROSS JOIN LATERAL jsonb_to_recordset(d.f->'parties') AS p(seq integer, number text, name text, "
    "channel text, role text, joined_at timestamptz, left_at timestamptz) WHERE d.f ? 'parties' "
    "ON CONFLICT (call_id, seq) DO UPDATE SET number = EXCLUDED.number, name = EXCLUDED.name, "
    "channel = EXCLUDED.channel, role = EXCLUDED.role, joined_at = EXCLUDED.joined_at, left_at = EXCLUDED.left_at) "
    "SELECT array_agg(r.call_id::text) FROM r WHERE NOT r.fresh AND (r.f - 'parties') <> '{}'::jsonb "
    "AND r.call_id NOT IN (SELECT id FROM upd)"
)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # asyncpg reads a naive time as UTC; so does this
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
    raise TypeError(f"not in a batched write: {type(value).__name__}")


def _batch_payload(items: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The batch as the JSON ``_BATCH_SQL`` takes, or None when it must go row by row."""
    entries = []
    for call_id, fields in items:
        fields = {k: _storable(v) for k, v in fields.items() if k != "id"}
        if "door" in fields and not _FULL <= fields.keys():
            return None  # a first write without every column (an old journal): row by row
        parties = fields.get(PARTIES)
        if parties is not None:
            fields[PARTIES] = [{**p, "number": _storable(p["number"]), "name": _storable(p["name"]),
                                "channel": _storable(p["channel"] or "")} for p in parties]
        entries.append({"c": call_id, "f": fields})
    try:
        return json.dumps(entries, default=_json_value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None  # NaN or an unexpected type: row by row, where asyncpg's own encoders decide
