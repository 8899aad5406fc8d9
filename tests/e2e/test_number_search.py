"""`number=` through the API over a real PostgreSQL: every written form of a number finds the call the
call-log writer stored (digits parsed with libphonenumber), a wrong number does not; rows written by other
means get their digits from the migration's trigger; the migration runner's statement-by-statement mode."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import aiohttp
import asyncpg
import pytest
from support.opsapi import T0, Bench, call, insert_call

from callrec.store import CallLogWriter
from callrec.store.migrate import Migration, _run_outside_transaction, split_statements


async def ids(http: aiohttp.ClientSession, bench: Bench, number: str, role: str = "admin") -> set[str]:
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls", role, params={"number": number, "limit": "500"})
    assert st == 200, (number, body)
    return {item["id"] for item in json.loads(body)["items"]}


async def write_call(bench: Bench, caller: str, called: str, agent: str = "201") -> str:
    """A call row written by the daemon's call-log writer (first write carries every field, then an update)."""
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(bench.pool, retry_delay=0.05)
    writer.start()
    try:
        writer.update(call_id, {"id": call_id, "door": "ari", "uniqueid": call_id[:8], "channel": "PJSIP/t-1",
                                "caller_number": caller, "called_number": "", "consent_mode": "notice",
                                "state": "new", "started_at": T0 + timedelta(hours=1), "agent": agent})
        assert await writer.flush()
        writer.update(call_id, {"called_number": called, "state": "ended",
                                "ended_at": T0 + timedelta(hours=1, seconds=30)})
        assert await writer.flush()
    finally:
        await writer.close()
    return call_id


FORMS = ("+7 916 739-28-55", "+79167392855", "79167392855", "89167392855", "8 (916) 739-28-55", "9167392855",
         "7392855", "739-28-55", "2855", "+7916*", "+7 916 739*", "8916*", "7916739*", "*7392855", "*2855",
         "+7916*55", "*916739*")
WRONG = ("+7 916 739-28-56", "89167392856", "7392856", "+79167392855 1", "+7917*", "*7392854", "+7 916 739-28-5",
         "9167392855*1", "+916*", "+7 495 123-45-68")


async def test_every_written_form_finds_the_call_and_a_wrong_one_does_not(bench: Bench,
                                                                         http: aiohttp.ClientSession) -> None:
    mine = await write_call(bench, "8 916 739-28-55", "+7 (495) 123-45-67")
    row = await bench.pool.fetchrow("SELECT caller_digits, called_digits FROM calls WHERE id = $1",
                                    uuid.UUID(mine))
    assert dict(row) == {"caller_digits": "79167392855", "called_digits": "74951234567"}
    for written in FORMS:
        assert await ids(http, bench, written) == {mine}, written
        # The agent on the call finds it too (the visibility rule applies as before).
        assert await ids(http, bench, written, "agent") == {mine}, written
    for wrong in WRONG:
        assert await ids(http, bench, wrong) == set(), wrong


async def test_called_number_forms(bench: Bench, http: aiohttp.ClientSession) -> None:
    mine = await write_call(bench, "8 916 739-28-55", "+7 (495) 123-45-67")
    for written in ("84951234567", "+7 495 123-45-67", "4951234567", "123-45-67", "+7495*", "8495*", "*4567"):
        assert await ids(http, bench, written) == {mine}, written
    # The confidential rule still applies: hidden from a supervisor, found by an admin.
    await bench.pool.execute("UPDATE calls SET confidential = true WHERE id = $1", uuid.UUID(mine))
    assert await ids(http, bench, "+74951234567", "supervisor") == set()
    assert await ids(http, bench, "+74951234567") == {mine}


async def test_rows_written_without_digits_get_them_from_the_trigger(bench: Bench, http: aiohttp.ClientSession) -> None:
    async with bench.pool.acquire() as conn:
        other = await insert_call(conn, None, started=T0 + timedelta(hours=2), agent="209",
                                  caller="+49 30 1234-5678", called="sip:500@pbx", recorded=False)
        row = await conn.fetchrow("SELECT caller_digits, called_digits FROM calls WHERE id = $1", uuid.UUID(other))
        assert dict(row) == {"caller_digits": "493012345678", "called_digits": "500"}
        assert await ids(http, bench, "+4930 12345678") == {other}
        assert await ids(http, bench, "500") == {other}
        # A number changed by a plain UPDATE gets new digits; the old ones find nothing.
        await conn.execute("UPDATE calls SET caller_number = '+4940999888' WHERE id = $1", uuid.UUID(other))
    assert await ids(http, bench, "+4940999888") == {other}
    assert await ids(http, bench, "+4930 12345678") == set()
    # Text that is no written number is compared with the stored text as before.
    assert await ids(http, bench, "sip:500*") == {other}


def test_split_statements_respects_quotes_and_bodies() -> None:
    sql = ("-- callrec: no transaction\n-- a; comment\nSELECT 'a;b';\n"
           "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
           "/* x; */ SELECT $t$;$t$ ;\n-- the end;\n")
    assert split_statements(sql) == [
        "-- callrec: no transaction\n-- a; comment\nSELECT 'a;b'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        "/* x; */ SELECT $t$;$t$"]
    assert not Migration(1, "x", sql).transactional and Migration(1, "y", "SELECT 1;").transactional


async def test_an_invalid_index_from_a_failed_concurrent_build_is_rebuilt(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE t (x int)")
    await conn.execute("INSERT INTO t VALUES (1), (1)")
    build = "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x_idx ON t (x)"
    with pytest.raises(asyncpg.UniqueViolationError):
        await _run_outside_transaction(conn, build)
    assert await conn.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x_idx'::regclass") is False
    await conn.execute("DELETE FROM t")
    await _run_outside_transaction(conn, build)  # IF NOT EXISTS alone would keep the invalid one
    assert await conn.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x_idx'::regclass") is True
    # The migrations themselves ran this way: the digit indexes are there and valid.
    names = {r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indisvalid "
        "AND c.relname LIKE 'calls_%digits%'")}
    assert names == {"calls_caller_digits_idx", "calls_called_digits_idx", "calls_caller_digits_tail_idx",
                     "calls_called_digits_tail_idx"}


async def test_count_is_exact_when_small_and_an_estimate_when_huge(bench: Bench, http: aiohttp.ClientSession,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from callrec.store import callquery

    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", "admin", params={"number": "+4930*"})
    assert st == 200 and json.loads(body) == {"count": len(bench.calls), "count_exact": True}
    await bench.pool.execute("ANALYZE calls")
    monkeypatch.setattr(callquery, "EXACT_COUNT_UP_TO", 0)  # every result is "huge": the planner's estimate
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", "admin")
    answer = json.loads(body)
    assert st == 200 and answer["count_exact"] is False and 1 <= answer["count"] <= 100


async def test_q_finds_the_same_calls_when_common_and_when_rare(bench: Bench, http: aiohttp.ClientSession,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from callrec.store import callquery

    async def q_ids(q: str, role: str = "admin") -> set[str]:
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls", role, params={"q": q})
        assert st == 200, body
        return {item["id"] for item in json.loads(body)["items"]}

    c = bench.calls
    expected = {"caro": {c["other"]}, "bob": {c["party"]}, "20": set(c.values()), "zzz": set()}
    for rare_or_common in (10**9, 0):  # collected by the trigram indexes / the log read newest first
        monkeypatch.setattr(callquery, "Q_COMMON_ABOVE", rare_or_common)
        for q, found in expected.items():
            assert await q_ids(q) == found, (q, rare_or_common)
        assert await q_ids("caro", "agent") == set()  # the visibility rule still applies
        assert await q_ids("bob", "agent") == {c["party"]}
