"""The call-log writer's batched write against the real PostgreSQL: one round trip per flush, and
rows identical to those the row-by-row write makes."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from callrec.store import CallLogWriter, connect_pool
from callrec.store.calllog import _batch_payload
from callrec.store.record import CallRecord

SKIP = ("id", "created_at", "updated_at")


def full_call(**extra: Any) -> tuple[str, dict[str, Any]]:
    """A call's first write, as the session makes it: every column."""
    call_id = str(uuid.uuid4())
    record = CallRecord(id=call_id, door="ari", uniqueid=f"u-{call_id[:8]}",
                        started_at=datetime(2026, 12, 5, 21, 0, 1, 123456, tzinfo=UTC), channel="PJSIP/x-1",
                        caller_number="8 (916) 739-28-55", caller_name="Ок \x00 nul \udcff", warnings=["one", "два"],
                        notice_prompt_duration=7.009, notice_completed=True, hangup_cause=16,
                        recording_rms_dbfs=-23.41, sampled=None, **extra)
    return call_id, record.row()


def party(seq: int, left: datetime | None = None) -> dict[str, Any]:
    return {"seq": seq, "number": f"10{seq}\x00", "name": "Агент", "channel": None, "role": "agent",
            "joined_at": datetime(2026, 12, 5, 21, 0, 2, tzinfo=UTC), "left_at": left}


async def rows(pool: asyncpg.Pool, call_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row = await pool.fetchrow("SELECT * FROM calls WHERE id = $1", uuid.UUID(call_id))
    parties = await pool.fetch("SELECT * FROM call_parties WHERE call_id = $1 ORDER BY seq", uuid.UUID(call_id))
    assert row is not None
    return ({k: v for k, v in dict(row).items() if k not in SKIP},
            [{k: v for k, v in dict(p).items() if k != "call_id"} for p in parties])


async def test_one_round_trip_per_flush_and_the_same_rows_as_row_by_row(
        database: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await connect_pool(database, min_size=1, max_size=1)
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda q: sent.append(q.query))
    writer = CallLogWriter(pool, retry_delay=0.05, node="pbx-1", hold=0)  # the connection given back at once
    writer.start()
    try:
        # Written earlier, row by row (the reference), and one call written first in a batch.
        ref_id, ref = full_call()
        old_id, old = full_call()
        await writer._write_rows([(ref_id, ref)])
        writer.update(old_id, old)
        assert await writer.flush(5)
        # One flush: a new call with parties, updates of the two known calls, a call with no row.
        new_id, new = full_call(state="notifying")
        moscow = timezone(timedelta(hours=3))
        change = {"state": "ended", "ended_at": datetime(2026, 12, 6, 0, 0, 1, tzinfo=moscow),
                  "warnings": ["one", "два", "три"], "recording_duration": 61.25, "recording_bytes": 982044,
                  "hangup_cause_text": None, "keys_pressed": "59",
                  "keys_at": [datetime(2026, 12, 6, 0, 0, 0, 250000, tzinfo=moscow),
                              datetime(2026, 12, 5, 21, 0, 0, 987654, tzinfo=UTC)],
                  "parties": [party(1), party(2, datetime(2026, 12, 5, 21, 1, tzinfo=UTC))]}
        ghost_id = str(uuid.uuid4())
        sent.clear()
        writer.update(new_id, {**new, "parties": [party(1)]})
        writer.update(old_id, change)
        writer.update(ghost_id, {"state": "ended"})
        with caplog.at_level(logging.ERROR, "callrec.calllog"):
            assert await writer.flush(5)
        # One statement: no BEGIN, no COMMIT, no per-call statement; then the pool's session reset
        # when the writer gives the connection back (once per run of flushes, not per flush).
        assert len(sent) == 2 and sent[0].startswith("WITH d AS") and "RESET ALL" in sent[1], sent
        assert f"call {ghost_id} has no row; fields ['state'] lost" in caplog.text
        await writer._write_rows([(ref_id, change)])
        # The batched rows equal the row-by-row one, column for column (times, arrays, escapes).
        ref_row, ref_parties = await rows(pool, ref_id)
        old_row, old_parties = await rows(pool, old_id)
        assert {k: v for k, v in old_row.items() if k != "uniqueid"} == \
            {k: v for k, v in ref_row.items() if k != "uniqueid"}
        assert old_parties == ref_parties and len(ref_parties) == 2
        assert old_row["caller_name"] == "Ок \\x00 nul \\udcff"
        # What the writer derives goes in the batch too: the node, and the number's E.164 digits.
        assert old_row["node"] == "pbx-1"
        assert old_row["caller_digits"] == "79167392855"
        assert old_row["ended_at"] == datetime(2026, 12, 5, 21, 0, 1, tzinfo=UTC)
        # Each key's time (migration 022), to the microsecond, whatever the zone it came in.
        assert old_row["keys_at"] == [datetime(2026, 12, 5, 21, 0, 0, 250000, tzinfo=UTC),
                                      datetime(2026, 12, 5, 21, 0, 0, 987654, tzinfo=UTC)]
        assert old_parties[0]["number"] == "101\\x00" and old_parties[0]["channel"] == ""
        new_row, new_parties = await rows(pool, new_id)
        assert new_row["state"] == "notifying" and new_row["warnings"] == ["one", "два"] and new_row["keys_at"] == []
        assert [p["seq"] for p in new_parties] == [1]
        assert not await pool.fetchval("SELECT count(*) FROM calls WHERE id = $1", uuid.UUID(ghost_id))
    finally:
        await writer.close()
        await pool.close()


async def test_the_connection_is_kept_while_changes_keep_coming(database: str) -> None:
    """No session reset between the flushes of a busy moment: the writer keeps its connection for ``hold``
    seconds after the last change (a reset costs a round trip, as much as the write)."""
    pool = await connect_pool(database, min_size=1, max_size=2)
    sent: list[str] = []
    writer = CallLogWriter(pool, retry_delay=0.05, node="pbx-1", hold=30)
    writer.start()
    try:
        ids = []
        for _ in range(3):
            call_id, fields = full_call()
            ids.append(call_id)
            writer.update(call_id, fields)
            assert await writer.flush(5)
            if writer._conn is not None and not sent:
                writer._conn.add_query_logger(lambda q: sent.append(q.query))
        assert writer._conn is not None  # still held
        assert all(q.startswith("WITH d AS") for q in sent) and len(sent) == 2, sent
        assert await pool.fetchval("SELECT count(*) FROM calls WHERE id = ANY($1::uuid[])",
                                   [uuid.UUID(i) for i in ids]) == 3
    finally:
        await writer.close()
    assert writer._conn is None and any("RESET ALL" in q for q in sent), sent  # given back on close
    await pool.close()


async def test_a_pool_of_one_is_given_back_after_each_flush(database: str) -> None:
    """With ``database.pool_max = 1`` the writer keeps nothing: the pool's other users get the connection at once."""
    pool = await connect_pool(database, min_size=1, max_size=1)
    writer = CallLogWriter(pool, retry_delay=0.05, node="pbx-1", hold=30)
    writer.start()
    try:
        call_id, fields = full_call()
        writer.update(call_id, fields)
        assert await writer.flush(5)
        async with pool.acquire(timeout=1) as conn:  # would time out if the writer held it for 30 s
            assert await conn.fetchval("SELECT count(*) FROM calls WHERE id = $1", uuid.UUID(call_id)) == 1
    finally:
        await writer.close()
        await pool.close()


def test_what_cannot_go_batched_goes_row_by_row() -> None:
    call_id, first = full_call()
    assert _batch_payload([(call_id, first)]) is not None
    partial = {k: v for k, v in first.items() if k != "caller_name"}
    assert _batch_payload([(call_id, partial)]) is None  # a first write without every column
    assert _batch_payload([(call_id, {"recording_rms_dbfs": float("nan")})]) is None  # JSON has no NaN


async def test_a_refused_value_in_a_batch_holds_back_only_its_call(database: str) -> None:
    pool = await connect_pool(database)
    writer = CallLogWriter(pool, retry_delay=0.05)
    writer.start()
    try:
        good_id, good = full_call()
        bad_id, bad = full_call(consent="maybe")  # violates the CHECK constraint: the whole statement fails
        writer.update(good_id, good)
        writer.update(bad_id, bad)
        assert await writer.flush(5)
        assert [r["id"] for r in await pool.fetch("SELECT id::text FROM calls")] == [good_id]
        assert writer.failures == 1
    finally:
        await writer.close()
        await pool.close()
