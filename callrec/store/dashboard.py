"""The dashboard's figures: SQL aggregates over the calls a principal may see, for a time range.

Three GROUP BYs over the calls of the range (per day, consent and recording status; per agent; alerts
per rule), run at once and read from a covering index (migration 018), all under the visibility rule
(access.visible_calls_sql), so an agent's dashboard counts their own calls and confidential calls count
only for the roles cleared for them.  Days are the
viewer's days (``tz``), not UTC's: a call at 01:00 Moscow time belongs to that Moscow day.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Conn, Db

# Recording outcomes the dashboard calls out: something went wrong, or nothing was heard.
PROBLEM_STATUSES = ("failed", "missing", "empty", "unclosed")
MAX_AGENTS = 200  # the busiest agents listed; the rest are counted in the totals only


def _range(params: Params, principal: Principal, since: datetime, until: datetime) -> str:
    """Calls started in [since, until) that ``principal`` may see."""
    lo, hi = params.add(since), params.add(until)
    return f"c.started_at >= {lo} AND c.started_at < {hi} AND {visible_calls_sql(principal, params, 'c', (lo, hi))}"


def day_bounds(since: datetime, until: datetime, tz: str) -> list[datetime]:
    """The local midnights (in ``tz``) from the day of ``since`` to the first one at or after ``until``:
    PostgreSQL's width_bucket then files each call under its local day without a time-zone conversion
    per row, and a day of a clock change is 23 or 25 hours long, as it is."""
    zone = ZoneInfo(tz)
    day = since.astimezone(zone).date()
    bounds = []
    while True:
        midnight = datetime.combine(day, time(0), zone)
        bounds.append(midnight)
        if midnight >= until:
            return bounds
        day += timedelta(days=1)


async def figures(pool: asyncpg.Pool, principal: Principal, since: datetime, until: datetime,
                  tz: str) -> dict[str, Any]:
    """Every figure of the dashboard for calls started in [since, until), days in time zone ``tz``."""
    params = Params()
    where = _range(params, principal, since, until)
    bounds = day_bounds(since, until, tz)
    days: dict[str, dict[str, Any]] = {}
    consent: dict[str, int] = {}
    recordings: dict[str, int] = {}
    agents: list[dict[str, Any]] = []
    total = 0

    # Each GROUP BY is hashed in memory and reads the covering index calls_dashboard_idx (migration 018)
    # without touching the table; the three run at once, each on a connection of its own.
    async def per_day() -> list[asyncpg.Record]:
        async with _read(pool) as c:
            return await c.fetch(
                f"""SELECT width_bucket(c.started_at, ${len(params.values) + 1}::timestamptz[]) AS bucket,
                           c.consent, c.recording_status, count(*) AS n
                    FROM calls c WHERE {where} GROUP BY 1, 2, 3""", *params.values, bounds)

    async def per_agent() -> list[asyncpg.Record]:
        async with _read(pool) as c:
            rows = await c.fetch(
                f"""SELECT c.agent, count(*) AS n, count(*) FILTER (WHERE c.consent = 'declined') AS declined
                    FROM calls c WHERE {where} AND c.agent IS NOT NULL GROUP BY 1""", *params.values)
            return list(rows)

    async def alerts_and_names() -> tuple[dict[str, Any], list[asyncpg.Record]]:
        async with _read(pool) as c:
            return await _alerts(c, principal, since, until), list(await c.fetch(
                "SELECT extension, name FROM users WHERE extension IS NOT NULL AND NOT disabled "
                "ORDER BY extension, role <> 'agent', id"))

    by_day, by_agent, (alerts, users) = await asyncio.gather(per_day(), per_agent(), alerts_and_names())
    names: dict[str, str] = {}
    for u in users:
        names.setdefault(u["extension"], u["name"])
    zone = ZoneInfo(tz)
    for r in by_day:
        n = int(r["n"])
        key = r["consent"] or "none"
        label = bounds[int(r["bucket"]) - 1].astimezone(zone).date().isoformat()
        day = days.setdefault(label, {"day": label, "total": 0, "consent": {}, "recorded": 0})
        day["total"] += n
        day["consent"][key] = day["consent"].get(key, 0) + n
        if r["recording_status"] == "ready":
            day["recorded"] += n
        consent[key] = consent.get(key, 0) + n
        recordings[r["recording_status"]] = recordings.get(r["recording_status"], 0) + n
        total += n
    for r in by_agent:
        n = int(r["n"])
        agents.append({"agent": r["agent"], "calls": n, "declined": int(r["declined"]),
                       "decline_rate": round(int(r["declined"]) / n, 4)})
    agents.sort(key=lambda a: (-a["calls"], a["agent"]))
    agents = agents[:MAX_AGENTS]
    for a in agents:
        a["name"] = names.get(a["agent"])
    recorded = recordings.get("ready", 0)
    return {
        "from": since.isoformat(), "to": until.isoformat(), "tz": tz, "total": total, "recorded": recorded,
        "share_recorded": round(recorded / total, 4) if total else None,
        "consent": consent, "recordings": recordings,
        "problems": {s: recordings.get(s, 0) for s in PROBLEM_STATUSES},
        "days": [days[k] for k in sorted(days)], "agents": agents,
        "alerts": alerts,
    }


@contextlib.asynccontextmanager
async def _read(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A connection of the pool in a read-only transaction, with room to hash the groups in memory."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL work_mem = '64MB'")
        yield conn


async def _alerts(conn: Db, principal: Principal, since: datetime, until: datetime) -> dict[str, Any]:
    """Speech-analytics alerts of the calls in range, per rule (the calls' visibility rule applies).
    An alert is raised when its call's transcript is saved, after the call started: only alerts raised
    since the range began are looked at, each call then found by its key."""
    params = Params()
    where = _range(params, principal, since, until)
    where += f" AND a.created_at >= {params.add(since)}"
    rows = await conn.fetch(
        f"""SELECT a.rule, count(*) AS n, count(DISTINCT a.call_id) AS calls
            FROM alerts a JOIN calls c ON c.id = a.call_id WHERE {where}
            GROUP BY a.rule ORDER BY count(*) DESC, a.rule""", *params.values)
    rules = [{"rule": r["rule"], "alerts": int(r["n"]), "calls": int(r["calls"])} for r in rows]
    return {"total": sum(r["alerts"] for r in rules), "rules": rules}
