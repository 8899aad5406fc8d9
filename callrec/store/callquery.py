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

import asyncpg

from callrec import phone
from callrec.access import Params, Principal, visible_calls_sql
from callrec.store import said as said_mod
from callrec.store.db import Db
from callrec.store.said import Said, SaidError

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
    "confidential", "audio_deleted_at", "tags", "agent_name",
)
RECORDING_STATUSES = ("none", "starting", "recording", "finalizing", "ready", "empty", "unclosed", "missing", "failed")
_DURATION = "EXTRACT(EPOCH FROM (c.ended_at - c.started_at))::double precision AS duration"
_TAGS = ("COALESCE((SELECT array_agg(t.tag ORDER BY t.tag) FROM call_tags t WHERE t.call_id = c.id), "
         "'{}'::text[]) AS tags")
# The console user of the agent's extension (console.md "agent names"): an agent's own user first.
_AGENT_NAME_EXPR = ("(SELECT u.name FROM users u WHERE u.extension = c.agent AND NOT u.disabled "
                    "ORDER BY u.role <> 'agent', u.id LIMIT 1)")
_AGENT_NAME = f"{_AGENT_NAME_EXPR} AS agent_name"
_SUMMARY_SELECT = f"""c.id, c.started_at, c.ended_at, {_DURATION},
       c.direction, c.caller_number, c.caller_name, c.called_number, c.agent, c.consent_mode, c.consent,
       c.consent_key, c.recording_status, c.recording_duration, c.confidential, c.audio_deleted_at, {_TAGS},
       {_AGENT_NAME}"""
_FULL_SELECT = f"c.*, {_DURATION}, {_TAGS}, {_AGENT_NAME}"
# The transcript summary of each row (contract: "transcript" on list and detail items): one transcript
# and at most one queue job per call (both keyed by call_id), so the joins add no rows.
TRANSCRIPT_SELECT = """CASE WHEN tr.call_id IS NOT NULL THEN 'done'
           WHEN sj.state IN ('pending', 'running', 'failed', 'skipped') THEN sj.state ELSE 'none' END AS tr_state,
       sj.progress AS tr_progress, tr.silence_share AS tr_silence_share, tr.agent_talk_ratio AS tr_agent_talk_ratio,
       tr.overtalk_ms AS tr_overtalk_ms, tr.talk_ms AS tr_talk_ms"""
TRANSCRIPT_JOIN = ("LEFT JOIN transcripts tr ON tr.call_id = c.id "
                   "LEFT JOIN speech_jobs sj ON sj.call_id = c.id")


class FilterError(ValueError):
    """A bad filter value, worded as ``key: problem``."""


@dataclass
class CallFilter:
    since: datetime | None = None  # `from`
    until: datetime | None = None  # `to`
    number: str | None = None
    # What `number` means (callrec/phone.py), read with [search] default_country when parsed.
    number_match: phone.NumberMatch | None = None
    direction: str | None = None
    agent: str | None = None
    consent: str | None = None
    recorded: bool | None = None
    recording: str | None = None  # one recording status (the dashboard's failed / missing / empty links)
    min_duration: float | None = None
    max_duration: float | None = None
    tags: list[str] = field(default_factory=list)
    q: str | None = None
    said: Said | None = None
    silence_over: float | None = None  # percent of the call
    agent_talk_over: float | None = None  # percent of all talk
    agent_talk_under: float | None = None
    overtalk_over: float | None = None  # seconds
    order: str = "desc"
    limit: int = 50
    cursor: tuple[datetime, str] | None = None
    # The said search fell back to trigram similarity (nothing matched by full text); kept in the cursor.
    fuzzy: bool = False

    def describe(self) -> dict[str, Any]:
        """The filter as given (for the audit trail of an export)."""
        out: dict[str, Any] = {}
        for key, name in (("since", "from"), ("until", "to"), ("number", "number"), ("direction", "direction"),
                          ("agent", "agent"), ("consent", "consent"), ("recorded", "recorded"),
                          ("recording", "recording"),
                          ("min_duration", "min_duration"), ("max_duration", "max_duration"), ("q", "q"),
                          ("silence_over", "silence_over"), ("agent_talk_over", "agent_talk_over"),
                          ("agent_talk_under", "agent_talk_under"), ("overtalk_over", "overtalk_over")):
            value = getattr(self, key)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        if self.tags:
            out["tag"] = list(self.tags)
        if self.said is not None:
            out["said"] = self.said.text
        out["order"] = self.order
        return out


FILTER_KEYS = ("from", "to", "number", "direction", "agent", "consent", "recorded", "recording", "min_duration",
               "max_duration", "tag", "q", "said", "silence_over", "agent_talk_over", "agent_talk_under",
               "overtalk_over", "order", "limit", "cursor")
# Talk filters: (key, the most a value may be, unit for the error message).
TALK_FILTERS = (("silence_over", 100.0, "percent"), ("agent_talk_over", 100.0, "percent"),
                ("agent_talk_under", 100.0, "percent"), ("overtalk_over", 86400.0, "seconds"))


def parse_filter(get: Callable[[str], Sequence[str]], *, max_limit: int = MAX_LIMIT,
                 default_limit: int = 50, country: str = phone.DEFAULT_COUNTRY) -> CallFilter:
    """Build a filter from string values (``get(key)`` returns every value given for key); ``country``:
    ``[search] default_country``, for numbers written without a country code."""
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
        f.number_match = phone.parse_query(f.number, country)
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
    if f.min_duration is not None and f.max_duration is not None and f.min_duration > f.max_duration:
        raise FilterError("min_duration: larger than max_duration; no call can match")
    if (v := one("recording")) is not None:
        if v not in RECORDING_STATUSES:
            raise FilterError(f"recording: expected one of {', '.join(RECORDING_STATUSES)}, got {v!r}")
        f.recording = v
    for tag in get("tag"):
        if not TAG_RE.match(tag) or tag != tag.strip():
            raise FilterError(f"tag: expected 1-64 printable characters, got {tag!r}")
        f.tags.append(tag)
    if len(f.tags) > 20:
        raise FilterError("tag: at most 20 tags")
    if (v := one("q")) is not None:
        f.q = _text("q", v, 100)
    if (v := one("said")) is not None:
        try:
            f.said = said_mod.parse_said(v)
        except SaidError as exc:
            raise FilterError(str(exc)) from None
    for key, most, unit in TALK_FILTERS:
        if (v := one(key)) is not None:
            try:
                num = float(v)
            except ValueError:
                raise FilterError(f"{key}: expected a number of {unit}, got {v!r}") from None
            if not 0 <= num <= most:  # NaN fails both
                raise FilterError(f"{key}: expected 0 to {most:g} {unit}, got {v!r}")
            setattr(f, key, num)
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
        f.cursor, f.fuzzy = decode_cursor_fuzzy(v, f.order)
        if f.fuzzy and f.said is None:
            raise FilterError("cursor: made for a search with said")
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


def encode_cursor(started_at: datetime, call_id: Any, order: str, fuzzy: bool = False) -> str:
    items: list[Any] = [started_at.isoformat(), str(call_id), order]
    if fuzzy:
        items.append("fuzzy")  # the next page continues the trigram fallback, not the full-text match
    raw = json.dumps(items, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str, order: str) -> tuple[datetime, str]:
    return decode_cursor_fuzzy(value, order)[0]


def decode_cursor_fuzzy(value: str, order: str) -> tuple[tuple[datetime, str], bool]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        items = json.loads(raw)
        if not isinstance(items, list) or len(items) not in (3, 4) or items[3:] not in ([], ["fuzzy"]):
            raise ValueError
        started, call_id, cursor_order = items[:3]
        when = datetime.fromisoformat(started)
        if when.tzinfo is None or not re.fullmatch(r"[0-9a-f-]{36}", call_id):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: a deeply nested JSON array (json.loads recurses per level).
        raise FilterError("cursor: not a cursor this API returned") from None
    if cursor_order != order:
        raise FilterError("cursor: made for the other sort order")
    return (when, call_id), len(items) == 4


def where_clause(f: CallFilter, principal: Principal, params: Params, *, with_cursor: bool = True,
                 skip_q: bool = False, skip_first_tag: bool = False) -> str:
    """The WHERE clause (without the word) of a search: visibility AND every filter.

    ``skip_q`` / ``skip_first_tag``: the query reads that condition from its own index already (search_sql's
    drivers)."""
    # One agent's calls (the filter, or an agent's own visibility) as ids from indexes alone: a tag is matched
    # against them before any call row is read (reading the agent's 5,000 rows at 10 million calls first took
    # 130 ms when they were not cached; the ids alone, 9 ms).
    narrow = None
    tagged = bool(f.tags[1 if skip_first_tag else 0:])
    agent_own = principal.role == "agent" and bool(principal.extension)
    if tagged and agent_own:
        e = params.add(principal.extension)
        narrow = (f"SELECT na.id FROM calls na WHERE na.agent = {e} "
                  f"UNION ALL SELECT np.call_id FROM call_parties np WHERE np.number = {e}")
        # The tags' conditions below hold the agent's set of calls: visibility is then that and no
        # confidential call (the planner otherwise reads every call of the agent before it looks at a tag).
        conds = ["(NOT c.confidential)"]
    else:
        conds = [visible_calls_sql(principal, params, "c")]
        if tagged and f.agent:
            narrow = f"SELECT na.id FROM calls na WHERE na.agent = {params.add(f.agent)}"
    if f.since is not None:
        conds.append(f"c.started_at >= {params.add(f.since)}")
    if f.until is not None:
        conds.append(f"c.started_at < {params.add(f.until)}")
    if f.number:
        conds.append(number_sql(f.number_match or phone.parse_query(f.number), params))
    if f.direction:
        conds.append(f"c.direction = {params.add(f.direction)}")
    if f.agent:
        conds.append(f"c.agent = {params.add(f.agent)}")
    if f.consent:
        conds.append(f"c.consent = {params.add(f.consent)}")
    if f.recorded is not None:
        conds.append("c.recording_status = 'ready'" if f.recorded else "c.recording_status <> 'ready'")
    if f.recording:
        conds.append(f"c.recording_status = {params.add(f.recording)}")
    if f.min_duration is not None:
        conds.append(f"c.ended_at - c.started_at >= make_interval(secs => {params.add(f.min_duration)})")
    if f.max_duration is not None:
        conds.append(f"c.ended_at - c.started_at <= make_interval(secs => {params.add(f.max_duration)})")
    for i, tag in enumerate(f.tags):
        if i == 0 and skip_first_tag:
            continue
        if narrow:
            conds.append(f"c.id IN (SELECT ft.call_id FROM call_tags ft WHERE ft.tag = {params.add(tag)} "
                         f"AND ft.call_id IN ({narrow}))")
        else:
            conds.append(f"EXISTS (SELECT 1 FROM call_tags ft WHERE ft.call_id = c.id AND ft.tag = {params.add(tag)})")
    if f.q and not skip_q:
        conds.append(q_sql(f.q, params))
    talk = []
    if f.silence_over is not None:
        talk.append(f"ft.silence_share * 100 > {params.add(f.silence_over)}")
    if f.agent_talk_over is not None:
        talk.append(f"ft.agent_talk_ratio * 100 > {params.add(f.agent_talk_over)}")
    if f.agent_talk_under is not None:
        talk.append(f"ft.agent_talk_ratio * 100 < {params.add(f.agent_talk_under)}")
    if f.overtalk_over is not None:
        talk.append(f"ft.overtalk_ms > {params.add(f.overtalk_over)} * 1000")
    if talk:
        conds.append(f"EXISTS (SELECT 1 FROM transcripts ft WHERE ft.call_id = c.id AND {' AND '.join(talk)})")
    if f.said is not None:
        conds.append(said_mod.match_sql(f.said, params, "c", fuzzy=f.fuzzy))
    if with_cursor and f.cursor is not None:
        when, call_id = f.cursor
        op = "<" if f.order == "desc" else ">"
        conds.append(f"(c.started_at, c.id) {op} ({params.add(when)}, {params.add(call_id)}::uuid)")
    return " AND ".join(conds)


def q_pattern(q: str) -> str:
    """The ILIKE pattern of a ``q`` text: the text anywhere, case-insensitive, ``%`` and ``_`` as themselves."""
    return "%" + like_pattern(q, wildcard=False) + "%"


def q_by_names(q: str) -> bool:
    """Whether ``q`` can be matched against call_search.names (migration 023: the names a line each, in lower
    case) with the same answer as against each name: a text without a line break cannot match across two of
    them.  ``names LIKE lower(pattern)`` is ``ILIKE`` as PostgreSQL runs it in a UTF-8 database (it lowers
    both sides, then compares as LIKE)."""
    return "\n" not in q


def q_sql(q: str, params: Params) -> str:
    """The calls whose caller name, agent or a party's name holds ``q``, as a set of ids: by call_search's
    names and their trigram index, or, for a text with a line break, each name by its trigram index
    (migration 015)."""
    p = params.add(q_pattern(q))
    if not q_by_names(q):
        return q_ids_sql(p)
    return f"c.id IN (SELECT qs.call_id FROM call_search qs WHERE qs.names LIKE lower({p}))"


def q_ids_sql(p: str) -> str:
    """The calls whose caller name, agent or a party's name holds the ``q`` pattern ``p``, as a set of ids, each
    part by its trigram index (migration 015), not as OR EXISTS (a scan of the log when little matches)."""
    return (f"c.id IN (SELECT qc.id FROM calls qc WHERE qc.caller_name ILIKE {p} OR qc.agent ILIKE {p} "
            f"UNION ALL SELECT fp.call_id FROM call_parties fp WHERE fp.name ILIKE {p})")


def number_sql(m: phone.NumberMatch, params: Params) -> str:
    """The ``number`` condition over the digit columns (migration 014), each form by its index: equality and
    a prefix by ``calls_*_digits_idx`` (text_pattern_ops), a suffix by the reversed digits' index."""
    if m.kind == "exact":
        p = params.add(m.values[0])
        return f"(c.caller_digits = {p} OR c.called_digits = {p})"
    if m.kind == "prefix":
        ors = []
        for value in m.values:
            p = params.add(value + "%")
            ors += [f"c.caller_digits LIKE {p}", f"c.called_digits LIKE {p}"]
        return f"({' OR '.join(ors)})"
    if m.kind == "suffix":
        p = params.add(m.values[0][::-1] + "%")
        return f"(reverse(c.caller_digits) LIKE {p} OR reverse(c.called_digits) LIKE {p})"
    if m.kind == "pattern":
        p = params.add(m.values[0])
        return f"(c.caller_digits LIKE {p} OR c.called_digits LIKE {p})"
    p = params.add(like_pattern(m.values[0], wildcard=True))
    return f"(c.caller_number LIKE {p} OR c.called_number LIKE {p})"


def search_sql(f: CallFilter, principal: Principal, *, limit: int | None, full: bool = False,
               driver: str | None = None, walk_rows: int = 0,
               older_than: tuple[datetime, Any] | None = None,
               ids: list[str] | None = None) -> tuple[str, list[Any]]:
    """SELECT of CallSummary rows (``full``: every column of calls, then tags); ``limit`` None: all
    (export, streamed with a cursor); ``ids``: only these calls (the console's evidence export of one call).

    ``driver`` (search() chooses it, see plan()): where the rows come from in the list's order --
    None: calls by their own indexes (tag and q as sets, the planner's choice); "tag": the first tag's calls
    in order (call_tags_tag_started_idx); "q_walk": the next ``walk_rows`` rows of call_search in order (after
    the cursor, or after ``older_than``), those holding ``q``; "q_set": the calls holding ``q`` by
    call_search's trigram index, only those after ``older_than`` (a (started_at, id) in the list's order)."""
    params = Params()
    only = f" AND c.id = ANY({params.add(ids)}::uuid[])" if ids is not None else ""
    direction = "DESC" if f.order == "desc" else "ASC"
    op = "<" if f.order == "desc" else ">"
    select = f"SELECT {_FULL_SELECT if full else _SUMMARY_SELECT}, {TRANSCRIPT_SELECT}"
    if driver == "tag":
        d = "dt"
        where = where_clause(f, principal, params, with_cursor=False, skip_first_tag=True)
        conds = [f"dt.tag = {params.add(f.tags[0])}", *_order_conds(f, d, params, limit is not None, op)]
        source = "call_tags dt JOIN calls c ON c.id = dt.call_id"
        sql = f"{select} FROM {source} {TRANSCRIPT_JOIN} WHERE {' AND '.join(conds)} AND {where}{only}"
        order = f"dt.started_at {direction}, dt.call_id {direction}"
    elif driver == "q_walk":
        assert f.q is not None
        d = "ws"
        inner = " AND ".join(_order_conds(f, d, params, limit is not None, op, older_than)) or "TRUE"
        walk = (f"(SELECT ws.call_id, ws.started_at, ws.names FROM call_search ws WHERE {inner} "
                f"ORDER BY ws.started_at {direction}, ws.call_id {direction} LIMIT {params.add(walk_rows)}) AS s")
        pattern = params.add(q_pattern(f.q))
        where = where_clause(f, principal, params, with_cursor=False, skip_q=True)
        sql = (f"{select} FROM {walk} JOIN calls c ON c.id = s.call_id {TRANSCRIPT_JOIN} "
               f"WHERE s.names LIKE lower({pattern}) AND {where}{only}")
        order = f"s.started_at {direction}, s.call_id {direction}"
    elif driver == "q_set":
        assert f.q is not None and older_than is not None
        pattern = params.add(q_pattern(f.q))
        inner = " AND ".join(_order_conds(f, "qs", params, False, op, older_than))
        # The matches sorted by their own start first, then the calls row by row until the page is full: the
        # calls of matches further down the list are never read.
        matches = (f"(SELECT qs.call_id, qs.started_at FROM call_search qs WHERE qs.names LIKE lower({pattern}) "
                   f"AND {inner} ORDER BY qs.started_at {direction}, qs.call_id {direction}) AS s")
        where = where_clause(f, principal, params, with_cursor=False, skip_q=True)
        sql = f"{select} FROM {matches} JOIN calls c ON c.id = s.call_id {TRANSCRIPT_JOIN} WHERE {where}{only}"
        order = f"s.started_at {direction}, s.call_id {direction}"
    else:
        where = where_clause(f, principal, params, with_cursor=limit is not None)
        sql = f"{select} FROM calls c {TRANSCRIPT_JOIN} WHERE {where}{only}"
        order = f"c.started_at {direction}, c.id {direction}"
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {params.add(limit)}"
    return sql, params.values


def _order_conds(f: CallFilter, d: str, params: Params, with_cursor: bool, op: str,
                 after: tuple[datetime, Any] | None = None) -> list[str]:
    """``from``, ``to`` and the cursor (or ``after``, a later point) on a driver table's (started_at, call_id),
    the calls' own (kept equal by migration 023's triggers), so that its index reads only that range."""
    conds = []
    if f.since is not None:
        conds.append(f"{d}.started_at >= {params.add(f.since)}")
    if f.until is not None:
        conds.append(f"{d}.started_at < {params.add(f.until)}")
    point = after if after is not None else f.cursor if with_cursor else None
    if point is not None:
        when, call_id = point
        w = params.add(when)
        conds.append(f"{d}.started_at {op}= {w}")  # the range for the index; the row comparison decides
        conds.append(f"({d}.started_at, {d}.call_id) {op} ({w}, {params.add(call_id)}::uuid)")
    return conds


# A `q=` search first reads the newest calls in order (call_search_started_idx), this many, and keeps those that
# match: a text in 0.2 % of the calls fills a page of 50 there.  When they are not a page, what it found tells
# how common the text is: with Q_WALK_ON matches or more it reads on, as far as it expects to need (at most
# Q_WALK_MAX calls in all); with fewer, the trigram index finds the rest (few, so quickly found and sorted).
# Reading on costs ~0.3 us a call; a trigram match costs a row read out of order (~5-10 us), so reading on
# wins while the text is in more than ~1 call in 2,000.
Q_WALK_ROWS = 20_000
Q_WALK_ON = 8
Q_WALK_MAX = 200_000


def plan(f: CallFilter, principal: Principal) -> str | None:
    """The driver of a search page (search_sql): a filter that finds few calls by its own index (an agent's
    calls, one agent, a number) leaves tag and q to the planner; otherwise a tag's calls are read in order from
    its index, and a q= text by walking the newest calls, then by its trigram index (_q_page)."""
    if f.said is not None:
        return None  # its own ranking and fallback (search()); tag and q as sets
    if principal.role == "agent" or f.agent is not None or f.number is not None:
        return None  # a few thousand calls by their own index: the planner checks tag and q among them
    if f.tags:
        return "tag"
    if f.q is not None and q_by_names(f.q):
        return "q_walk"
    return None


# --- export: the rows as PostgreSQL writes them (COPY), the same cells as csv_cell / summary ----------------

# A text cell a spreadsheet would run as a formula gets a ' in front (csv_cell's rule, in SQL).
_DEFUSE = ("CASE WHEN left({x}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') AND {x} !~ '^[+-]?[0-9 ().-]*$' "
           "THEN '''' || {x} ELSE NULLIF({x}, '') END")
# Python writes a whole float as 65.0, PostgreSQL as 65; otherwise both print the shortest exact digits.
_FLOAT = "CASE WHEN {x} = trunc({x}) AND abs({x}) < 1e15 THEN {x}::text || '.0' ELSE {x}::text END"
# ISO 8601 as JSON writes it (the export sets TimeZone UTC): 2026-11-20T09:00:00+00:00, as isoformat() but
# with the microseconds' trailing zeros dropped; cheaper than to_char.
_TIME = "to_json({x}) #>> '{{}}'"
_CSV_KINDS = {"started_at": _TIME, "ended_at": _TIME, "audio_deleted_at": _TIME, "duration": _FLOAT,
              "recording_duration": _FLOAT, "id": "{x}", "confidential": "CASE WHEN {x} THEN 'True' ELSE 'False' END"}
_DURATION_EXPR = "EXTRACT(EPOCH FROM (c.ended_at - c.started_at))::double precision"
_TAGS_TEXT = "(SELECT string_agg(t.tag, ';' ORDER BY t.tag) FROM call_tags t WHERE t.call_id = c.id)"
_TAGS_ARRAY = "COALESCE((SELECT array_agg(t.tag ORDER BY t.tag) FROM call_tags t WHERE t.call_id = c.id), '{}')"
_TRANSCRIPT_STATE = ("CROSS JOIN LATERAL (SELECT CASE WHEN tr.call_id IS NOT NULL THEN 'done' "
                     "WHEN sj.state IN ('pending', 'running', 'failed', 'skipped') THEN sj.state ELSE 'none' END "
                     "AS tr_state) AS st")
_TRANSCRIPT_JSON = ("json_build_object('state', st.tr_state, 'progress', CASE WHEN st.tr_state = 'done' THEN 1.0 "
                    "ELSE sj.progress::float8 END, 'silence_share', round(tr.silence_share::numeric, 4), "
                    "'agent_talk_ratio', round(tr.agent_talk_ratio::numeric, 4), 'overtalk_ms', tr.overtalk_ms, "
                    "'talk_ms', tr.talk_ms)")


# For people reading the CSV in a spreadsheet: times in the viewer's zone, whole seconds, after the raw values
# (UTC ISO times, fractional seconds) that programs read.
CSV_READABLE_COLUMNS = ("time_zone", "started_local", "ended_local", "duration_rounded", "recording_duration_rounded")


def export_sql(f: CallFilter, principal: Principal, fmt: str, tz: str = "UTC") -> tuple[str, list[Any]]:
    """The SELECT a streamed export hands to ``COPY (...) TO STDOUT``: for ``csv`` the SUMMARY_COLUMNS as the
    cells csv_cell makes (formula-safe), for ``json`` one JSON object per row (summary()'s keys, with
    "transcript"); the visibility rule and the filter as a search, every matching call, in the list's order."""
    params = Params()
    where = where_clause(f, principal, params, with_cursor=False)
    direction = "DESC" if f.order == "desc" else "ASC"

    def expr(name: str) -> str:
        if name == "duration":
            return _DURATION_EXPR
        if name == "tags":
            return _TAGS_TEXT if fmt == "csv" else _TAGS_ARRAY
        if name == "agent_name":
            return _AGENT_NAME_EXPR
        return f"c.{name}"

    if fmt == "csv":
        select = ", ".join(f"{_CSV_KINDS.get(name, _DEFUSE).format(x=expr(name))} AS {name}"
                           for name in SUMMARY_COLUMNS)
        zone = params.add(tz)
        local = "to_char({x} AT TIME ZONE " + zone + "::text, 'YYYY-MM-DD HH24:MI:SS')"
        select += (f", {zone}::text AS time_zone, {local.format(x='c.started_at')} AS started_local, "
                   f"{local.format(x='c.ended_at')} AS ended_local, "
                   f"round({_DURATION_EXPR})::bigint AS duration_rounded, "
                   f"round(c.recording_duration)::bigint AS recording_duration_rounded")
        joins = ""
    else:
        # row_to_json of a row with the keys as column names: compact JSON (json_build_object spaces every
        # ":" and ","; a third more bytes to send).
        select = ", ".join(f"{expr(name)} AS {name}" for name in SUMMARY_COLUMNS)
        select += f", {_TRANSCRIPT_JSON} AS transcript"
        joins = f" {TRANSCRIPT_JOIN} {_TRANSCRIPT_STATE}"
    sql = (f"SELECT {select} FROM calls c{joins} WHERE {where} "
           f"ORDER BY c.started_at {direction}, c.id {direction}")
    if fmt != "csv":
        sql = f"SELECT row_to_json(r)::text FROM ({sql}) AS r"
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
    if "tr_state" in row.keys():
        out["transcript"] = transcript_summary(row)
    return out


def transcript_summary(row: Any) -> dict[str, Any]:
    """The "transcript" object of a call item from the ``TRANSCRIPT_SELECT`` columns (stats null until done)."""
    state = row["tr_state"]
    progress = row["tr_progress"]
    return {"state": state,
            "progress": 1.0 if state == "done" else (float(progress) if progress is not None else None),
            "silence_share": _num(row["tr_silence_share"]), "agent_talk_ratio": _num(row["tr_agent_talk_ratio"]),
            "overtalk_ms": row["tr_overtalk_ms"], "talk_ms": row["tr_talk_ms"]}


async def transcript_of(conn: Db, call_id: str) -> dict[str, Any]:
    """The "transcript" object of one call (its detail); the caller has checked visibility."""
    row = await conn.fetchrow(f"SELECT {TRANSCRIPT_SELECT} FROM calls c {TRANSCRIPT_JOIN} WHERE c.id = $1::uuid",
                              call_id)
    if row is None:
        return transcript_summary({"tr_state": "none", "tr_progress": None, "tr_silence_share": None,
                                   "tr_agent_talk_ratio": None, "tr_overtalk_ms": None, "tr_talk_ms": None})
    return transcript_summary(row)


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


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


async def prepare(conn: Db, f: CallFilter) -> None:
    """What a filter needs from PostgreSQL before its SQL is built (which ``said`` words are searchable);
    FilterError when it cannot be searched."""
    if f.said is not None:
        try:
            await said_mod.resolve(conn, f.said)
        except SaidError as exc:
            raise FilterError(str(exc)) from None


async def search(conn: Db, f: CallFilter, principal: Principal,
                 full: bool = False) -> tuple[list[Any], str | None]:
    """One page and the cursor of the next (None on the last page).  With ``said``: when the full-text
    match finds nothing on the first page, the trigram fallback runs and ``f.fuzzy`` is set."""
    await prepare(conn, f)
    if f.fuzzy and f.said is not None:
        await said_mod.expand(conn, f.said)
    rows = await _page(conn, f, principal, full)
    if not rows and f.said is not None and f.cursor is None and not f.fuzzy:
        f.fuzzy = True
        await said_mod.expand(conn, f.said)
        rows = await _page(conn, f, principal, full)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["id"], f.order, f.fuzzy) if more and rows else None
    return rows, cursor


async def _page(conn: Db, f: CallFilter, principal: Principal, full: bool) -> list[Any]:
    driver = plan(f, principal)
    if driver == "q_walk":
        return await _q_page(conn, f, principal, full)
    sql, args = search_sql(f, principal, limit=f.limit + 1, full=full, driver=driver)
    if f.said is None:
        return list(await conn.fetch(sql, *args))
    return await fetch_custom(conn, sql, *args)


async def _q_page(conn: Db, f: CallFilter, principal: Principal, full: bool) -> list[Any]:
    """A `q=` page: the next calls (of the range, after the cursor) read in order, those that hold q, as long as
    they are common enough (Q_WALK_*); then the rest from the trigram index, after the last call read."""
    want = f.limit + 1
    rows: list[Any] = []
    after: tuple[datetime, Any] | None = None  # the last call read
    walk, read = Q_WALK_ROWS, 0
    op = "<" if f.order == "desc" else ">"
    direction = "DESC" if f.order == "desc" else "ASC"
    while True:
        sql, args = search_sql(f, principal, limit=want - len(rows), full=full, driver="q_walk", walk_rows=walk,
                               older_than=after)
        rows += await conn.fetch(sql, *args)
        if len(rows) >= want:
            return rows
        params = Params()
        conds = " AND ".join(_order_conds(f, "ws", params, True, op, after)) or "TRUE"
        last = await conn.fetchrow(f"SELECT ws.started_at, ws.call_id FROM call_search ws WHERE {conds} "
                                   f"ORDER BY ws.started_at {direction}, ws.call_id {direction} "
                                   f"OFFSET {params.add(walk - 1)} LIMIT 1", *params.values)
        if last is None:
            return rows  # the walk read every call there is
        after, read = (last["started_at"], last["call_id"]), read + walk
        if len(rows) < Q_WALK_ON or read >= Q_WALK_MAX:
            break
        # As far as the matches so far say the page needs, and a quarter more.
        walk = min(Q_WALK_MAX - read, int((want - len(rows)) * read / len(rows) * 1.25) + 1)
    sql, args = search_sql(f, principal, limit=want - len(rows), full=full, driver="q_set", older_than=after)
    return rows + list(await conn.fetch(sql, *args))


# A prepared statement's generic plan cannot know how common the searched words are: for `said` it chose a
# plan that probed the text index once per call (11 s over a million segments instead of 60 ms).  Queries
# with `said` are planned for their values every time.
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


async def fetch_custom(conn: Db, sql: str, *args: Any) -> list[Any]:
    """``conn.fetch`` planned for these values (in a transaction of its own, with CUSTOM_PLANS)."""
    async with said_mod.connection(conn) as c, c.transaction(readonly=True):
        await c.execute(CUSTOM_PLANS)
        return list(await c.fetch(sql, *args))


# Up to this many calls (by the planner's estimate) a count is exact; above it the estimate is the answer:
# counting millions of rows exactly takes seconds, and a list that long is narrowed before anyone reads it.
EXACT_COUNT_UP_TO = 20_000
# An exact count the estimate promised to be small may still take long (the estimate was wrong): then the
# estimate stands.
EXACT_COUNT_TIMEOUT = "2s"


async def count(conn: Db, f: CallFilter, principal: Principal) -> tuple[int, bool]:
    """How many calls the filter finds (``said`` by full text only), and whether the figure is exact."""
    await prepare(conn, f)
    sql, args = count_sql(f, principal)
    async with said_mod.connection(conn) as c, c.transaction(readonly=True):
        await c.execute(CUSTOM_PLANS)
        # The rows the planner expects the filter to find (the count's input, before any Aggregate or Gather).
        rows_sql = "SELECT 1" + sql[len("SELECT count(*)"):]
        plan = json.loads(await c.fetchval("EXPLAIN (FORMAT JSON) " + rows_sql, *args))
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate > EXACT_COUNT_UP_TO:
            return estimate, False
        await c.execute(f"SET LOCAL statement_timeout = '{EXACT_COUNT_TIMEOUT}'")
        try:
            async with c.transaction():  # a savepoint: the timeout leaves the outer transaction usable
                return int(await c.fetchval(sql, *args)), True
        except asyncpg.QueryCanceledError:
            return estimate, False


def said_audit(f: CallFilter, hits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The details of a ``transcript_search`` audit entry: the words, and the calls whose snippets were shown."""
    assert f.said is not None
    return {"said": f.said.text, "fuzzy": f.fuzzy, "calls": sorted(k for k, v in hits.items() if v)}


async def page_hits(conn: Db, f: CallFilter, rows: Sequence[Any]) -> dict[str, list[dict[str, Any]]] | None:
    """The ``said`` hits of a page's calls by call id, or None when the search has no ``said``."""
    if f.said is None:
        return None
    return await said_mod.hits(conn, f.said, [r["id"] for r in rows], fuzzy=f.fuzzy)

