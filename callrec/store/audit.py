"""The audit trail: append-only (the database refuses UPDATE, DELETE and TRUNCATE on audit_log).

Every view, listen, download, export, tag, confidentiality change, deletion and log-in goes
through ``append``.  Other modules (retention, subject requests, verify) use the same helper.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import asyncpg

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Db

# Actions written by this codebase; free text is allowed too, but keep to these where they fit.
ACTIONS = (
    "login", "login_failed", "logout", "view", "listen", "download", "export", "tag_add", "tag_remove",
    "confidential", "delete_audio", "user_add", "user_disable", "token_create", "token_revoke", "search",
    "transcript_read", "transcript_search", "alerts_list", "alert_rule_add", "alert_rule_delete",
    "access_denied", "storage_migrate", "keys_rotate", "node_retire", "waveform",
)


async def append(conn: Db, *, actor: str, action: str, role: str | None = None,
                 call_id: str | None = None, details: dict[str, Any] | None = None,
                 remote: str | None = None) -> int:
    """Append one audit entry; returns its id.  Run it inside the transaction of the audited change
    so both land or neither does."""
    return await conn.fetchval(
        "INSERT INTO audit_log (actor, role, action, call_id, details, remote) "
        "VALUES ($1, $2, $3, $4::uuid, $5::jsonb, $6) RETURNING id",
        actor, role, action, call_id, json.dumps(details or {}, default=_json_default, ensure_ascii=False), remote,
    )


async def append_once_per_window(pool: asyncpg.Pool, *, window_s: int, actor: str, action: str,
                                 call_id: str, role: str | None = None, details: dict[str, Any] | None = None,
                                 remote: str | None = None) -> int | None:
    """Append one entry unless the same (actor, action, call) has one newer than ``window_s``
    seconds; returns the new id, or None when the window already holds one.

    Race-safe across connections and processes: a transaction-scoped advisory lock on the key
    serialises the check and the insert, so concurrent requests write exactly one row."""
    key = json.dumps(["audit-window", actor, action, call_id])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        recent = await conn.fetchval(
            "SELECT 1 FROM audit_log WHERE call_id = $1::uuid AND actor = $2 AND action = $3 "
            "AND at > clock_timestamp() - make_interval(secs => $4) LIMIT 1",
            call_id, actor, action, float(window_s))
        if recent:
            return None
        return await append(conn, actor=actor, role=role, action=action, call_id=call_id, details=details,
                            remote=remote)


# --- search pages, aggregated per principal and window ----------------------------------------------
# Paging through search is a bulk read: every page is counted, in audit_search_windows (the open
# window of each actor; audit_log itself is append-only), and written to the trail as one entry at
# the window's first page and one with the other pages' counts when it ends.  The sums of ``pages``
# and ``rows`` over an actor's ``search`` entries are what it pulled.

async def note_search_page(pool: asyncpg.Pool, *, window_s: float, actor: str, role: str | None, rows: int,
                           remote: str | None = None, details: dict[str, Any] | None = None,
                           action: str = "search") -> None:
    """Count one search page of ``rows`` rows.  Race-safe across connections and processes (a
    transaction-scoped advisory lock on the actor, as in ``append_once_per_window``): concurrent
    pages open one window and lose no count.  ``action``: what is paged (``search`` for calls,
    ``alerts_list`` for alerts), each with windows of its own."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_search_window(conn, actor, action)
        ended = await conn.fetchval(
            "SELECT clock_timestamp() - opened_at >= make_interval(secs => $2) FROM audit_search_windows "
            "WHERE actor = $1 AND action = $3", actor, float(window_s), action)
        if ended:
            await _close_search_window(conn, actor, action)
        if ended is None or ended:
            await conn.execute(
                "INSERT INTO audit_search_windows (actor, action, role, remote, opened_at, last_at) "
                "VALUES ($1, $4, $2, $3, clock_timestamp(), clock_timestamp())", actor, role, remote, action)
            await append(conn, actor=actor, role=role, action=action, remote=remote, details={
                **(details or {}), "pages": 1, "rows": rows, "window_s": window_s,
                "note": "the first page of a window; the others follow in one entry when it ends"})
        else:
            await conn.execute(
                "UPDATE audit_search_windows SET pages = pages + 1, rows = rows + $2, last_at = clock_timestamp() "
                "WHERE actor = $1 AND action = $3", actor, rows, action)


async def close_search_windows(pool: asyncpg.Pool, window_s: float | None) -> int:
    """Write the entries of the windows that have ended (every open one with ``window_s`` None:
    at shutdown); returns how many windows were closed."""
    windows = [(r["actor"], r["action"]) for r in await pool.fetch(
        "SELECT actor, action FROM audit_search_windows WHERE $1::float8 IS NULL "
        "OR clock_timestamp() - opened_at >= make_interval(secs => $1::float8)", window_s)]
    closed = 0
    for actor, action in windows:
        async with pool.acquire() as conn, conn.transaction():
            await _lock_search_window(conn, actor, action)
            still = await conn.fetchval(
                "SELECT 1 FROM audit_search_windows WHERE actor = $1 AND action = $3 AND ($2::float8 IS NULL "
                "OR clock_timestamp() - opened_at >= make_interval(secs => $2::float8))", actor, window_s, action)
            if still:
                await _close_search_window(conn, actor, action)
                closed += 1
    return closed


async def _lock_search_window(conn: Db, actor: str, action: str) -> None:
    key = ["audit-search", actor] if action == "search" else ["audit-search", actor, action]
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", json.dumps(key))


async def _close_search_window(conn: Db, actor: str, action: str) -> None:
    row = await conn.fetchrow("DELETE FROM audit_search_windows WHERE actor = $1 AND action = $2 RETURNING *",
                              actor, action)
    if row is not None and row["pages"]:
        await append(conn, actor=row["actor"], role=row["role"], action=action, remote=row["remote"], details={
            "pages": row["pages"], "rows": row["rows"], "window_from": row["opened_at"], "window_to": row["last_at"],
            "note": "the pages after the first of this window"})


# --- denied requests, aggregated per principal, kind, target and window ------------------------------
# A 403, or a 404 for a call that exists but is hidden from the principal, is a denial.  A prober
# must not be able to flood the trail, so denials are counted in audit_denial_windows (one open
# window per actor, kind and target) and written as one `access_denied` entry at the window's first
# denial and one with the others' count when it ends: the sum of ``count`` is the number of denials.
DENIAL_KINDS = ("forbidden", "hidden_call")
_MAX_DENIED_CALLS = 20  # distinct hidden call ids kept per window


async def note_denial(pool: asyncpg.Pool, *, window_s: float, actor: str, role: str | None, kind: str,
                      target: str, call_id: str | None = None, remote: str | None = None) -> None:
    """Count one denial.  Race-safe across connections and processes (a transaction-scoped advisory
    lock on the key, as in ``note_search_page``)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_denial_window(conn, actor, kind, target)
        ended = await conn.fetchval(
            "SELECT clock_timestamp() - opened_at >= make_interval(secs => $4) FROM audit_denial_windows "
            "WHERE actor = $1 AND kind = $2 AND target = $3", actor, kind, target, float(window_s))
        if ended:
            await _close_denial_window(conn, actor, kind, target)
        if ended is None or ended:
            await conn.execute(
                "INSERT INTO audit_denial_windows (actor, kind, target, role, remote, opened_at, last_at, call_ids) "
                "VALUES ($1, $2, $3, $4, $5, clock_timestamp(), clock_timestamp(), $6)",
                actor, kind, target, role, remote, [call_id] if call_id else [])
            # The entry names the probed call: its own audit history shows the probe (to those who may see it).
            await append(conn, actor=actor, role=role, action="access_denied", call_id=call_id, remote=remote,
                         details={"kind": kind, "target": target, "count": 1, "window_s": window_s,
                                  "note": "the first denial of a window; the others follow in one entry"})
        else:
            await conn.execute(
                "UPDATE audit_denial_windows SET count = count + 1, last_at = clock_timestamp(), "
                "call_ids = CASE WHEN $4::text IS NULL OR $4::text = ANY(call_ids) "
                f"OR cardinality(call_ids) >= {_MAX_DENIED_CALLS} "
                "THEN call_ids ELSE array_append(call_ids, $4::text) END "
                "WHERE actor = $1 AND kind = $2 AND target = $3", actor, kind, target, call_id)


async def close_denial_windows(pool: asyncpg.Pool, window_s: float | None) -> int:
    """Write the entries of the denial windows that have ended (every open one with ``window_s``
    None: at shutdown); returns how many windows were closed."""
    keys = [(r["actor"], r["kind"], r["target"]) for r in await pool.fetch(
        "SELECT actor, kind, target FROM audit_denial_windows WHERE $1::float8 IS NULL "
        "OR clock_timestamp() - opened_at >= make_interval(secs => $1::float8)", window_s)]
    closed = 0
    for actor, kind, target in keys:
        async with pool.acquire() as conn, conn.transaction():
            await _lock_denial_window(conn, actor, kind, target)
            still = await conn.fetchval(
                "SELECT 1 FROM audit_denial_windows WHERE actor = $1 AND kind = $2 AND target = $3 "
                "AND ($4::float8 IS NULL OR clock_timestamp() - opened_at >= make_interval(secs => $4::float8))",
                actor, kind, target, window_s)
            if still:
                await _close_denial_window(conn, actor, kind, target)
                closed += 1
    return closed


async def _lock_denial_window(conn: Db, actor: str, kind: str, target: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       json.dumps(["audit-denial", actor, kind, target]))


async def _close_denial_window(conn: Db, actor: str, kind: str, target: str) -> None:
    row = await conn.fetchrow("DELETE FROM audit_denial_windows WHERE actor = $1 AND kind = $2 AND target = $3 "
                              "RETURNING *", actor, kind, target)
    if row is not None and row["count"]:
        await append(conn, actor=row["actor"], role=row["role"], action="access_denied", remote=row["remote"],
                     details={"kind": kind, "target": target, "count": row["count"],
                              "call_ids": list(row["call_ids"]), "window_from": row["opened_at"],
                              "window_to": row["last_at"], "note": "the denials after the first of this window"})


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def search(conn: Db, principal: Principal, *, call_id: str | None = None, actor: str | None = None,
                 action: str | None = None, since: datetime | None = None, until: datetime | None = None,
                 before_id: int | None = None, limit: int = 50, call_id_part: str | None = None,
                 caller: str | None = None, agent: str | None = None) -> list[dict[str, Any]]:
    """Newest first; keyset on id (``before_id``: the last id of the previous page).

    An entry that names a call the principal may not see (``access.visible_calls_sql``: e.g. a
    confidential call for an auditor) is left out, as the call itself is: its details may hold a
    legal-hold reason or a tag.  Entries of calls whose row is gone (erased) stay visible.

    ``call_id_part``: a piece of a call id as people copy it (``3f2a9c1e``); ``caller``: the end of the
    caller's number (digits) or a piece of their name; ``agent``: the agent's extension.  Each entry
    carries ``call``: who the call was between, or None (no call, or its row is gone)."""
    params = Params()
    args = params.values
    add = params.add
    where: list[str] = [f"NOT EXISTS (SELECT 1 FROM calls WHERE calls.id = audit_log.call_id "
                        f"AND NOT {visible_calls_sql(principal, params)})"]

    if call_id is not None:
        where.append(f"audit_log.call_id = {add(call_id)}::uuid")
    if call_id_part is not None:
        where.append(f"strpos(audit_log.call_id::text, {add(call_id_part.lower())}) > 0")
    if caller is not None:
        digits = re.sub(r"[\s()+-]", "", caller)
        if digits.isascii() and digits.isdigit():
            where.append(f"regexp_replace(c.caller_number, '[^0-9]', '', 'g') LIKE '%' || {add(digits)}")
        else:
            where.append(f"strpos(lower(c.caller_name), {add(caller.lower())}) > 0")
    if agent is not None:
        where.append(f"c.agent = {add(agent)}")
    if actor is not None:
        where.append(f"actor = {add(actor)}")
    if action is not None:
        where.append(f"action = {add(action)}")
    if since is not None:
        where.append(f"at >= {add(since)}")
    if until is not None:
        where.append(f"at < {add(until)}")
    if before_id is not None:
        where.append(f"audit_log.id < {add(before_id)}")
    sql = ("SELECT audit_log.id, at, actor, audit_log.role, action, audit_log.call_id, details, remote, "
           "c.id AS c_id, c.caller_number, c.caller_name, c.called_number, c.agent, c.direction "
           "FROM audit_log LEFT JOIN calls c ON c.id = audit_log.call_id")
    sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY audit_log.id DESC LIMIT {add(limit)}"
    rows = await conn.fetch(sql, *args)
    out = []
    for r in rows:
        item = {k: r[k] for k in ("id", "at", "actor", "role", "action", "call_id", "details", "remote")}
        item["call_id"] = str(item["call_id"]) if item["call_id"] is not None else None
        item["details"] = json.loads(item["details"]) if isinstance(item["details"], str) else item["details"]
        item["call"] = None if r["c_id"] is None else {
            k: r[k] for k in ("caller_number", "caller_name", "called_number", "agent", "direction")}
        out.append(item)
    return out


# What a supervisor sees of a call's audit trail: who read it, and how (issue 13: "who listened").
READ_ACTIONS = ("view", "listen", "download", "transcript_read", "evidence_export", "subject_export")


async def call_readers(conn: Db, call_id: str) -> list[dict[str, Any]]:
    """Who viewed, listened to, downloaded or exported one call: per person and action, how many
    times, first and last.  The caller checks the call's visibility."""
    rows = await conn.fetch(
        "SELECT actor, max(role) AS role, action, count(*) AS times, min(at) AS first_at, max(at) AS last_at "
        "FROM audit_log WHERE call_id = $1::uuid AND action = ANY($2::text[]) "
        "GROUP BY actor, action ORDER BY max(at) DESC, actor, action LIMIT 500",
        call_id, list(READ_ACTIONS))
    return [dict(r) for r in rows]
