"""The dashboard's figures: SQL aggregates over the calls a principal may see, for a time range.

Three GROUP BYs over the calls of the range (per day, consent and recording status; per agent; alerts
per rule), run at once, all under the visibility rule (access.visible_calls_sql), so an agent's dashboard
counts their own calls and confidential calls count only for the roles cleared for them.  For the other
roles the range's whole UTC hours (days, for the agents' figures) are read from the counts the database
keeps beside ``calls`` (migration 022: dashboard_hours, dashboard_agent_days, dashboard_alert_hours, kept by
triggers in the statement that changes a call or an alert, so always equal to the aggregates), and only
the range's ragged ends from ``calls`` (covering index calls_dashboard_idx, migration 018): a year costs
about as much as a day.  Days are the viewer's days (``tz``), not UTC's: a call at 01:00 Moscow time
belongs to that Moscow day.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Conn, Db

# Recording outcomes the dashboard calls out: something went wrong, or nothing was heard.
PROBLEM_STATUSES = ("failed", "missing", "empty", "unclosed")
MAX_AGENTS = 200  # the busiest agents listed; the rest are counted in the totals only


HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_COLS = "c.id, c.started_at, c.consent, c.recording_status, c.agent"


def _calls_in(params: Params, principal: Principal, spans: list[tuple[datetime, datetime]]) -> str:
    """The calls started in any of ``spans`` that ``principal`` may see, as rows of ``_COLS``.

    An agent's are read as the rule (access.visible_calls_sql) defines them, in two disjoint parts: their own
    calls from calls_agent_dashboard_idx alone, and the others they were a party to; not as a set of ids
    matched against every call of the range (a year of the agent's calls against a million entries)."""
    parts = []
    for since, until in spans:
        lo, hi = params.add(since), params.add(until)
        span = f"c.started_at >= {lo} AND c.started_at < {hi}"
        if principal.role == "agent" and principal.extension:
            ext = params.add(principal.extension)
            parts.append(f"SELECT {_COLS} FROM calls c WHERE c.agent = {ext} AND {span} AND NOT c.confidential")
            parts.append(f"SELECT {_COLS} FROM calls c WHERE {span} AND NOT c.confidential "
                         f"AND c.agent IS DISTINCT FROM {ext} "
                         f"AND c.id IN (SELECT vp.call_id FROM call_parties vp WHERE vp.number = {ext})")
        else:
            parts.append(f"SELECT {_COLS} FROM calls c WHERE {span} "
                         f"AND {visible_calls_sql(principal, params, 'c', (lo, hi))}")
    return " UNION ALL ".join(parts) if parts else f"SELECT {_COLS} FROM calls c WHERE FALSE"


def _counted(principal: Principal) -> str | None:
    """Which rows of the count tables (migration 022) ``principal`` may see, or None: read ``calls``."""
    if principal.role in ("admin", "security"):
        return "TRUE"
    if principal.role in ("supervisor", "auditor"):
        return "NOT s.confidential"
    return None  # an agent: their calls are not a key of the counts


def _whole(since: datetime, until: datetime, unit: timedelta) -> tuple[datetime, datetime] | None:
    """The whole UTC hours (``unit`` = HOUR) or days (DAY) inside [since, until), or None."""
    def floor(t: datetime) -> datetime:
        t = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return t.replace(hour=0) if unit == DAY else t

    lo, hi = floor(since), floor(until)
    if lo < since:
        lo += unit
    return (lo, hi) if lo < hi else None


def _plan(principal: Principal, since: datetime, until: datetime, unit: timedelta,
          usable: bool = True) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The part of the range read from the counts (whole units) and the parts read from ``calls``."""
    whole = _whole(since, until, unit) if usable and _counted(principal) is not None else None
    if whole is None:
        return None, [(since, until)]
    return whole, [span for span in ((since, whole[0]), (whole[1], until)) if span[0] < span[1]]


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
    bounds = day_bounds(since, until, tz)
    days: dict[str, dict[str, Any]] = {}
    consent: dict[str, int] = {}
    recordings: dict[str, int] = {}
    agents: list[dict[str, Any]] = []
    total = 0
    visible = _counted(principal)

    # The whole hours of the range from dashboard_hours, when each local day is made of whole UTC hours (a
    # zone a half or quarter hour off UTC reads calls); the ragged ends from the covering index
    # calls_dashboard_idx (migration 018) without touching the table.  The three run at once, each on a
    # connection of its own.
    async def per_day() -> list[asyncpg.Record]:
        whole, spans = _plan(principal, since, until, HOUR,
                             all(b.astimezone(UTC).minute == b.astimezone(UTC).second == 0 for b in bounds))
        params = Params()
        b = params.add(bounds)
        sql = (f"SELECT width_bucket(c.started_at, {b}::timestamptz[]) AS bucket, c.consent, c.recording_status, "
               f"count(*) AS n FROM ({_calls_in(params, principal, spans)}) c GROUP BY 1, 2, 3")
        if whole is not None:
            sql += (f" UNION ALL SELECT width_bucket(s.hour, {b}::timestamptz[]), NULLIF(s.consent, ''), "
                    f"s.recording_status, sum(s.calls) FROM dashboard_hours s WHERE s.hour >= {params.add(whole[0])} "
                    f"AND s.hour < {params.add(whole[1])} AND {visible} GROUP BY 1, 2, 3 HAVING sum(s.calls) <> 0")
        async with _read(pool) as c:
            return list(await c.fetch(sql, *params.values))

    async def per_agent() -> list[asyncpg.Record]:
        whole, spans = _plan(principal, since, until, DAY)
        params = Params()
        sql = (f"SELECT c.agent, count(*) AS n, count(*) FILTER (WHERE c.consent = 'declined') AS declined "
               f"FROM ({_calls_in(params, principal, spans)}) c WHERE c.agent IS NOT NULL GROUP BY 1")
        if whole is not None:
            sql += (f" UNION ALL SELECT s.agent, sum(s.calls), sum(s.declined) FROM dashboard_agent_days s "
                    f"WHERE s.day >= {params.add(whole[0].date())} AND s.day < {params.add(whole[1].date())} "
                    f"AND {visible} GROUP BY 1")
        async with _read(pool) as c:
            return list(await c.fetch(sql, *params.values))

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
    per: dict[str, list[int]] = {}
    for r in by_agent:
        counts = per.setdefault(r["agent"], [0, 0])
        counts[0] += int(r["n"])
        counts[1] += int(r["declined"])
    for agent, (n, declined) in per.items():
        if n:  # an agent whose counted calls all moved away (counts at 0) is not listed
            agents.append({"agent": agent, "calls": n, "declined": declined, "decline_rate": round(declined / n, 4)})
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
    """Speech-analytics alerts of the calls in range, per rule (the calls' visibility rule applies): the whole
    hours from dashboard_alert_hours, the ragged ends (and an agent's calls) from the calls and their alerts.
    A rule alerts a call once (UNIQUE (rule, call_id)): its alerts are its calls."""
    whole, spans = _plan(principal, since, until, HOUR)
    params = Params()
    sql = (f"SELECT a.rule, count(*) AS n FROM ({_calls_in(params, principal, spans)}) c "
           f"JOIN alerts a ON a.call_id = c.id GROUP BY 1")
    if whole is not None:
        sql += (f" UNION ALL SELECT s.rule, sum(s.alerts) FROM dashboard_alert_hours s "
                f"WHERE s.hour >= {params.add(whole[0])} AND s.hour < {params.add(whole[1])} "
                f"AND {_counted(principal)} GROUP BY 1")
    per: dict[str, int] = {}
    for r in await conn.fetch(sql, *params.values):
        per[r["rule"]] = per.get(r["rule"], 0) + int(r["n"])
    rules = [{"rule": rule, "alerts": n, "calls": n}
             for rule, n in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    return {"total": sum(r["alerts"] for r in rules), "rules": rules}
