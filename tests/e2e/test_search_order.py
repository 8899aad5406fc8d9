"""`q=` and `tag` read in the list's order (migration 023, callquery.plan): over a seeded log on a real
PostgreSQL, every page through the API holds exactly the calls, in exactly the order, that the plain
definition gives (each name matched by itself with ILIKE, the tag by EXISTS, ordered by start then id), for
every role and both orders, whichever way the search went: the walk of the newest calls, read on or not, its
fallback to the trigram index, the tag's index, the planner's sets; and the triggers keep call_search and
call_tags.started_at right through the call-log writer, renames, deletions, and the migration's backfill."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from support.opsapi import AGENT_EXT, T0, Bench, call

from callrec.store import CallLogWriter, callquery
from callrec.store.migrate import _run_outside_transaction, available_migrations, split_statements

NAMES = ("Olga Petrova", "Ivan Petrov", "Anna Smirnova", "Oleg Volkov", "Maria 100% Ivanova", "Pyotr_Ivanov",
         "OLGA VOLKOVA", "Ольга ПЕТРОВА", "ÉMILE Ærø", "İlkay Straße", None)
TAGS = ("vip", "complaint", "rare")


async def seed(conn: asyncpg.Connection, n: int = 240) -> None:
    """``n`` calls over a few days, some starting at the same instant (the id decides their order), names from
    a small pool in callers, agents and parties, tags (one of them on 3 calls), 1 in 10 confidential."""
    rng = random.Random(23)
    for i in range(n):
        started = T0 - timedelta(minutes=rng.randrange(0, 4000) // 3 * 3)
        agent = rng.choice([AGENT_EXT, "202", "203", "Petrov-desk"])
        call_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO calls (id, door, uniqueid, channel, caller_number, caller_name, called_number, direction, "
            "consent_mode, state, consent, started_at, ended_at, recording_status, agent, confidential) "
            "VALUES ($1, 'ari', $2, 'PJSIP/x', '+4930' || $3, $4, '100', 'inbound', 'notice', 'ended', $5, $6, "
            "$6::timestamptz + interval '1 minute', 'ready', $7, $8)",
            call_id, f"u{i}", str(i), rng.choice(NAMES), rng.choice(["implied", "declined"]), started, agent,
            rng.random() < 0.1)
        for seq in range(rng.randrange(0, 3)):
            await conn.execute("INSERT INTO call_parties (call_id, seq, number, name, role, joined_at) "
                               "VALUES ($1, $2, $3, $4, 'agent', $5)", call_id, seq,
                               rng.choice([AGENT_EXT, "204"]), rng.choice(NAMES), started)
        for tag in TAGS[:2]:
            if rng.random() < 0.3:
                await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, $2, 'test')",
                                   call_id, tag)
        if i % 80 == 0:
            await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, 'rare', 'test')",
                               call_id)
    await conn.execute("ANALYZE calls; ANALYZE call_search; ANALYZE call_tags")


def definition(role: str, params: dict[str, str]) -> tuple[str, list[Any]]:
    """The calls a search must answer, by the plain definition (before migration 023), every one in order."""
    args: list[Any] = []

    def add(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    conds = []
    if role == "supervisor":
        conds.append("NOT c.confidential")
    elif role == "agent":
        e = add(AGENT_EXT)
        conds.append(f"NOT c.confidential AND (c.agent = {e} OR EXISTS (SELECT 1 FROM call_parties v "
                     f"WHERE v.call_id = c.id AND v.number = {e}))")
    if "q" in params:
        p = add(callquery.q_pattern(params["q"]))
        conds.append(f"(c.caller_name ILIKE {p} OR c.agent ILIKE {p} OR EXISTS (SELECT 1 FROM call_parties x "
                     f"WHERE x.call_id = c.id AND x.name ILIKE {p}))")
    for tag in params.get("tag", "").split(",") if "tag" in params else []:
        conds.append(f"EXISTS (SELECT 1 FROM call_tags t WHERE t.call_id = c.id AND t.tag = {add(tag)})")
    if "agent" in params:
        conds.append(f"c.agent = {add(params['agent'])}")
    if "consent" in params:
        conds.append(f"c.consent = {add(params['consent'])}")
    if "from" in params:
        conds.append(f"c.started_at >= {add(T0 - timedelta(days=1))}")
    d = "ASC" if params.get("order") == "asc" else "DESC"
    return (f"SELECT c.id::text FROM calls c WHERE {' AND '.join(conds) or 'TRUE'} "
            f"ORDER BY c.started_at {d}, c.id {d}"), args


async def pages(http: aiohttp.ClientSession, bench: Bench, role: str, params: dict[str, str]) -> list[str]:
    """Every page of the search through the API, 7 calls a page, in order."""
    query: list[tuple[str, str]] = [(k, v) for k, v in params.items() if k != "tag"]
    query += [("tag", t) for t in params["tag"].split(",")] if "tag" in params else []
    if "from" in params:
        query = [(k, (T0 - timedelta(days=1)).isoformat() if k == "from" else v) for k, v in query]
    found: list[str] = []
    cursor = None
    while True:
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls", role,
                                 params=[*query, ("limit", "7"), *([("cursor", cursor)] if cursor else [])])
        assert st == 200, body
        answer = json.loads(body)
        found += [item["id"] for item in answer["items"]]
        assert len(found) <= 1000, params  # the seed has 240 calls: a cursor that does not move on
        cursor = answer["next_cursor"]
        if cursor is None:
            return found


SEARCHES = (
    {"q": "petrov"}, {"q": "Olga"}, {"q": "OLGA V"}, {"q": "100%"}, {"q": "_"}, {"q": "Pyotr_"}, {"q": "zzz"},
    {"q": "петров"}, {"q": "émile æ"}, {"q": "STRASSE"}, {"q": "straße"}, {"q": "İl"}, {"q": "ilkay"},
    {"q": "ova", "order": "asc"}, {"q": "petrov", "consent": "declined"}, {"q": "Olga", "from": "x"},
    {"q": "Petrov-desk"}, {"q": "v", "tag": "vip"}, {"q": "Petrov", "agent": "202"},
    {"tag": "vip"}, {"tag": "vip", "order": "asc"}, {"tag": "rare"}, {"tag": "vip,complaint"},
    {"tag": "complaint", "consent": "declined", "order": "asc"}, {"tag": "vip", "agent": "203"},
    {"tag": "complaint", "from": "x"},
)


@pytest.mark.parametrize(("walk_rows", "walk_on", "walk_max"), [(4, 100, 10**6), (3, 1, 60), (100_000, 8, 10**6)])
async def test_every_page_is_the_definition_in_order(bench: Bench, http: aiohttp.ClientSession,
                                                      monkeypatch: pytest.MonkeyPatch, walk_rows: int, walk_on: int,
                                                      walk_max: int) -> None:
    # A short walk then the trigram index; a short walk read on as the matches ask, up to 60 calls, then the
    # trigram index; a walk of everything.
    monkeypatch.setattr(callquery, "Q_WALK_ROWS", walk_rows)
    monkeypatch.setattr(callquery, "Q_WALK_ON", walk_on)
    monkeypatch.setattr(callquery, "Q_WALK_MAX", walk_max)
    async with bench.pool.acquire() as conn:
        await seed(conn)
    drivers = set()
    for role in ("admin", "supervisor", "agent"):
        principal = await _principal(bench, role)
        for params in SEARCHES:
            sql, args = definition(role, params)
            want = [r[0] for r in await bench.pool.fetch(sql, *args)]
            got = await pages(http, bench, role, params)
            assert got == want, (role, params)
            f = callquery.parse_filter(lambda k, p=params: p[k].split(",") if k in p and k != "from" else [])
            drivers.add(callquery.plan(f, principal))
            if role == "supervisor" and params == {"q": "Olga"}:
                assert len(want) > 20  # the seed has common and rare texts, as the walk and fallback need
    assert drivers == {"q_walk", "tag", None}


async def _principal(bench: Bench, role: str) -> Any:
    from callrec.access import Principal
    return Principal(f"{role}1", role, AGENT_EXT if role == "agent" else None)


async def test_counts_are_the_definition(bench: Bench, http: aiohttp.ClientSession) -> None:
    async with bench.pool.acquire() as conn:
        await seed(conn)
    for role in ("supervisor", "agent"):
        for params in ({"q": "petrov"}, {"q": "zzz"}, {"tag": "vip"}, {"tag": "rare"}, {"q": "Olga", "tag": "vip"}):
            sql, args = definition(role, params)
            query = [(k, v) for k, v in params.items()]
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", role, params=query)
            assert st == 200 and json.loads(body) == {"count": len(await bench.pool.fetch(sql, *args)),
                                                      "count_exact": True}, (role, params)


async def names_of(conn: asyncpg.Connection, call_id: str) -> tuple[Any, ...]:
    row = await conn.fetchrow("SELECT started_at, names FROM call_search WHERE call_id = $1", uuid.UUID(call_id))
    return tuple(row) if row else ()


async def test_triggers_keep_names_and_start_current(bench: Bench, http: aiohttp.ClientSession) -> None:
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(bench.pool, retry_delay=0.05)
    writer.start()
    try:
        writer.update(call_id, {"id": call_id, "door": "ari", "uniqueid": call_id[:8], "channel": "PJSIP/t-1",
                                "caller_number": "+4930999", "caller_name": "Zoe Quill", "called_number": "",
                                "consent_mode": "notice", "state": "new", "started_at": T0, "agent": "207",
                                "parties": [{"seq": 0, "number": "+4930999", "name": "Zoe Quill", "channel": "x",
                                             "role": "caller", "joined_at": T0, "left_at": None}]})
        assert await writer.flush()
        writer.update(call_id, {"state": "ended", "parties": [
            {"seq": 0, "number": "+4930999", "name": "Zoe Quill", "channel": "x", "role": "caller",
             "joined_at": T0, "left_at": None},
            {"seq": 1, "number": "207", "name": "Xavier Desk", "channel": "y", "role": "agent",
             "joined_at": T0, "left_at": None}]})
        assert await writer.flush()
    finally:
        await writer.close()
    async with bench.pool.acquire() as conn:
        assert await names_of(conn, call_id) == (T0, "zoe quill\n207\nzoe quill\nxavier desk")
        assert await pages(http, bench, "admin", {"q": "xavier"}) == [call_id]
        await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, 'vip', 't')",
                           uuid.UUID(call_id))
        # A party renamed, a caller's name removed (anonymised), the start moved: the search follows each.
        await conn.execute("UPDATE call_parties SET name = 'Yuri Desk' WHERE call_id = $1 AND seq = 1",
                           uuid.UUID(call_id))
        await conn.execute("UPDATE calls SET caller_name = NULL, started_at = $2 WHERE id = $1", uuid.UUID(call_id),
                           T0 + timedelta(days=400))
        assert await names_of(conn, call_id) == (T0 + timedelta(days=400), "207\nzoe quill\nyuri desk")
        assert await conn.fetchval("SELECT started_at FROM call_tags WHERE call_id = $1",
                                   uuid.UUID(call_id)) == T0 + timedelta(days=400)
        assert await pages(http, bench, "admin", {"q": "xavier"}) == []
        assert (await pages(http, bench, "admin", {"tag": "vip"}))[0] == call_id  # the newest now
        await conn.execute("DELETE FROM call_parties WHERE call_id = $1 AND seq = 0", uuid.UUID(call_id))
        assert await names_of(conn, call_id) == (T0 + timedelta(days=400), "207\nyuri desk")
        await conn.execute("DELETE FROM call_tags WHERE call_id = $1", uuid.UUID(call_id))
        await conn.execute("DELETE FROM call_parties WHERE call_id = $1", uuid.UUID(call_id))
        await conn.execute("DELETE FROM calls WHERE id = $1", uuid.UUID(call_id))
        assert await names_of(conn, call_id) == ()


async def test_the_backfill_writes_what_the_triggers_write(bench: Bench) -> None:
    async with bench.pool.acquire() as conn:
        await seed(conn, 60)
        kept = await conn.fetch("SELECT call_id, started_at, names FROM call_search ORDER BY call_id")
        tags = await conn.fetch("SELECT call_id, tag, started_at FROM call_tags ORDER BY call_id, tag")
        assert len(kept) == await conn.fetchval("SELECT count(*) FROM calls") and all(t[2] for t in tags)
        # As a database filled before the migration: nothing in call_search, no start beside the tags.
        await conn.execute("TRUNCATE call_search")
        await conn.execute("ALTER TABLE call_tags DISABLE TRIGGER call_tags_started_at")
        await conn.execute("UPDATE call_tags SET started_at = NULL")
        await conn.execute("ALTER TABLE call_tags ENABLE TRIGGER call_tags_started_at")
        (m,) = [m for m in available_migrations() if m.version == 23]
        for statement in split_statements(m.sql):
            await _run_outside_transaction(conn, statement)
        assert await conn.fetch("SELECT call_id, started_at, names FROM call_search ORDER BY call_id") == kept
        assert await conn.fetch("SELECT call_id, tag, started_at FROM call_tags ORDER BY call_id, tag") == tags
