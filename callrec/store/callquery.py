"""Call search: filters, keyset pagination and the visibility rule, as one SQL builder.

Used by the HTTP API (search, export, counts) and the CLI (`callrec calls`), so both accept the
same filters and see the same calls.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store.db import Db

DIRECTIONS = ("inbound", "outbound", "internal")
CONSENTS = ("implied", "granted", "declined", "not_given", "abandoned", "notice_failed", "unavailable",
            "not_asked")
MAX_LIMIT = 500
# No control characters (C0 and C1, as PostgreSQL's [:cntrl:] in the call_tags check).
TAG_RE = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,64}$")

# The columns of a search result / export row (CallSummary).
SUMMARY_COLUMNS = (
    "id", "started_at", "ended_at", "duration", "direction", "caller_number", "caller_name", "called_number",
    "agent", "consent_mode", "consent", "consent_key", "recording_status", "recording_duration",
    "confidential", "audio_deleted_at", "tags",
)
_DURATION = "EXTRACT(EPOCH FROM (c.ended_at - c.started_at))::double precision AS duration"
_TAGS = ("COALESCE((SELECT array_agg(t.tag ORDER BY t.tag) FROM call_tags t WHERE t.call_id = c.id), "
         "'{}'::text[]) AS tags")
_SUMMARY_SELECT = f"""c.id, c.started_at, c.ended_at, {_DURATION},
       c.direction, c.caller_number, c.caller_name, c.called_number, c.agent, c.consent_mode, c.consent,
       c.consent_key, c.recording_status, c.recording_duration, c.confidential, c.audio_deleted_at, {_TAGS}"""
_FULL_SELECT = f"c.*, {_DURATION}, {_TAGS}"


class FilterError(ValueError):
    """A bad filter value, worded as ``key: problem``."""


@dataclass
class CallFilter:
    since: datetime | None = None  # `from`
    until: datetime | None = None  # `to`
    number: str | None = None
    direction: str | None = None
    agent: str | None = None
    consent: str | None = None
    recorded: bool | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    tags: list[str] = field(default_factory=list)
    q: str | None = None
    order: str = "desc"
    limit: int = 50
    cursor: tuple[datetime, str] | None = None

    def describe(self) -> dict[str, Any]:
        """The filter as given (for the audit trail of an export)."""
        out: dict[str, Any] = {}
        for key, name in (("since", "from"), ("until", "to"), ("number", "number"), ("direction", "direction"),
                          ("agent", "agent"), ("consent", "consent"), ("recorded", "recorded"),
                          ("min_duration", "min_duration"), ("max_duration", "max_duration"), ("q", "q")):
            value = getattr(self, key)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        if self.tags:
            out["tag"] = list(self.tags)
        out["order"] = self.order
        return out


FILTER_KEYS = ("from", "to", "number", "direction", "agent", "consent", "recorded", "min_duration",
               "max_duration", "tag", "q", "order", "limit", "cursor")


def parse_filter(get: Callable[[str], Sequence[str]], *, max_limit: int = MAX_LIMIT,
                 default_limit: int = 50) -> CallFilter:
    """Build a filter from string values (``get(key)`` returns every value given for key)."""
    f = CallFilter(limit=default_limit)

    def one(key: str) -> str | None:
        values = list(get(key))
        if not values:
            return None
        if len(values) > 1:
            raise FilterError(f"{key}: given more than once")
        if "\x00" in values[0]:
            raise FilterError(f"{key}: contains a NUL character")
        return values[0]

    if (v := one("from")) is not None:
        f.since = parse_time("from", v)
    if (v := one("to")) is not None:
        f.until = parse_time("to", v)
    if (v := one("number")) is not None:
        f.number = _text("number", v, 64)
    if (v := one("direction")) is not None:
        if v not in DIRECTIONS:
            raise FilterError(f"direction: expected one of {', '.join(DIRECTIONS)}, got {v!r}")
        f.direction = v
    if (v := one("agent")) is not None:
        f.agent = _text("agent", v, 64)
    if (v := one("consent")) is not None:
        if v not in CONSENTS:
            raise FilterError(f"consent: expected one of {', '.join(CONSENTS)}, got {v!r}")
        f.consent = v
    if (v := one("recorded")) is not None:
        if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise FilterError(f"recorded: expected true or false, got {v!r}")
        f.recorded = v.lower() in ("true", "1", "yes")
    for key in ("min_duration", "max_duration"):
        if (v := one(key)) is not None:
            try:
                num = float(v)
            except ValueError:
                raise FilterError(f"{key}: expected seconds, got {v!r}") from None
            if not 0 <= num <= 10**7:
                raise FilterError(f"{key}: expected 0 to 10000000 seconds, got {v!r}")
            setattr(f, key, num)
    for tag in get("tag"):
        if not TAG_RE.match(tag) or tag != tag.strip():
            raise FilterError(f"tag: expected 1-64 printable characters, got {tag!r}")
        f.tags.append(tag)
    if len(f.tags) > 20:
        raise FilterError("tag: at most 20 tags")
    if (v := one("q")) is not None:
        f.q = _text("q", v, 100)
    if (v := one("order")) is not None:
        if v not in ("asc", "desc"):
            raise FilterError(f"order: expected asc or desc, got {v!r}")
        f.order = v
    if (v := one("limit")) is not None:
        try:
            f.limit = int(v)
        except ValueError:
            raise FilterError(f"limit: expected a whole number 1-{max_limit}, got {v!r}") from None
        if not 1 <= f.limit <= max_limit:
            raise FilterError(f"limit: expected a whole number 1-{max_limit}, got {v!r}")
    if (v := one("cursor")) is not None:
        f.cursor = decode_cursor(v, f.order)
    return f


def parse_time(key: str, value: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{key}: expected an ISO 8601 time like 2026-11-27T10:00:00Z, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a time without an offset is UTC
    return when


def _text(key: str, value: str, max_len: int) -> str:
    if not value or len(value) > max_len:
        raise FilterError(f"{key}: expected 1-{max_len} characters")
    return value


def like_pattern(text: str, wildcard: bool) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%") if wildcard else escaped


def encode_cursor(started_at: datetime, call_id: Any, order: str) -> str:
    raw = json.dumps([started_at.isoformat(), str(call_id), order], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str, order: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        started, call_id, cursor_order = json.loads(raw)
        when = datetime.fromisoformat(started)
        if when.tzinfo is None or not re.fullmatch(r"[0-9a-f-]{36}", call_id):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: a deeply nested JSON array (json.loads recurses per level).
        raise FilterError("cursor: not a cursor this API returned") from None
    if cursor_order != order:
        raise FilterError("cursor: made for the other sort order")
    return when, call_id


def where_clause(f: CallFilter, principal: Principal, params: Params, *, with_cursor: bool = True) -> str:
    """The WHERE clause (without the word) of a search: visibility AND every filter."""
    conds = [visible_calls_sql(principal, params, "c")]
    if f.since is not None:
        conds.append(f"c.started_at >= {params.add(f.since)}")
    if f.until is not None:
        conds.append(f"c.started_at < {params.add(f.until)}")
    if f.number:
        p = params.add(like_pattern(f.number, wildcard=True))
        conds.append(f"(c.caller_number LIKE {p} OR c.called_number LIKE {p})")
    if f.direction:
        conds.append(f"c.direction = {params.add(f.direction)}")
    if f.agent:
        conds.append(f"c.agent = {params.add(f.agent)}")
    if f.consent:
        conds.append(f"c.consent = {params.add(f.consent)}")
    if f.recorded is not None:
        conds.append("c.recording_status = 'ready'" if f.recorded else "c.recording_status <> 'ready'")
    if f.min_duration is not None:
        conds.append(f"c.ended_at - c.started_at >= make_interval(secs => {params.add(f.min_duration)})")
    if f.max_duration is not None:
        conds.append(f"c.ended_at - c.started_at <= make_interval(secs => {params.add(f.max_duration)})")
    for tag in f.tags:
        conds.append(f"EXISTS (SELECT 1 FROM call_tags ft WHERE ft.call_id = c.id AND ft.tag = {params.add(tag)})")
    if f.q:
        p = params.add("%" + like_pattern(f.q, wildcard=False) + "%")
        conds.append(f"(c.caller_name ILIKE {p} OR c.agent ILIKE {p} OR EXISTS (SELECT 1 FROM call_parties fp "
                     f"WHERE fp.call_id = c.id AND fp.name ILIKE {p}))")
    if with_cursor and f.cursor is not None:
        when, call_id = f.cursor
        op = "<" if f.order == "desc" else ">"
        conds.append(f"(c.started_at, c.id) {op} ({params.add(when)}, {params.add(call_id)}::uuid)")
    return " AND ".join(conds)


def search_sql(f: CallFilter, principal: Principal, *, limit: int | None,
               full: bool = False) -> tuple[str, list[Any]]:
    """SELECT of CallSummary rows (``full``: every column of calls, then tags); ``limit`` None: all
    (export, streamed with a cursor)."""
    params = Params()
    where = where_clause(f, principal, params, with_cursor=limit is not None)
    direction = "DESC" if f.order == "desc" else "ASC"
    sql = (f"SELECT {_FULL_SELECT if full else _SUMMARY_SELECT} FROM calls c WHERE {where} "
           f"ORDER BY c.started_at {direction}, c.id {direction}")
    if limit is not None:
        sql += f" LIMIT {params.add(limit)}"
    return sql, params.values


def count_sql(f: CallFilter, principal: Principal) -> tuple[str, list[Any]]:
    params = Params()
    where = where_clause(f, principal, params, with_cursor=False)
    return f"SELECT count(*) FROM calls c WHERE {where}", params.values


def summary(row: Any) -> dict[str, Any]:
    """A result row as JSON-ready values."""
    out = {}
    for key in SUMMARY_COLUMNS:
        value = row[key]
        if isinstance(value, datetime):
            value = value.isoformat()
        elif key == "id":
            value = str(value)
        elif key == "tags":
            value = list(value or [])
        out[key] = value
    return out


_FORMULA_START = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?[0-9 ().-]*$")


def csv_cell(value: Any) -> Any:
    """A summary value as a CSV cell (API export and `callrec calls --csv`).  Caller-supplied
    text must not run as a spreadsheet formula; phone numbers like +49... stay."""
    kind = type(value)
    if kind is str:
        if value and value[0] in _FORMULA_START and not _PLAIN_NUMBER.match(value):
            return "'" + value
        return value
    if value is None:
        return ""
    if kind is datetime:
        return value.isoformat()
    if kind is list:
        return csv_cell(";".join(value))
    return value


async def search(conn: Db, f: CallFilter, principal: Principal,
                 full: bool = False) -> tuple[list[Any], str | None]:
    """One page and the cursor of the next (None on the last page)."""
    sql, args = search_sql(f, principal, limit=f.limit + 1, full=full)
    rows = await conn.fetch(sql, *args)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["id"], f.order) if more and rows else None
    return rows, cursor
