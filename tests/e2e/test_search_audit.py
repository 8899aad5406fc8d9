"""Paging through search is audited (issue 10, item 3): every page counted per principal and
window, written as a handful of `search` entries whose pages and rows add up."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from support.opsapi import AGENT_EXT, T0, Bench, audit_rows, call

from callrec.store import audit


async def search_entries(bench: Bench, actor: str) -> list[dict[str, object]]:
    return [json.loads(r["details"]) for r in await audit_rows(bench, actor=actor, action="search")]


async def test_thirty_pages_write_few_entries_that_add_up(bench: Bench, http: aiohttp.ClientSession) -> None:
    await bench.pool.execute(
        """INSERT INTO calls (id, door, uniqueid, channel, caller_number, called_number, direction, consent_mode,
               state, consent, started_at, recording_status, agent, notice_completed)
           SELECT gen_random_uuid(), 'ari', 'bulk.' || i, 'PJSIP/x-1', '+4930' || i, '100', 'inbound', 'notice',
                  'ended', 'implied', $1::timestamptz + i * interval '1 minute', 'none', $2, true
           FROM generate_series(1, 100) AS i""", T0, AGENT_EXT)
    agent = "agent1(token:agent-token)"
    pulled, cursor = 0, None
    for _ in range(30):
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls", "agent",
                                 params={"limit": "3", **({"cursor": cursor} if cursor else {})})
        assert st == 200
        page = json.loads(body)
        pulled += len(page["items"])
        cursor = page["next_cursor"]
    assert pulled == 90
    # So far: the window's first page.
    entries = await search_entries(bench, agent)
    assert [(e["pages"], e["rows"]) for e in entries] == [(1, 3)]
    # Pages at once from another principal open one window and lose no count (race-safe).
    results = await asyncio.gather(*(call(http, bench, "GET", "/api/v1/calls", "supervisor", params={"limit": "5"})
                                     for _ in range(12)))
    assert [r[0] for r in results] == [200] * 12
    assert len(await search_entries(bench, "supervisor1(token:supervisor-token)")) == 1
    # The sweep closes an ended window (every window has ended after 0 s) with the other pages' counts.
    assert await audit.close_search_windows(bench.pool, 0.0) == 2
    entries = await search_entries(bench, agent)
    assert len(entries) == 2
    assert sum(e["pages"] for e in entries) == 30 and sum(e["rows"] for e in entries) == pulled
    sup = await search_entries(bench, "supervisor1(token:supervisor-token)")
    assert sum(e["pages"] for e in sup) == 12 and sum(e["rows"] for e in sup) == 60
    # A new page opens a new window; stopping the API writes the entry of every open window.
    for _ in range(4):
        assert (await call(http, bench, "GET", "/api/v1/calls", "agent", params={"limit": "7"}))[0] == 200
    await bench.server.stop()
    entries = await search_entries(bench, agent)
    assert [(e["pages"], e["rows"]) for e in entries[2:]] == [(1, 7), (3, 21)]
    assert await bench.pool.fetchval("SELECT count(*) FROM audit_search_windows") == 0
