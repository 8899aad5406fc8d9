"""The call-log writer against the real PostgreSQL: what is retried, what is refused, nothing lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from callrec.store import CallLogWriter, connect_pool


def new_call(**extra: object) -> tuple[str, dict]:
    call_id = str(uuid.uuid4())
    return call_id, {"door": "ari", "uniqueid": f"u-{call_id[:8]}", "channel": "PJSIP/x-1",
                     "started_at": datetime.now(UTC), "consent_mode": "notice", "state": "new", **extra}


async def test_a_refused_row_does_not_hold_back_the_others(database: str) -> None:
    pool = await connect_pool(database)
    writer = CallLogWriter(pool, retry_delay=0.05)
    writer.start()
    try:
        good_id, good = new_call(caller_name="Ок \x00 nul")
        bad_id, bad = new_call(consent="maybe")  # violates the CHECK constraint: permanent
        writer.update(good_id, good)
        writer.update(bad_id, bad)
        assert await writer.flush(5)
        rows = await pool.fetch("SELECT id::text, caller_name FROM calls")
        assert [(r["id"], r["caller_name"]) for r in rows] == [(good_id, "Ок \\x00 nul")]
        writer.update(good_id, {"state": "ended"})  # later updates of the good call still land
        assert await writer.flush(5)
        assert await pool.fetchval("SELECT state FROM calls WHERE id = $1", uuid.UUID(good_id)) == "ended"
    finally:
        await writer.close()
        await pool.close()


async def test_a_server_side_disconnect_is_retried_and_loses_nothing(database: str, pg_admin_dsn: str) -> None:
    pool = await connect_pool(database, min_size=1, max_size=1)
    writer = CallLogWriter(pool, retry_delay=0.05)
    writer.start()
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        first_id, first = new_call()
        writer.update(first_id, first)
        assert await writer.flush(5)
        # Kill the writer's connection, as a PostgreSQL restart would (57P01 admin_shutdown).
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'callrec'", database.rsplit("/", 1)[1])
        assert killed >= 1
        second_id, second = new_call()
        writer.update(second_id, second)
        writer.update(first_id, {"state": "ended", "hangup_cause": 16})
        assert await writer.flush(10)
        rows = {r["id"]: r for r in await pool.fetch("SELECT id::text, state, hangup_cause FROM calls")}
        assert set(rows) == {first_id, second_id}
        assert (rows[first_id]["state"], rows[first_id]["hangup_cause"]) == ("ended", 16)
    finally:
        await admin.close()
        await writer.close()
        await pool.close()
