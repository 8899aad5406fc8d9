"""Pause and resume a running recording (PCI DSS: card numbers), from the daemon or any process.

**Silence, not a cut.**  A pause mutes MixMonitor in both directions (AMI ``MixMonitorMute``,
``Direction: both``): Asterisk keeps writing the file, with digital silence, so the recording
stays one file whose timeline is the call's.  Offsets in the file still match the call log's
times, the paused stretch is visible as silence to anyone listening, and no stop/start can lose
the file or leave a second one.  (Stopping and restarting MixMonitor would cut the stretch out,
but would need MixMonitor's append mode, shift every later offset, and open a window in which
the file is closed and reopened.)

**State lives in PostgreSQL** (``recording_pauses``), so the daemon, the HTTP API and a
``callrec recording pause`` in another process see the same state.  Each action holds a
per-call advisory lock for its transaction: the AMI action and the row are done together, and two
requests for one call never interleave.  ``paused_at`` is taken once Asterisk confirmed the mute,
``resumed_at`` just before the unmute is sent, so the logged interval lies inside the silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from callrec.asterisk.ami import Ami, AmiError, AmiTimeout, AmiUnavailable
from callrec.store.calllog import is_transient
from callrec.store.db import Conn, Db

log = logging.getLogger("callrec.recording")

SOURCES = ("api", "cli", "dtmf")
USER_EVENT = "CallrecRecording"  # raised by dialplan/callrec-recording.conf
_LOCK_CLASS = 0x63720003  # advisory lock namespace: "cr" + migration 003


class RecordingControlError(Exception):
    """A request that cannot be carried out; ``http_status`` is what the HTTP API answers."""

    http_status = 409


class CallNotFound(RecordingControlError):
    http_status = 404


class NotRecording(RecordingControlError):
    http_status = 409


class AlreadyPaused(RecordingControlError):
    http_status = 409


class NotPaused(RecordingControlError):
    http_status = 409


class ControlUnavailable(RecordingControlError):
    """AMI is not connected or did not answer: nothing was changed (or, on a timeout, maybe was)."""

    http_status = 503


@dataclass(frozen=True)
class PauseInterval:
    call_id: str
    seq: int
    paused_at: datetime
    paused_by: str
    pause_source: str
    resumed_at: datetime | None = None
    resumed_by: str | None = None
    resume_source: str | None = None

    @property
    def open(self) -> bool:
        return self.resumed_at is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        out = asdict(self)
        for key in ("paused_at", "resumed_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PauseInterval:
        return cls(call_id=str(row["call_id"]), seq=row["seq"], paused_at=row["paused_at"],
                   paused_by=row["paused_by"], pause_source=row["pause_source"], resumed_at=row["resumed_at"],
                   resumed_by=row["resumed_by"], resume_source=row["resume_source"])


@contextlib.asynccontextmanager
async def _connection(db: Db) -> AsyncIterator[Conn]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _call_uuid(call_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(call_id))
    except ValueError:
        raise CallNotFound(f"no call {str(call_id)[:64]!r}") from None


def _who(by: str) -> str:
    by = " ".join(str(by).split())[:200]
    if not by:
        raise ValueError("by: say who pauses or resumes (a user name or the agent's channel)")
    return by


async def pause_recording(call_id: str, *, by: str, source: str, ami: Ami, db: Db) -> PauseInterval:
    """Mute the call's recording (silence from now on) and log the start of a pause.

    Raises CallNotFound, NotRecording (the call is not being recorded now), AlreadyPaused,
    ControlUnavailable (AMI down) or RecordingControlError (Asterisk refused).
    """
    return await _act("pause", call_id, by=by, source=source, ami=ami, db=db)


async def resume_recording(call_id: str, *, by: str, source: str, ami: Ami, db: Db) -> PauseInterval:
    """Unmute the call's recording and close its open pause.  Raises NotPaused when none is open."""
    return await _act("resume", call_id, by=by, source=source, ami=ami, db=db)


async def toggle_recording(call_id: str, *, by: str, source: str, ami: Ami, db: Db) -> PauseInterval:
    """Pause if recording, resume if paused (the agents' single DTMF key)."""
    return await _act("toggle", call_id, by=by, source=source, ami=ami, db=db)


async def list_pauses(db: Db, call_id: str) -> list[PauseInterval]:
    cid = _call_uuid(call_id)
    async with _connection(db) as conn:
        rows = await conn.fetch("SELECT * FROM recording_pauses WHERE call_id = $1 ORDER BY seq", cid)
    return [PauseInterval.from_row(r) for r in rows]


async def close_open_pause(db: Db, call_id: str, at: datetime) -> PauseInterval | None:
    """The call ended while paused: the interval ends with the call (resume_source 'hangup')."""
    cid = _call_uuid(call_id)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            "UPDATE recording_pauses SET resumed_at = greatest($2::timestamptz, paused_at), "
            "resume_source = 'hangup' WHERE call_id = $1 AND resumed_at IS NULL RETURNING *", cid, at)
    return PauseInterval.from_row(row) if row else None


async def find_recording_call(db: Db, *, linkedid: str, node: str | None = None) -> str | None:
    """The call being recorded now whose linkedid is this one (the agent's side of the call); with ``node``,
    only that node's (two Asterisks can hand out the same linkedid)."""
    async with _connection(db) as conn:
        found = await conn.fetchval(
            "SELECT id FROM calls WHERE linkedid = $1 AND finalized_at IS NULL AND recording_status = 'recording' "
            "AND ($2::text IS NULL OR node = $2) ORDER BY started_at DESC LIMIT 1", linkedid, node)
    return str(found) if found else None


async def _act(what: str, call_id: str, *, by: str, source: str, ami: Ami, db: Db) -> PauseInterval:
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
    who = _who(by)
    cid = _call_uuid(call_id)
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", _LOCK_CLASS,
                           zlib.crc32(cid.bytes) - (1 << 31))
        call = await conn.fetchrow(
            "SELECT channel, uniqueid, recording_status, finalized_at FROM calls WHERE id = $1", cid)
        if call is None:
            raise CallNotFound(f"no call {cid}")
        if call["recording_status"] != "recording" or call["finalized_at"] is not None:
            raise NotRecording(f"call {cid} is not being recorded (recording status: {call['recording_status']})")
        current = await conn.fetchrow(
            "SELECT * FROM recording_pauses WHERE call_id = $1 AND resumed_at IS NULL", cid)
        if what == "toggle":
            what = "resume" if current is not None else "pause"
        channel = (call["channel"], call["uniqueid"])
        if what == "pause":
            if current is not None:
                raise AlreadyPaused(f"call {cid} is already paused (since {current['paused_at'].isoformat()})")
            await _mute(ami, channel, True)
            try:
                row = await conn.fetchrow(
                    "INSERT INTO recording_pauses (call_id, seq, paused_at, paused_by, pause_source) "
                    "SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4 FROM recording_pauses WHERE call_id = $1 "
                    "RETURNING *", cid, datetime.now(UTC), who, source)
            except BaseException:
                # Not logged, so not paused: the recording must not stay silent unexplained.
                with contextlib.suppress(Exception):
                    await _mute(ami, channel, False)
                raise
            log.info("call %s: recording paused by %s (%s)", cid, who, source)
        else:
            if current is None:
                raise NotPaused(f"call {cid} is not paused")
            resumed_at = datetime.now(UTC)
            await _mute(ami, channel, False)
            row = await conn.fetchrow(
                "UPDATE recording_pauses SET resumed_at = $2, resumed_by = $3, resume_source = $4 "
                "WHERE call_id = $1 AND seq = $5 RETURNING *", cid, resumed_at, who, source, current["seq"])
            log.info("call %s: recording resumed by %s (%s)", cid, who, source)
    assert row is not None  # RETURNING of the row just written (the call's lock is held)
    return PauseInterval.from_row(row)


async def _mute(ami: Ami, channel: tuple[str, str], on: bool) -> None:
    """By the channel's name, or by its uniqueid (Asterisk finds a channel by either) when the
    name is no longer known (a channel renamed since the row was written)."""
    name, uniqueid = channel
    fields = {"Action": "MixMonitorMute", "Channel": name or uniqueid, "Direction": "both",
              "State": "1" if on else "0"}
    try:
        try:
            await ami.action(fields)
        except AmiError as exc:
            if isinstance(exc, AmiUnavailable) or "no such channel" not in str(exc).lower() or not name:
                raise
            await ami.action({**fields, "Channel": uniqueid})
    except AmiTimeout as exc:
        raise ControlUnavailable(f"Asterisk did not confirm the {'mute' if on else 'unmute'} in time: {exc}") from None
    except AmiUnavailable as exc:
        raise ControlUnavailable(f"AMI is not connected: {exc}") from None
    except AmiError as exc:
        # e.g. the channel hung up a moment ago, or no MixMonitor runs on it
        raise NotRecording(f"Asterisk refused to {'mute' if on else 'unmute'} the recording on {name}: {exc}") \
            from None


CLOSE_PAUSE_PATIENCE = 3600.0  # seconds of database outage after which closing a pause is given up (ERROR)


class RecordingControl:
    """The daemon's handle: pause/resume for the HTTP API, the agents' DTMF key, and closing a
    pause that was still open when the call ended."""

    def __init__(self, ami: Ami, db: asyncpg.Pool, *, dtmf: bool = True, node: str | None = None) -> None:
        self.ami = ami
        self.db = db
        self.node = node  # the agents' key looks up this node's calls only
        self.dtmf = dtmf
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dtmf_handled = 0  # tests wait on this instead of sleeping
        self._changed = asyncio.Event()

    async def pause(self, call_id: str, *, by: str, source: str = "api") -> PauseInterval:
        return await pause_recording(call_id, by=by, source=source, ami=self.ami, db=self.db)

    async def resume(self, call_id: str, *, by: str, source: str = "api") -> PauseInterval:
        return await resume_recording(call_id, by=by, source=source, ami=self.ami, db=self.db)

    async def pauses(self, call_id: str) -> list[PauseInterval]:
        return await list_pauses(self.db, call_id)

    # -- AMI UserEvent CallrecRecording (the agents' key) --

    def on_user_event(self, fields: dict[str, str]) -> None:
        if fields.get("UserEvent") != USER_EVENT or not self.dtmf:
            return
        self._spawn(self._dtmf(fields))

    async def _dtmf(self, fields: dict[str, str]) -> None:
        channel = fields.get("Channel", "")
        request = (fields.get("CallrecAction") or "toggle").strip().lower()
        try:
            call_id = fields.get("CallID", "").strip()
            if not call_id and fields.get("Linkedid"):
                call_id = await find_recording_call(self.db, linkedid=fields["Linkedid"], node=self.node) or ""
            if not call_id:
                log.warning("pause key on %s: no recorded call found for it (no CallID, linkedid %s)", channel,
                            fields.get("Linkedid", "?"))
                return
            if request not in ("toggle", "pause", "resume"):
                log.warning("pause key on %s: unknown CallrecAction %r ignored", channel, request[:20])
                return
            await _act(request, call_id, by=channel or "dtmf", source="dtmf", ami=self.ami, db=self.db)
        except RecordingControlError as exc:
            log.warning("pause key on %s: %s", channel, exc)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("pause key on %s: the call log is unreachable, nothing changed: %s", channel, exc)
        finally:
            self.dtmf_handled += 1
            self._changed.set()

    async def wait_dtmf_handled(self, count: int, timeout: float = 10.0) -> None:
        async def _wait() -> None:
            while self.dtmf_handled < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    # -- the call ended --

    def on_call_finalized(self, record: Any) -> None:
        if record.recording_channels is None and record.recording_path is None:
            return  # never recorded: nothing can be paused
        self._spawn(self._close_open(record.id, record.ended_at or datetime.now(UTC)))

    async def _close_open(self, call_id: str, at: datetime) -> None:
        """Retried quietly while the database is unreachable (the writer logs the outage once):
        most calls were never paused, and a pause left open is closed once it answers."""
        delay, waited = 1.0, 0.0
        while True:
            try:
                closed = await close_open_pause(self.db, call_id, at)
                break
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not is_transient(exc) or waited >= CLOSE_PAUSE_PATIENCE:
                    log.error("call %s: could not close its open recording pause: %s", call_id, exc)
                    return
                log.debug("call %s: closing an open pause waits for the database: %s", call_id, exc)
            await asyncio.sleep(delay)  # backoff while the database is down, not a wait for an event
            waited += delay
            delay = min(delay * 2, 30.0)
        if closed is not None:
            log.info("call %s: ended while the recording was paused (pause %d closed)", call_id, closed.seq)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float = 5.0) -> None:
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in late:  # e.g. still waiting for the database: the row stays as it is
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
