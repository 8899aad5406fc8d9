"""The transcription queue in PostgreSQL (``speech_jobs``, migration 008): the queue's only writer.

One job per call.  Workers on any machine share the table: a job is claimed with ``FOR UPDATE SKIP
LOCKED`` (two workers never take the same one), held by a lease that heartbeats renew, and taken up
again by anybody once the lease has run out (its worker crashed or was killed).  Every insert or
requeue sends ``NOTIFY callrec_speech`` so idle workers wake at once; they also poll.

Policy (which calls, the backlog cap, backoff) is decided by callrec/analytics/queue.py; this module
only runs the statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from callrec.store.db import Conn, Db

__all__ = [
    "CHANNEL", "FAILURES_SHOWN", "candidates", "claim", "counts", "enqueue", "expire_leases", "fail", "finish",
    "heartbeat", "job", "release", "requeue", "retry_failed", "status", "waiting_ms",
]

CHANNEL = "callrec_speech"  # LISTEN/NOTIFY channel: a job became due
FAILURES_SHOWN = 20
ERROR_CHARS = 500


async def notify(conn: Db) -> None:
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


async def candidates(conn: Db, *, call_ids: Sequence[str] | None = None, since_days: int = 0,
                     limit: int = 1000) -> list[dict[str, Any]]:
    """Finalized calls with a ready recording and no job yet: the given calls, or those that ended in the last
    ``since_days`` days (the start-up sweep).  Oldest last: the newest are queued first."""
    where = ["c.finalized_at IS NOT NULL", "c.recording_status = 'ready'", "c.recording_sha256 IS NOT NULL",
             "NOT EXISTS (SELECT 1 FROM speech_jobs j WHERE j.call_id = c.id)"]
    args: list[Any] = []
    if call_ids is not None:
        args.append(list(call_ids))
        where.append(f"c.id = ANY(${len(args)}::uuid[])")
    else:
        args.append(float(since_days) * 86400)
        where.append(f"c.ended_at > now() - make_interval(secs => ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"""SELECT c.id, c.policy_rule, c.language, c.recording_duration, c.ended_at FROM calls c
            WHERE {' AND '.join(where)} ORDER BY c.ended_at DESC LIMIT ${len(args)}""", *args)
    return [{"call_id": str(r["id"]), "policy_rule": r["policy_rule"], "language": r["language"],
             "audio_ms": round((r["recording_duration"] or 0) * 1000), "ended_at": r["ended_at"]} for r in rows]


async def enqueue(conn: Db, call_id: str, *, audio_ms: int, language: str | None, reason: str,
                  call_at: datetime | None = None, state: str = "pending", priority: int = 0) -> bool:
    """Queue a call (idempotent: a call already queued keeps its job); ``state='skipped'`` records a call left out
    on purpose, with the reason.  ``call_at`` orders the queue (newest call first).  False when it had a job."""
    assert state in ("pending", "skipped")
    added = await conn.fetchval(
        """INSERT INTO speech_jobs (call_id, state, priority, audio_ms, language, reason, created_at, done_at)
           VALUES ($1::uuid, $2, $3, $4, $5, $6, coalesce($7, now()), CASE WHEN $2 = 'skipped' THEN now() END)
           ON CONFLICT (call_id) DO NOTHING RETURNING true""",
        call_id, state, priority, max(0, audio_ms), language, reason, call_at)
    if added and state == "pending":
        await notify(conn)
    return bool(added)


async def waiting_ms(conn: Db) -> int:
    """Audio waiting in the queue (pending and running), in milliseconds: what the backlog cap compares."""
    return int(await conn.fetchval(
        "SELECT coalesce(sum(audio_ms), 0) FROM speech_jobs WHERE state IN ('pending', 'running')"))


async def expire_leases(conn: Db, max_attempts: int) -> list[dict[str, Any]]:
    """Running jobs whose lease ran out (their worker is gone): back to pending, or failed once they have had
    ``max_attempts`` tries.  Returns what was done, for the log."""
    rows = await conn.fetch(
        """WITH lost AS (SELECT call_id FROM speech_jobs WHERE state = 'running' AND lease_until < now()
                         FOR UPDATE SKIP LOCKED)
           UPDATE speech_jobs j SET
               state = CASE WHEN j.attempts >= $1 THEN 'failed' ELSE 'pending' END,
               last_error = 'worker ' || coalesce(j.worker, '?') || ' stopped (its lease ran out)',
               next_attempt_at = now(), lease_until = NULL, progress = NULL,
               done_at = CASE WHEN j.attempts >= $1 THEN now() END
           FROM lost WHERE j.call_id = lost.call_id RETURNING j.call_id, j.state, j.last_error""", max_attempts)
    return [{"call_id": str(r["call_id"]), "state": r["state"], "error": r["last_error"]} for r in rows]


async def claim(conn: Db, worker: str, lease_s: float) -> dict[str, Any] | None:
    """Take the most urgent due job (highest priority, then the newest call) for ``worker``; None when none is
    due.  Another worker's transaction never sees the same row (SKIP LOCKED)."""
    row = await conn.fetchrow(
        """WITH due AS (SELECT call_id FROM speech_jobs WHERE state = 'pending' AND next_attempt_at <= now()
                        ORDER BY priority DESC, created_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
           UPDATE speech_jobs j SET state = 'running', worker = $1, attempts = j.attempts + 1,
               heartbeat_at = now(), lease_until = now() + make_interval(secs => $2), started_at = now(),
               progress = 0, done_at = NULL
           FROM due WHERE j.call_id = due.call_id RETURNING j.*""", worker, float(lease_s))
    return _job(row) if row is not None else None


async def heartbeat(conn: Db, call_id: str, worker: str, lease_s: float, progress: float | None) -> bool:
    """Renew the lease (and note the progress); False when the job is no longer this worker's (its lease ran out
    and somebody else took it, or an operator requeued it)."""
    return bool(await conn.fetchval(
        """UPDATE speech_jobs SET heartbeat_at = now(), lease_until = now() + make_interval(secs => $3),
               progress = coalesce($4, progress)
           WHERE call_id = $1::uuid AND worker = $2 AND state = 'running' RETURNING true""",
        call_id, worker, float(lease_s), None if progress is None else max(0.0, min(1.0, float(progress)))))


async def finish(conn: Conn, call_id: str, worker: str) -> bool:
    """Mark the job done (run it in the transaction that saved the transcript); False when it is not this
    worker's any more (then the caller rolls back: the other holder will save it)."""
    return bool(await conn.fetchval(
        """UPDATE speech_jobs SET state = 'done', progress = 1, lease_until = NULL, done_at = now(), last_error = NULL
           WHERE call_id = $1::uuid AND worker = $2 AND state = 'running' RETURNING true""", call_id, worker))


async def fail(conn: Db, call_id: str, worker: str, error: str, retry_in: float | None) -> str | None:
    """A failed try: back to pending after ``retry_in`` seconds, or ``failed`` for good when it is None.
    Returns the new state (None when the job was not this worker's)."""
    return await conn.fetchval(
        """UPDATE speech_jobs SET state = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,
               last_error = $3, lease_until = NULL, progress = NULL,
               next_attempt_at = now() + make_interval(secs => coalesce($4::float8, 0)),
               done_at = CASE WHEN $4::float8 IS NULL THEN now() END
           WHERE call_id = $1::uuid AND worker = $2 AND state = 'running' RETURNING state""",
        call_id, worker, error[:ERROR_CHARS], retry_in)


async def release(conn: Db, call_id: str, worker: str) -> None:
    """Give a job back untried (the worker is stopping): pending at once, the try not counted."""
    await conn.execute(
        """UPDATE speech_jobs SET state = 'pending', attempts = greatest(attempts - 1, 0), lease_until = NULL,
               progress = NULL, next_attempt_at = now()
           WHERE call_id = $1::uuid AND worker = $2 AND state = 'running'""", call_id, worker)


async def job(conn: Db, call_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM speech_jobs WHERE call_id = $1::uuid", call_id)
    return _job(row) if row is not None else None


def _job(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["call_id"] = str(out["call_id"])
    return out


async def requeue(conn: Conn, call_ids: Sequence[str], *, reason: str, priority: int | None = None) -> list[str]:
    """Queue calls again (re-transcribe: a new model, a fixed file), whatever their job's state, except one
    running now; calls without a job get one.  ``priority`` moves them up the queue (None: a job keeps its own,
    a new one gets 0).  Returns the calls queued.  Run it in the transaction that audits it."""
    rows = await conn.fetch(
        """WITH wanted AS (
               SELECT c.id, c.language, c.recording_duration, c.ended_at FROM calls c
               WHERE c.id = ANY($1::uuid[]) AND c.recording_status = 'ready' AND c.finalized_at IS NOT NULL)
           INSERT INTO speech_jobs AS j (call_id, audio_ms, language, reason, created_at, priority)
           SELECT id, greatest(0, round(coalesce(recording_duration, 0) * 1000))::int, language, $2,
                  coalesce(ended_at, now()), coalesce($3::int, 0) FROM wanted
           ON CONFLICT (call_id) DO UPDATE SET state = 'pending', attempts = 0, next_attempt_at = now(),
               reason = EXCLUDED.reason, last_error = NULL, progress = NULL, lease_until = NULL, done_at = NULL,
               priority = coalesce($3::int, j.priority)
           WHERE j.state <> 'running'
           RETURNING j.call_id""", list(call_ids), reason, priority)
    if rows:
        await notify(conn)
    return [str(r["call_id"]) for r in rows]


async def retry_failed(conn: Conn, call_ids: Sequence[str] | None, *, reason: str,
                       priority: int | None = None) -> list[str]:
    """Failed jobs (all, or the given calls') back to pending with their tries reset (and, given, a new
    ``priority``)."""
    rows = await conn.fetch(
        """UPDATE speech_jobs SET state = 'pending', attempts = 0, next_attempt_at = now(), reason = $2,
               done_at = NULL, progress = NULL, priority = coalesce($3::int, priority)
           WHERE state = 'failed' AND ($1::uuid[] IS NULL OR call_id = ANY($1::uuid[])) RETURNING call_id""",
        None if call_ids is None else list(call_ids), reason, priority)
    if rows:
        await notify(conn)
    return [str(r["call_id"]) for r in rows]


async def calls_since(conn: Db, since: datetime) -> list[str]:
    """Calls with a ready recording that started at or after ``since`` (`callrec speech requeue --since`)."""
    rows = await conn.fetch("SELECT id FROM calls WHERE started_at >= $1 AND recording_status = 'ready' "
                            "AND finalized_at IS NOT NULL ORDER BY started_at", since)
    return [str(r["id"]) for r in rows]


async def counts(conn: Db) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM speech_jobs GROUP BY state")
    out = {s: 0 for s in ("pending", "running", "done", "failed", "skipped")}
    out.update({r["state"]: int(r["n"]) for r in rows})
    return out


async def status(conn: Db) -> dict[str, Any]:
    """What `callrec speech status` shows: jobs by state, audio waiting, the rate over the last hour, the jobs
    running (with progress), the failures with their reasons."""
    waiting = await conn.fetchrow(
        """SELECT coalesce(sum(audio_ms) FILTER (WHERE state = 'pending'), 0) AS pending_ms,
                  coalesce(sum(audio_ms * (1 - coalesce(progress, 0)::numeric(6, 3)))
                           FILTER (WHERE state = 'running'), 0) AS running_left_ms
           FROM speech_jobs""")
    assert waiting is not None
    hour = await conn.fetchrow(
        """SELECT count(*) AS jobs, coalesce(sum(audio_ms), 0) AS audio_ms FROM speech_jobs
           WHERE state = 'done' AND done_at > now() - interval '1 hour'""")
    assert hour is not None
    running = await conn.fetch(
        """SELECT call_id, worker, progress, attempts, started_at, lease_until, audio_ms FROM speech_jobs
           WHERE state = 'running' ORDER BY started_at""")
    failures = await conn.fetch(
        f"""SELECT call_id, attempts, last_error, done_at FROM speech_jobs WHERE state = 'failed'
            ORDER BY done_at DESC NULLS LAST LIMIT {FAILURES_SHOWN}""")
    return {
        "jobs": await counts(conn),
        "waiting_audio_ms": int(waiting["pending_ms"]) + round(waiting["running_left_ms"]),
        "done_last_hour": {"jobs": int(hour["jobs"]), "audio_ms": int(hour["audio_ms"])},
        "running": [{"call_id": str(r["call_id"]), "worker": r["worker"],
                     "progress": None if r["progress"] is None else round(r["progress"], 3),
                     "attempt": r["attempts"], "started_at": r["started_at"], "lease_until": r["lease_until"],
                     "audio_ms": r["audio_ms"]} for r in running],
        "failures": [{"call_id": str(r["call_id"]), "attempts": r["attempts"], "error": r["last_error"],
                      "at": r["done_at"]} for r in failures],
    }
