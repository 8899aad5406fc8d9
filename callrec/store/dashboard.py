"""The dashboard's figures: SQL aggregates over the calls a principal may see, for a time range.

Three GROUP BYs over the calls of the range (per day, consent and recording status; per agent; alerts
per rule), read from a covering index (migration 018), all under the visibility rule
(access.visible_calls_sql), so an agent's dashboard counts
their own calls and confidential calls count only for the roles cleared for them.  Days are the
viewer's days (``tz``), not UTC's: a call at 01:00 Moscow time belongs to that Moscow day.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Conn, Db

# Recording outcomes the dashboard calls out: something went wrong, or nothing was heard.
PROBLEM_STATUSES = ("failed", "missing", "empty", "unclosed")
MAX_AGENTS = 200  # the busiest agents listed; the rest are counted in the totals only


def _range(params: Params, since: datetime, until: datetime) -> str:
    return f"c.started_at >= {params.add(since)} AND c.started_at < {params.add(until)}"


async def figures(conn: Db, principal: Principal, since: datetime, until: datetime, tz: str) -> dict[str, Any]:
    """Every figure of the dashboard for calls started in [since, until), days in time zone ``tz``."""
    params = Params()
    where = f"{_range(params, since, until)} AND {visible_calls_sql(principal, params, 'c')}"
    n_where = len(params.values)
    zone = params.add(tz)
    days: dict[str, dict[str, Any]] = {}
    consent: dict[str, int] = {}
    recordings: dict[str, int] = {}
    agents: list[dict[str, Any]] = []
    total = 0
    # Two plain GROUP BYs (hashed, in memory) read the covering index calls_dashboard_idx (migration 018)
    # without touching the table; one GROUPING SETS query sorted on disk instead.
    async with _read(conn) as c:
        await c.execute("SET LOCAL work_mem = '64MB'")
        by_day = await c.fetch(
            f"""SELECT (c.started_at AT TIME ZONE {zone})::date AS day, c.consent, c.recording_status, count(*) AS n
                FROM calls c WHERE {where} GROUP BY 1, 2, 3""", *params.values)
        by_agent = await c.fetch(
            f"""SELECT c.agent, count(*) AS n, count(*) FILTER (WHERE c.consent = 'declined') AS declined
                FROM calls c WHERE {where} AND c.agent IS NOT NULL GROUP BY 1""", *params.values[:n_where])
        alerts = await _alerts(c, principal, since, until)
        names = await agent_names(c, [r["agent"] for r in by_agent])
    for r in by_day:
        n = int(r["n"])
        key = r["consent"] or "none"
        day = days.setdefault(r["day"].isoformat(), {"day": r["day"].isoformat(), "total": 0, "consent": {},
                                                     "recorded": 0})
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
async def _read(db: Db) -> AsyncIterator[Conn]:
    """One read-only transaction (its own connection when given the pool)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction(readonly=True):
            yield conn
    else:
        async with db.transaction(readonly=True):
            yield db


async def _alerts(conn: Db, principal: Principal, since: datetime, until: datetime) -> dict[str, Any]:
    """Speech-analytics alerts of the calls in range, per rule (the calls' visibility rule applies)."""
    params = Params()
    where = f"{_range(params, since, until)} AND {visible_calls_sql(principal, params, 'c')}"
    rows = await conn.fetch(
        f"""SELECT a.rule, count(*) AS n, count(DISTINCT a.call_id) AS calls
            FROM alerts a JOIN calls c ON c.id = a.call_id WHERE {where}
            GROUP BY a.rule ORDER BY count(*) DESC, a.rule""", *params.values)
    rules = [{"rule": r["rule"], "alerts": int(r["n"]), "calls": int(r["calls"])} for r in rows]
    return {"total": sum(r["alerts"] for r in rules), "rules": rules}


async def agent_names(conn: Db, extensions: list[str]) -> dict[str, str]:
    """The console user of each extension (an enabled user with that extension; the agent's own user
    first, then the oldest), for showing names beside extensions."""
    if not extensions:
        return {}
    rows = await conn.fetch(
        """SELECT DISTINCT ON (extension) extension, name FROM users
           WHERE extension = ANY($1::text[]) AND NOT disabled
           ORDER BY extension, role <> 'agent', id""", extensions)
    return {r["extension"]: r["name"] for r in rows}
