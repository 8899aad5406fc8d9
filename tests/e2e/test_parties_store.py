"""call_parties in PostgreSQL: parties are upserted with the row, and alone (parties-only writes)."""

from __future__ import annotations

import uuid

from support.sessions import at, new_session

from callrec.store import CallLogWriter, connect_pool


async def test_parties_are_upserted_with_the_row_and_alone(database: str) -> None:
    pool = await connect_pool(database)
    writer = CallLogWriter(pool, retry_delay=0.05)
    writer.start()
    try:
        session, _ = new_session()
        assert session.parties is not None
        session.parties.join(role=None, number="201", name="Агент \x00", channel="PJSIP/201-1", channel_id="b",
                             at=at(2))
        fields = {"door": "ari", "uniqueid": "anchor", "channel": "x", "started_at": at(0),
                  "consent_mode": "notice", "state": "new"}
        writer.update(session.record.id, {**fields, "parties": session.parties.take_rows()})
        assert await writer.flush(5)
        session.parties.transferred(transferer_id="b", transferer="PJSIP/201-1", at=at(9))
        session.parties.ended(at(30))
        writer.update(session.record.id, {"parties": session.parties.take_rows()})  # parties only
        assert await writer.flush(5)
        rows = await pool.fetch("SELECT seq, role, number, name, left_at FROM call_parties WHERE call_id = $1 "
                                "ORDER BY seq", uuid.UUID(session.record.id))
        assert [tuple(r) for r in rows] == [(1, "caller", "5551000", "Cust", at(30)),
                                            (2, "transferer", "201", "Агент \\x00", at(9))]
        assert writer.failures == 0
    finally:
        await writer.close()
        await pool.close()
