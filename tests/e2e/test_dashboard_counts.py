"""The dashboard's counts (migration 022) against a real PostgreSQL: after every kind of change to calls and
alerts (the call-log writer's batched and row-by-row writes, a first write that meets an existing row,
consent and recording settling, an agent set, a call marked confidential, a start moved, alerts raised and
deleted, a call deleted with its alerts, TRUNCATE), the count tables equal the GROUP BYs over ``calls`` and
``alerts``, and the dashboard's figures for every role, ragged and whole ranges and time zones a whole hour
or half an hour off UTC equal the same figures computed here in Python from the rows and the visibility
rule (confidential calls; an agent's own calls and those they were a party to)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from callrec.access import Principal
from callrec.store import CallLogWriter, connect_pool, dashboard, migrate
from callrec.store.alerts import insert_alert
from callrec.store.record import CallRecord

T0 = datetime(2026, 12, 1, 21, 17, 3, 250000, tzinfo=UTC)
CONSENTS = (None, "implied", "granted", "declined", "not_given", "abandoned")
STATUSES = ("none", "ready", "failed", "missing", "empty", "recording")
AGENTS = (None, "201", "202", "204")
PRINCIPALS = (Principal(name="a", role="admin"), Principal(name="s", role="supervisor"),
              Principal(name="u", role="auditor"), Principal(name="g", role="agent", extension="204"),
              Principal(name="g2", role="agent", extension="202"), Principal(name="x", role="agent"))


def call_fields(rng: random.Random, started: datetime) -> dict[str, Any]:
    """A call's first write, as the session makes it: every column."""
    call_id = str(uuid.uuid4())
    record = CallRecord(id=call_id, door="ari", uniqueid=f"u-{call_id[:8]}", started_at=started, channel="PJSIP/x-1",
                        consent=rng.choice(CONSENTS), recording_status=rng.choice(STATUSES), agent=rng.choice(AGENTS))
    return record.row()


def expected(calls: list[asyncpg.Record], parties: dict[str, set[str]], alerts: list[asyncpg.Record],
             p: Principal, since: datetime, until: datetime, tz: str) -> dict[str, Any]:
    """The figures from the rows alone, by the visibility rule as access.visible_calls_sql states it."""
    def visible(c: asyncpg.Record) -> bool:
        if p.role in ("admin", "security"):
            return True
        if p.role in ("supervisor", "auditor"):
            return not c["confidential"]
        if p.role == "agent" and p.extension:
            return not c["confidential"] and (c["agent"] == p.extension or p.extension in parties.get(str(c["id"]), ()))
        return False

    seen = [c for c in calls if since <= c["started_at"] < until and visible(c)]
    days: dict[str, dict[str, Any]] = {}
    consent: dict[str, int] = {}
    recordings: dict[str, int] = {}
    agents: dict[str, list[int]] = {}
    for c in seen:
        label = c["started_at"].astimezone(ZoneInfo(tz)).date().isoformat()
        key = c["consent"] or "none"
        day = days.setdefault(label, {"day": label, "total": 0, "consent": {}, "recorded": 0})
        day["total"] += 1
        day["consent"][key] = day["consent"].get(key, 0) + 1
        day["recorded"] += c["recording_status"] == "ready"
        consent[key] = consent.get(key, 0) + 1
        recordings[c["recording_status"]] = recordings.get(c["recording_status"], 0) + 1
        if c["agent"] is not None:
            a = agents.setdefault(c["agent"], [0, 0])
            a[0] += 1
            a[1] += c["consent"] == "declined"
    ids = {c["id"] for c in seen}
    rules: dict[str, int] = {}
    for a in alerts:
        if a["call_id"] in ids:
            rules[a["rule"]] = rules.get(a["rule"], 0) + 1
    return {"total": len(seen), "consent": consent, "recordings": recordings,
            "days": [days[k] for k in sorted(days)],
            "agents": sorted(([k, n, d] for k, (n, d) in agents.items()), key=lambda a: (-a[1], a[0])),
            "alerts": sorted(rules.items())}


def got(f: dict[str, Any]) -> dict[str, Any]:
    return {"total": f["total"], "consent": f["consent"], "recordings": f["recordings"], "days": f["days"],
            "agents": [[a["agent"], a["calls"], a["declined"]] for a in f["agents"]],
            "alerts": sorted((r["rule"], r["alerts"]) for r in f["alerts"]["rules"])}


async def check(pool: asyncpg.Pool, step: str) -> None:
    async with pool.acquire() as conn:
        # The count tables are the GROUP BYs over calls and alerts (rows at 0 aside).
        diff = await conn.fetch(
            """(SELECT hour, confidential, consent, recording_status, calls FROM dashboard_hours WHERE calls <> 0
                EXCEPT SELECT date_trunc('hour', started_at, 'UTC'), confidential, coalesce(consent, ''),
                              recording_status, count(*) FROM calls GROUP BY 1, 2, 3, 4)
               UNION ALL
               (SELECT date_trunc('hour', started_at, 'UTC'), confidential, coalesce(consent, ''), recording_status,
                       count(*) FROM calls GROUP BY 1, 2, 3, 4
                EXCEPT SELECT hour, confidential, consent, recording_status, calls FROM dashboard_hours)""")
        assert not diff, (step, "dashboard_hours", diff[:5])
        diff = await conn.fetch(
            """(SELECT day, confidential, agent, calls, declined FROM dashboard_agent_days
                 WHERE calls <> 0 OR declined <> 0
                EXCEPT SELECT (started_at AT TIME ZONE 'UTC')::date, confidential, agent, count(*),
                              count(*) FILTER (WHERE consent = 'declined') FROM calls WHERE agent IS NOT NULL
                        GROUP BY 1, 2, 3)
               UNION ALL
               (SELECT (started_at AT TIME ZONE 'UTC')::date, confidential, agent, count(*),
                       count(*) FILTER (WHERE consent = 'declined') FROM calls WHERE agent IS NOT NULL GROUP BY 1, 2, 3
                EXCEPT SELECT day, confidential, agent, calls, declined FROM dashboard_agent_days)""")
        assert not diff, (step, "dashboard_agent_days", diff[:5])
        diff = await conn.fetch(
            """(SELECT hour, confidential, rule, alerts FROM dashboard_alert_hours WHERE alerts <> 0
                EXCEPT SELECT date_trunc('hour', c.started_at, 'UTC'), c.confidential, a.rule, count(*)
                         FROM alerts a JOIN calls c ON c.id = a.call_id GROUP BY 1, 2, 3)
               UNION ALL
               (SELECT date_trunc('hour', c.started_at, 'UTC'), c.confidential, a.rule, count(*)
                  FROM alerts a JOIN calls c ON c.id = a.call_id GROUP BY 1, 2, 3
                EXCEPT SELECT hour, confidential, rule, alerts FROM dashboard_alert_hours)""")
        assert not diff, (step, "dashboard_alert_hours", diff[:5])
        calls = await conn.fetch("SELECT id, started_at, consent, recording_status, agent, confidential FROM calls")
        parties: dict[str, set[str]] = {}
        for r in await conn.fetch("SELECT call_id, number FROM call_parties"):
            parties.setdefault(str(r["call_id"]), set()).add(r["number"])
        alerts = await conn.fetch("SELECT rule, call_id FROM alerts")
    ranges = [(T0 - timedelta(days=2), T0 + timedelta(days=3)),  # everything, ragged ends
              (T0, T0 + timedelta(hours=30, minutes=7)),  # ragged: whole hours and days inside
              (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)),  # whole UTC days
              (T0 + timedelta(minutes=5), T0 + timedelta(minutes=50))]  # inside one hour: calls only
    for p in PRINCIPALS:
        for since, until in ranges:
            for tz in ("Europe/Moscow", "Asia/Kolkata", "UTC"):
                want = expected(calls, parties, alerts, p, since, until, tz)
                have = got(await dashboard.figures(pool, p, since, until, tz))
                assert have == want, (step, p.role, p.extension, since, until, tz)


async def test_the_counts_equal_the_aggregates_over_calls_after_every_kind_of_change(database: str) -> None:
    rng = random.Random(22)
    pool = await connect_pool(database, min_size=3, max_size=3)
    writer = CallLogWriter(pool, retry_delay=0.05)
    writer.start()
    try:
        # Calls over three days through the writer's batched write (the first write carries every column).
        firsts = [call_fields(rng, T0 + timedelta(seconds=rng.uniform(-86400, 2 * 86400))) for _ in range(240)]
        for f in firsts:
            writer.update(f["id"], f)
        assert await writer.flush(10)
        ids = [f["id"] for f in firsts]
        async with pool.acquire() as conn:
            await conn.executemany(  # agent 204 on other agents' calls (a transfer, a second party)
                "INSERT INTO call_parties (call_id, seq, number, name, role, joined_at) "
                "VALUES ($1::uuid, 0, '204', 'Dan', 'agent', now())", [(i,) for i in ids[::7]])
            for i in ids[::3]:
                await insert_alert(conn, rule=rng.choice(("threat", "refund")), call_id=i, kind="said",
                                   phrase="x", speaker="caller", offset_ms=1)
            for i in ids[::5]:
                await insert_alert(conn, rule="manager", call_id=i, kind="said", phrase="y", speaker=None,
                                   offset_ms=None)
        await check(pool, "first writes and alerts")

        # Calls going on: consent and recording settle, agents answer (batched updates of many calls at once).
        for i in ids[:120]:
            writer.update(i, {"consent": rng.choice(CONSENTS[1:]), "recording_status": rng.choice(STATUSES),
                              "agent": rng.choice(AGENTS), "state": "ended"})
        assert await writer.flush(10)
        await check(pool, "batched updates")
        # Row by row (the writer's fallback), a replayed first write over an existing row, and a state only.
        await writer._write_rows([(i, {"consent": "declined", "recording_status": "none"}) for i in ids[120:150]])
        again = {**firsts[0], "consent": "granted", "recording_status": "ready"}
        writer.update(again["id"], again)
        writer.update(ids[1], {"state": "ended"})
        assert await writer.flush(10)
        await check(pool, "row by row, an upsert, a state")

        # Marked confidential and back, a start moved to another hour and day, several calls in one statement.
        async with pool.acquire() as conn:
            await conn.execute("UPDATE calls SET confidential = true WHERE id = ANY($1::uuid[])", ids[::4])
            await conn.execute("UPDATE calls SET confidential = false WHERE id = ANY($1::uuid[])", ids[::8])
            await conn.execute("UPDATE calls SET started_at = started_at + interval '26 hours 10 minutes' "
                               "WHERE id = ANY($1::uuid[])", ids[::9])
        await check(pool, "confidential and moved")

        # Alerts deleted (with a transcript), a call deleted with its alerts, all in transactions.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM alerts WHERE call_id = ANY($1::uuid[]) AND rule = 'manager'", ids[:60])
            await conn.execute("DELETE FROM calls WHERE id = ANY($1::uuid[])", ids[3:9])
            await conn.execute("UPDATE alerts SET rule = 'other' WHERE call_id = ANY($1::uuid[]) "
                               "AND rule = 'threat'", ids[90:120])
        await check(pool, "deleted")

        # Emptied: the counts with it.
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE calls CASCADE")
            assert await conn.fetchval("SELECT count(*) FROM dashboard_hours") == 0
            assert await conn.fetchval("SELECT count(*) FROM dashboard_alert_hours") == 0
        await check(pool, "truncated")
    finally:
        await writer.close()
        await pool.close()


async def test_the_migration_counts_calls_logged_before_it(database: str) -> None:
    """Calls logged before 022 are counted by the migration itself (run again here from scratch)."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("DROP TRIGGER dashboard_counts_insert ON calls")
        await conn.execute(
            "INSERT INTO calls (id, door, uniqueid, channel, consent_mode, state, started_at, consent, "
            "                   recording_status, agent, confidential) "
            "SELECT gen_random_uuid(), 'ari', 'u' || i, 'PJSIP/x', 'notice', 'ended', "
            "       $1::timestamptz + i * interval '17 minutes', "
            "       (ARRAY['implied', 'declined', NULL])[1 + i % 3], 'ready', (ARRAY['201', '204', NULL])[1 + i % 3], "
            "       i % 4 = 0 "
            "FROM generate_series(1, 500) i", T0)
        assert await conn.fetchval("SELECT count(*) FROM dashboard_hours") == 0  # not counted: no trigger
        await conn.execute("DELETE FROM schema_migrations WHERE version = 22")
        assert await migrate(conn) == ["022_console_times"]
    finally:
        await conn.close()
    pool = await connect_pool(database, min_size=3, max_size=3)
    try:
        await check(pool, "migrated over existing calls")
    finally:
        await pool.close()
