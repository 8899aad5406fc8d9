"""The storage outbox: every finalized recording that must be encrypted at rest or uploaded goes through the
``storage_outbox`` table (migration 017), so the work survives restarts and storage outages and never runs on a
call's path (docs/storage.md#the-outbox).

    on_call_finalized (no I/O) -> in memory -> INSERT ... ON CONFLICT DO NOTHING (and a sweep at start)
    -> the uploader claims due rows (FOR UPDATE SKIP LOCKED, pushed ahead by a lease)
    -> pending:  seal (encrypt in place, when [storage] encrypt), upload, read back: sha256 must be the call log's
                 -> verified (next_at = now + local_grace); kind = "local": done
    -> verified: past the grace, the object is checked to be there with its size, the local copy removed -> done
    -> a failure: attempts + 1, next_at = now + retry_delay * 2^attempts (at most retry_max_delay)

Nothing is removed locally before the object has been read back whole with the right sha256.  The audio's
deletion (``dataops.deletion``) marks the row ``gone``; an upload that raced it deletes what it uploaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from callrec.recording.files import OutsideFolder
from callrec.storage.crypto import BadCiphertext, WrongMasterKey
from callrec.storage.store import Storage, in_thread

__all__ = ["LEASE", "SWEEP_DAYS", "Uploader", "backoff", "outbox_figures"]

log = logging.getLogger("callrec.storage")

LEASE = 300  # seconds a claimed row is pushed ahead: a daemon that dies mid-upload leaves it due again after this
SWEEP_DAYS = 7  # at start, ready recordings finalized this many days back with no row are queued (a crash between)
BATCH = 8
QUEUED_STATUSES = ("ready",)


def backoff(attempts: int, delay: int, max_delay: int) -> int:
    """Seconds to wait after the ``attempts``-th failure (1, 2, ...): doubled each time, capped."""
    return int(min(max_delay, delay * 2 ** max(0, min(attempts - 1, 30))))


@dataclass
class Counters:
    uploaded: int = 0
    sealed: int = 0
    local_removed: int = 0
    failures: int = 0
    last_error: str = ""
    by_outcome: dict[str, int] = field(default_factory=dict)


class Uploader:
    """The daemon's outbox runner.  ``needed``: False when there is nothing to do (kind local, no encryption)."""

    def __init__(self, storage: Storage, pool: asyncpg.Pool, node: str | None = None) -> None:
        self.storage = storage
        # Several nodes: this node queues and takes up only the recordings in its own folder (None: every row).
        self.node = node
        self.settings = storage.settings
        self.pool = pool
        self.counters = Counters()
        self.on_step: list[Callable[[str, str], None]] = []  # (path, outcome) observers: tests, metrics
        self._incoming: list[tuple[str, str, str, int | None, str | None]] = []
        self._wake = asyncio.Event()
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    @property
    def needed(self) -> bool:
        return self.settings.remote or self.settings.encrypt

    # -- queueing --

    def on_call_finalized(self, record: Any) -> None:
        """The call-finalized callback: queue a finished recording (no I/O)."""
        if not self.needed or record.recording_status not in QUEUED_STATUSES or not record.recording_path \
                or not record.recording_sha256:
            return
        self._incoming.append((record.recording_path, str(record.id), record.recording_sha256,
                               record.recording_bytes, self.node))
        self._wake.set()

    async def _flush_incoming(self) -> None:
        while self._incoming:
            batch, self._incoming = self._incoming, []
            try:
                await self.pool.executemany(
                    "INSERT INTO storage_outbox (path, call_id, sha256, bytes, node) "
                    "VALUES ($1, $2::uuid, $3, $4, $5) ON CONFLICT (path) DO NOTHING", batch)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._incoming[:0] = batch  # kept in memory; the start-up sweep catches them after a crash
                log.warning("storage outbox: %d recording(s) not queued yet (database: %s); retrying",
                            len(batch), exc)
                return

    async def sweep(self) -> int:
        """Queue ready recordings of the last SWEEP_DAYS that have no outbox row (finalized while the daemon was
        crashing, or while the database was away).  Older ones: ``callrec storage migrate``."""
        if not self.needed:
            return 0
        status = await self.pool.execute(
            "INSERT INTO storage_outbox (path, call_id, sha256, bytes, node) "
            "SELECT c.recording_path, c.id, c.recording_sha256, c.recording_bytes, $2 FROM calls c "
            "WHERE c.recording_status = 'ready' AND c.recording_sha256 IS NOT NULL AND c.recording_path IS NOT NULL "
            "AND c.audio_deleted_at IS NULL AND c.finalized_at > now() - make_interval(days => $1) "
            "AND ($2::text IS NULL OR c.node IS NULL OR c.node = $2) "
            "AND NOT EXISTS (SELECT 1 FROM storage_outbox o WHERE o.path = c.recording_path) "
            "ON CONFLICT (path) DO NOTHING", SWEEP_DAYS, self.node)
        return int(status.split()[-1])

    # -- lifecycle --

    def start(self) -> None:
        if self.needed and self._task is None:
            self._task = asyncio.create_task(self.run(), name="storage-outbox")
            where = (f"bucket {self.storage.bucket.where('')}" if self.settings.remote else "the recordings folder")
            log.info("storage outbox: recordings go to %s%s", where,
                     ", encrypted at rest" if self.settings.encrypt else "")

    async def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        first = True
        while not self._stop:
            try:
                if first:
                    n = await self.sweep()
                    if n:
                        log.info("storage outbox: %d recording(s) from before this start queued", n)
                    first = False
                await self._flush_incoming()
                while not self._stop and await self.run_due() == BATCH:
                    await self._flush_incoming()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("storage outbox: %s; retrying", exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass

    async def run_due(self) -> int:
        """Claim and work through one batch of due rows.  Returns how many were claimed."""
        rows = await self.pool.fetch(
            "UPDATE storage_outbox SET next_at = now() + make_interval(secs => $1), updated_at = now() "
            "WHERE path IN (SELECT path FROM storage_outbox WHERE state IN ('pending', 'verified') "
            "AND next_at <= now() AND ($3::text IS NULL OR node IS NULL OR node = $3) "
            "ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING path, call_id, sha256, bytes, state, attempts", LEASE, BATCH, self.node)
        for row in rows:
            if self._stop:
                break
            await self.step(dict(row))
        return len(rows)

    # -- one row --

    async def step(self, row: dict[str, Any]) -> str:
        path = row["path"]
        try:
            call = await self.pool.fetchrow("SELECT audio_deleted_at, recording_path FROM calls WHERE id = $1",
                                            row["call_id"])
            if call is not None and call["audio_deleted_at"] is not None:
                await self._set(path, "gone")
                outcome = "gone"
            elif row["state"] == "pending":
                if call is None:
                    raise _NotYet("the call is not in the call log yet")
                outcome = await self._pending(row)
            else:
                outcome = await self._expire(row)
        except asyncio.CancelledError:
            raise
        except (OSError, BadCiphertext, WrongMasterKey, OutsideFolder, _NotYet, _Mismatch) as exc:
            outcome = "retry"
            await self._failed(row, exc)
        for observer in self.on_step:
            observer(path, outcome)
        return outcome

    async def _pending(self, row: dict[str, Any]) -> str:
        path, sha = row["path"], row["sha256"]
        if self.settings.encrypt and await in_thread(self.storage.local_exists, path):
            if await in_thread(self.storage.seal, path, sha):
                self.counters.sealed += 1
        if not self.settings.remote:
            await self._set(path, "done")
            return "sealed"
        if not await in_thread(self.storage.local_exists, path):
            # Uploaded by an earlier try whose outcome was not recorded, and the local copy gone since?
            why = await in_thread(self.storage.verify_remote, path, sha, row["bytes"])
            if why is not None:
                raise _Mismatch(f"no local copy, and the object does not match: {why}")
        else:
            await in_thread(self.storage.upload, path)
            why = await in_thread(self.storage.verify_remote, path, sha, row["bytes"])
            if why is not None:
                raise _Mismatch(f"uploaded, but {why}")
        self.counters.uploaded += 1
        deleted = await self.pool.fetchval(
            "UPDATE storage_outbox SET state = 'verified', uploaded_at = coalesce(uploaded_at, now()), "
            "verified_at = now(), last_error = NULL, updated_at = now(), "
            "next_at = now() + make_interval(secs => $2) WHERE path = $1 AND state = 'pending' "
            "RETURNING false", path, self.settings.local_grace)
        if deleted is None:  # the audio was deleted while it uploaded: the object must go too
            await in_thread(self.storage.delete, path)
            return "gone"
        log.info("storage outbox: %s uploaded and verified", _safe(path))
        if self.settings.local_grace == 0:
            return await self._expire(row)
        return "verified"

    async def _expire(self, row: dict[str, Any]) -> str:
        """Past the grace: remove the local copy once the object is still there with the size it had."""
        path = row["path"]
        if await in_thread(self.storage.local_exists, path):
            why = await in_thread(self.storage.verify_remote, path, row["sha256"], row["bytes"])
            if why is not None:
                raise _Mismatch(f"the local copy is kept: {why}")
            await in_thread(self.storage.remove_local, path)
            self.counters.local_removed += 1
        await self.pool.execute(
            "UPDATE storage_outbox SET state = 'done', local_removed_at = now(), updated_at = now() "
            "WHERE path = $1 AND state = 'verified'", path)
        return "local_removed"

    async def _set(self, path: str, state: str) -> None:
        await self.pool.execute("UPDATE storage_outbox SET state = $2, last_error = NULL, updated_at = now() "
                                "WHERE path = $1", path, state)

    async def _failed(self, row: dict[str, Any], exc: Exception) -> None:
        attempts = row["attempts"] + 1
        wait = backoff(attempts, self.settings.retry_delay, self.settings.retry_max_delay)
        text = f"{type(exc).__name__}: {exc}"[:500]
        self.counters.failures += 1
        self.counters.last_error = text
        log.warning("storage outbox: %s: attempt %d failed, next in %d s: %s", _safe(row["path"]), attempts, wait,
                    _safe(text))
        try:
            await self.pool.execute(
                "UPDATE storage_outbox SET attempts = $2, last_error = $3, updated_at = now(), "
                "next_at = now() + make_interval(secs => $4) WHERE path = $1", row["path"], attempts, text, wait)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the lease brings it back


class _NotYet(Exception):
    pass


class _Mismatch(Exception):
    pass


def _safe(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:300]


async def outbox_figures(conn: Any) -> dict[str, float | dict[str, float]]:
    """The outbox's backlog for /metrics: rows by state, the oldest waiting row's age, bytes waiting."""
    rows = await conn.fetch("SELECT state, count(*) AS n, coalesce(sum(bytes), 0) AS b, "
                            "extract(epoch FROM now() - min(queued_at)) AS age FROM storage_outbox GROUP BY state")
    by_state = {st: 0.0 for st in ("pending", "verified", "done", "gone")} | {r["state"]: float(r["n"]) for r in rows}
    pending = [r for r in rows if r["state"] == "pending"]
    return {"callrec_storage_outbox": by_state,
            "callrec_storage_outbox_pending_bytes": float(pending[0]["b"]) if pending else 0.0,
            "callrec_storage_outbox_oldest_pending_seconds": float(pending[0]["age"] or 0) if pending else 0.0}


