"""Keyword alerts in PostgreSQL (migration 009): the words of a transcript with their lexemes, rules kept
through the API, alert rows, and the alert list under the visibility rule.

Lexemes come from PostgreSQL's ``russian`` text-search configuration, the one the search index uses, so an
alert matches the word forms a search would (договора / договор, refunds / refund).  The decision itself
is pure Python (callrec/analytics/alerts.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Conn, Db

__all__ = ["ALERT_COLUMNS", "RULE_COLUMNS", "CursorError", "add_rule", "decode_cursor", "delete_rule",
           "encode_cursor", "insert_alert", "lexemes", "list_alerts", "list_rules", "spoken_words"]

ALERT_COLUMNS = ("id", "rule", "call_id", "kind", "phrase", "speaker", "offset_ms", "created_at")
RULE_COLUMNS = ("name", "phrases", "speaker", "kind", "within_s", "created_by", "created_at")


class CursorError(ValueError):
    """A cursor this API did not give out."""


async def spoken_words(conn: Db, call_id: str) -> list[tuple[str, int, str, list[str]]]:
    """Every word of a call's transcript as (speaker, start_ms, text, lexemes), in dialogue order."""
    rows = await conn.fetch(
        """SELECT s.speaker, (w.e->>1)::int AS start_ms, w.e->>0 AS text,
                  array(SELECT lexeme FROM unnest(to_tsvector('russian', w.e->>0))) AS lexemes
           FROM transcript_segments s CROSS JOIN LATERAL jsonb_array_elements(s.words) WITH ORDINALITY AS w(e, n)
           WHERE s.call_id = $1::uuid ORDER BY s.seq, w.n""", call_id)
    return [(r["speaker"], r["start_ms"], r["text"], list(r["lexemes"])) for r in rows]


async def lexemes(conn: Db, texts: Sequence[str]) -> list[list[str]]:
    """Each text's lexemes under the ``russian`` configuration (a stop word has none), in order."""
    if not texts:
        return []
    rows = await conn.fetch(
        """SELECT t.n, array(SELECT lexeme FROM unnest(to_tsvector('russian', t.text))) AS lexemes
           FROM unnest($1::text[]) WITH ORDINALITY AS t(text, n) ORDER BY t.n""", list(texts))
    return [list(r["lexemes"]) for r in rows]


# --- rules kept through the API -------------------------------------------------------------------------

async def list_rules(conn: Db) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {', '.join(RULE_COLUMNS)} FROM alert_rules ORDER BY name")
    return [{**dict(r), "phrases": list(r["phrases"])} for r in rows]


async def add_rule(conn: Db, *, name: str, phrases: Sequence[str], speaker: str, kind: str, within_s: int | None,
                   created_by: str) -> dict[str, Any] | None:
    """The new rule's row, or None when a rule of that name exists."""
    row = await conn.fetchrow(
        f"""INSERT INTO alert_rules (name, phrases, speaker, kind, within_s, created_by)
            VALUES ($1, $2::text[], $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING
            RETURNING {', '.join(RULE_COLUMNS)}""", name, list(phrases), speaker, kind, within_s, created_by)
    return None if row is None else {**dict(row), "phrases": list(row["phrases"])}


async def delete_rule(conn: Db, name: str) -> dict[str, Any] | None:
    """The deleted rule's row, or None when there was none.  Its alerts stay."""
    row = await conn.fetchrow(f"DELETE FROM alert_rules WHERE name = $1 RETURNING {', '.join(RULE_COLUMNS)}", name)
    return None if row is None else {**dict(row), "phrases": list(row["phrases"])}


# --- alerts ----------------------------------------------------------------------------------------------

async def insert_alert(conn: Conn, *, rule: str, call_id: str, kind: str, phrase: str, speaker: str | None,
                       offset_ms: int | None) -> dict[str, Any] | None:
    """The new alert's row, or None when the rule already fired for this call (one alert per rule and call)."""
    row = await conn.fetchrow(
        f"""INSERT INTO alerts (rule, call_id, kind, phrase, speaker, offset_ms)
            VALUES ($1, $2::uuid, $3, $4, $5, $6) ON CONFLICT (rule, call_id) DO NOTHING
            RETURNING {', '.join(ALERT_COLUMNS)}""", rule, call_id, kind, phrase, speaker, offset_ms)
    return None if row is None else _alert(row)


def _alert(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in ALERT_COLUMNS}
    out["call_id"] = str(out["call_id"])
    return out


def encode_cursor(created_at: datetime, alert_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), alert_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        when_text, alert_id = json.loads(raw)
        when = datetime.fromisoformat(when_text)
        if when.tzinfo is None or not isinstance(alert_id, int) or isinstance(alert_id, bool) \
                or not 0 < alert_id < 2**63:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise CursorError("cursor: not a cursor this API returned") from None
    return when, alert_id


async def list_alerts(conn: Db, principal: Principal, *, rule: str | None = None, call_id: str | None = None,
                      since: datetime | None = None, cursor: tuple[datetime, int] | None = None,
                      limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, one page and the next page's cursor (None on the last).  Only alerts of calls the
    principal may see (``access.visible_calls_sql``): a supervisor never learns that a confidential call
    raised an alert."""
    params = Params()
    add = params.add
    where = [visible_calls_sql(principal, params, "c")]
    if rule is not None:
        where.append(f"a.rule = {add(rule)}")
    if call_id is not None:
        where.append(f"a.call_id = {add(uuid.UUID(call_id))}")
    if since is not None:
        where.append(f"a.created_at >= {add(since)}")
    if cursor is not None:
        when, last = cursor
        where.append(f"(a.created_at, a.id) < ({add(when)}, {add(last)})")
    sql = (f"SELECT {', '.join('a.' + c for c in ALERT_COLUMNS)} FROM alerts a JOIN calls c ON c.id = a.call_id "
           f"WHERE {' AND '.join(where)} ORDER BY a.created_at DESC, a.id DESC LIMIT {add(limit + 1)}")
    rows = await conn.fetch(sql, *params.values)
    items = [_alert(r) for r in rows[:limit]]
    more = len(rows) > limit
    return items, (encode_cursor(items[-1]["created_at"], items[-1]["id"]) if more and items else None)
