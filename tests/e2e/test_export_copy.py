"""The CSV/JSON export is written by PostgreSQL (COPY): its cells are the ones csv_cell makes for the same
calls (formula defusing included), its JSON objects the list's items; the visibility rule holds."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from support.opsapi import T0, Bench, call, insert_call, visible

from callrec.store.callquery import CSV_READABLE_COLUMNS, SUMMARY_COLUMNS, csv_cell


def cell(value: Any) -> str:
    """A list item's value as the old Python export wrote it in a CSV cell."""
    out = csv_cell(value)
    return "" if out == "" else str(out)


def same_times(item: dict[str, Any]) -> dict[str, Any]:
    """Times as datetimes (PostgreSQL's JSON drops trailing zeros of the microseconds)."""
    return {k: datetime.fromisoformat(v) if k in ("started_at", "ended_at", "audio_deleted_at") and v else v
            for k, v in item.items()}


async def test_export_matches_the_list_cell_for_cell(bench: Bench, http: aiohttp.ClientSession) -> None:
    async with bench.pool.acquire() as conn:
        await insert_call(conn, None, started=T0 + timedelta(hours=3, microseconds=123400), agent="9",
                          recorded=False, caller_name='=HYPERLINK("http://x\\y")\n"a",b', caller="+49 30 1234",
                          called="-1+2")
        await insert_call(conn, None, started=T0 + timedelta(hours=4), agent="9", recorded=False,
                          caller_name="", caller="@sip", called="+7 (916) 739-28-55")
        await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) SELECT id, t, 'x' FROM calls, "
                           "unnest(ARRAY['=cmd', 'vip']) AS t WHERE agent = '9'")
    for role in ("admin", "supervisor", "agent"):
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls", role, params={"limit": "500"})
        items = {i["id"]: i for i in json.loads(body)["items"]}
        assert set(items) == visible(role, bench) | ({i for i in items if items[i]["agent"] == "9"}
                                                      if role != "agent" else set())
        st, body, resp = await call(http, bench, "GET", "/api/v1/calls/export?format=csv", role)
        assert st == 200 and resp.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert [r["id"] for r in rows] == list(items)  # the list's order
        for r in rows:
            # The summary's columns, then the readable ones (local times, rounded durations: console.md).
            assert list(r) == list(SUMMARY_COLUMNS) + list(CSV_READABLE_COLUMNS)
            assert r["time_zone"] == "UTC" and r["duration_rounded"] == (
                str(round(float(r["duration"]))) if r["duration"] else "")
            expected = {k: cell(v) for k, v in items[r["id"]].items() if k in SUMMARY_COLUMNS}
            times = ("started_at", "ended_at", "audio_deleted_at")
            r = {k: v for k, v in r.items() if k in SUMMARY_COLUMNS}
            assert {k: v for k, v in r.items() if k not in times} == {
                k: v for k, v in expected.items() if k not in times}, role
            assert {k: datetime.fromisoformat(r[k]) if r[k] else "" for k in times} == {
                k: datetime.fromisoformat(expected[k]) if expected[k] else "" for k in times}
        st, body, resp = await call(http, bench, "GET", "/api/v1/calls/export?format=json", role)
        assert st == 200 and resp.headers["Content-Type"].startswith("application/json")
        exported = json.loads(body)
        assert [same_times(e) for e in exported] == [same_times(i) for i in items.values()], role
    # The defused cells, spelled out.
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv&agent=9", "admin")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["caller_name"], r["caller_number"], r["called_number"], r["tags"]) for r in rows] == [
        ("", "'@sip", "+7 (916) 739-28-55", "'=cmd;vip"),
        ('\'=HYPERLINK("http://x\\y")\n"a",b', "+49 30 1234", "'-1+2", "'=cmd;vip")]
    # Nothing found: a header alone, an empty array.
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv&agent=none", "admin")
    assert st == 200 and body.decode().strip() == ",".join(SUMMARY_COLUMNS + CSV_READABLE_COLUMNS)
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=json&agent=none", "admin")
    assert st == 200 and json.loads(body) == []
    assert uuid.UUID(rows[0]["id"])
