"""Search by what was said: the ``said`` filter of the call search, and the hits it shows per call.

``said`` holds words and "quoted phrases".  Each one must occur somewhere in the call (in any segment,
any speaker): full text with the ``russian`` configuration (it stems Russian and, with the English
stemmer, Latin words, so договора finds договор and refunds finds refund); a phrase must match as a
phrase (``phraseto_tsquery``: its words in order, next to each other).  When nothing at all matches, the
search falls back to trigram similarity on the segment text (a word the recogniser got slightly wrong:
скипку ~ скидку), and says so: every hit is then ``"fuzzy": true``.

Hits are computed only for the calls of the page (at most ``HITS_PER_CALL`` each, in time order): which
words of a segment matched is decided by PostgreSQL with the same configuration (the lexemes of the
query against each word's own lexemes), so ``offset_ms`` is the start of the first matched word.  The
snippet is a list of ``[text, is_hit]`` parts: plain text, never HTML.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from callrec.access import Params
from callrec.store.db import Conn, Db

MAX_SAID = 200  # characters
MAX_TERMS = 8
HITS_PER_CALL = 5
# pg_trgm similarity at which a stored word counts as "probably this one" (скипку ~ скидку is 0.4), and how
# many such words one word of the query may stand for.
FUZZY_THRESHOLD = 0.4
FUZZY_CANDIDATES = 8
# Snippet: words kept before the first hit and in all, around it.
SNIPPET_BEFORE = 8
SNIPPET_WORDS = 24

_TERM_RE = re.compile(r'"([^"]*)(?:"|$)|([^\s"]+)')
_WORD_RE = re.compile(r"\w+")
_PUNCT = ".,!?;:…»«\"'()[]"


class SaidError(ValueError):
    """A ``said`` value that cannot be searched, worded as ``said: problem``."""


@dataclass
class Said:
    """A parsed ``said``: its terms (words and phrases, as typed), and once resolved by PostgreSQL, the
    terms that have something to search for and the lexemes that mark a word as a hit."""

    text: str
    terms: list[str]
    resolved: bool = False
    lexemes: list[str] = field(default_factory=list)
    # The similar-word fallback: one tsquery per term (similar words of the lexicon, OR-ed per word), and
    # their lexemes; None until expanded, [] when some term has no similar word at all.
    fuzzy_queries: list[str] | None = None
    fuzzy_lexemes: list[str] = field(default_factory=list)


def parse_said(value: str) -> Said:
    """Split ``said`` into words and quoted phrases; SaidError for an empty, too long or too rich one.
    Any character may be given: the terms reach PostgreSQL only as parameters of ``phraseto_tsquery``,
    which reads text, not query syntax."""
    if len(value) > MAX_SAID:
        raise SaidError(f"said: at most {MAX_SAID} characters")
    terms = []
    for m in _TERM_RE.finditer(value):
        term = " ".join((m.group(1) if m.group(1) is not None else m.group(2)).split())
        if term and term not in terms:
            terms.append(term)
    if not terms:
        raise SaidError("said: expected words or a \"quoted phrase\"")
    if len(terms) > MAX_TERMS:
        raise SaidError(f"said: at most {MAX_TERMS} words or phrases")
    return Said(value, terms)


async def resolve(conn: Db, said: Said) -> None:
    """Keep the terms that have a searchable word (stop words such as "не" or "the" are not indexed:
    SaidError when nothing is left), and note the lexemes and words that mark hits."""
    if said.resolved:
        return
    rows = await conn.fetch(
        "SELECT t, numnode(phraseto_tsquery('russian', t)) > 0 AS searchable, "
        "tsvector_to_array(to_tsvector('russian', t)) AS lexemes FROM unnest($1::text[]) WITH ORDINALITY u(t, i) "
        "ORDER BY i", said.terms)
    kept = [r["t"] for r in rows if r["searchable"]]
    if not kept:
        raise SaidError("said: no word to search for (only punctuation, or words too common to be indexed, "
                        "like \"не\", \"и\", \"the\"); add a more specific word")
    said.terms = kept
    said.lexemes = sorted({lx for r in rows if r["searchable"] for lx in r["lexemes"]})
    said.resolved = True


async def expand(conn: Db, said: Said) -> None:
    """The similar-word fallback's queries: each word of each term is replaced by the (at most
    FUZZY_CANDIDATES) most similar words of ``transcript_lexicon`` (trigram similarity >= FUZZY_THRESHOLD),
    as their lexemes OR-ed; a phrase keeps its word order and distances."""
    if said.fuzzy_queries is not None:
        return
    slots = [(ti, wi, w) for ti, term in enumerate(said.terms) for wi, w in enumerate(_WORD_RE.findall(term.lower()))]
    rows = await conn.fetch(
        f"""SELECT q.i, numnode(plainto_tsquery('russian', q.w)) > 0 AS indexed,
                   ARRAY(SELECT DISTINCT lx FROM (
                             SELECT l.word FROM transcript_lexicon l
                              ORDER BY lower(l.word) <-> q.w LIMIT {FUZZY_CANDIDATES}) c,
                         unnest(tsvector_to_array(to_tsvector('russian', c.word))) AS lx
                          WHERE similarity(c.word, q.w) >= {FUZZY_THRESHOLD}) AS lexemes
              FROM unnest($1::text[]) WITH ORDINALITY q(w, i) ORDER BY q.i""", [w for _, _, w in slots])
    queries: list[str] = []
    lexemes: set[str] = set()
    for ti in range(len(said.terms)):
        parts: list[str] = []
        last = None
        for (t, wi, _), r in zip(slots, rows, strict=True):
            if t != ti or not r["indexed"]:
                continue  # a stop word: not indexed, as in the full-text match
            if not r["lexemes"]:
                said.fuzzy_queries, said.fuzzy_lexemes = [], []
                return  # nothing like this word was ever said: the fallback finds nothing
            if last is not None:
                parts.append(f"<{wi - last}>" if wi - last > 1 else "<->")
            parts.append("(" + " | ".join(_quote(lx) for lx in r["lexemes"]) + ")")
            lexemes.update(r["lexemes"])
            last = wi
        if parts:
            queries.append(" ".join(parts))
    said.fuzzy_queries, said.fuzzy_lexemes = queries, sorted(lexemes)


def _quote(lexeme: str) -> str:
    """A lexeme as a tsquery operand: quoted, with quotes and backslashes escaped (tsquery input rules)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _tests(said: Said, params: Params, fuzzy: bool) -> list[str]:
    """One full-text test on a segment ``s`` per term: the term itself, or its similar-word query."""
    if fuzzy:
        assert said.fuzzy_queries is not None, "expand() first"
        return [f"s.tsv @@ {params.add(q)}::tsquery" for q in said.fuzzy_queries] or ["FALSE"]
    return [f"s.tsv @@ phraseto_tsquery('russian', {params.add(t)})" for t in said.terms]


def match_sql(said: Said, params: Params, alias: str = "c", *, fuzzy: bool = False) -> str:
    """The condition on a ``calls`` row: every term occurs in one of its segments (with ``fuzzy``, the
    similar-word queries of :func:`expand`)."""
    return " AND ".join(f"EXISTS (SELECT 1 FROM transcript_segments s WHERE s.call_id = {alias}.id AND {test})"
                        for test in _tests(said, params, fuzzy))


async def hits(conn: Db, said: Said, call_ids: Sequence[Any], *, fuzzy: bool) -> dict[str, list[dict[str, Any]]]:
    """The hits of each call of a page: {call id: [hit, ...]} (at most HITS_PER_CALL, in time order)."""
    if not call_ids:
        return {}
    params = Params()
    ids = params.add([str(c) for c in call_ids])
    tests = _tests(said, params, fuzzy)
    lexemes = said.fuzzy_lexemes if fuzzy else said.lexemes
    mark = f"tsvector_to_array(to_tsvector('russian', e.w->>0)) && {params.add(lexemes)}::text[]"
    # Per call, its segments in time order (the primary key), tested one by one until HITS_PER_CALL match.
    # OFFSET 0 keeps the test out of the scan: with it inside, PostgreSQL AND-ed the text index in, whose
    # list for a common word holds every call's segments (6 ms per call instead of a fraction of one).
    sql = f"""SELECT h.call_id, h.seq, h.speaker, h.start_ms, h.end_ms, h.text, h.words,
                     ARRAY(SELECT {mark} FROM jsonb_array_elements(h.words) WITH ORDINALITY e(w, i) ORDER BY e.i)
                         AS marks
              FROM unnest({ids}::uuid[]) AS c(id),
                   LATERAL (SELECT s.* FROM (SELECT * FROM transcript_segments WHERE call_id = c.id
                                              ORDER BY seq OFFSET 0) AS s
                             WHERE {' OR '.join(tests)}
                             ORDER BY s.seq LIMIT {HITS_PER_CALL}) AS h
              ORDER BY h.call_id, h.seq"""
    out: dict[str, list[dict[str, Any]]] = {}
    async with connection(conn) as c, c.transaction(readonly=True):
        await c.execute("SET LOCAL plan_cache_mode = force_custom_plan")  # see callquery.CUSTOM_PLANS
        rows = await c.fetch(sql, *params.values)
    for r in rows:
        words = json.loads(r["words"]) if isinstance(r["words"], str) else r["words"]
        out.setdefault(str(r["call_id"]), []).append(hit(r["seq"], r["speaker"], r["start_ms"], r["end_ms"], r["text"],
                                                         words, list(r["marks"]), fuzzy=fuzzy))
    return out


@contextlib.asynccontextmanager
async def connection(conn: Db) -> AsyncIterator[Conn]:
    """One connection of ``conn`` (itself, or one of the pool's), for a transaction of its own."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            yield c
    else:
        yield conn


def hit(seq: int, speaker: str, start_ms: int, end_ms: int, text: str, words: Sequence[Sequence[Any]],
        marks: Sequence[bool], *, fuzzy: bool = False) -> dict[str, Any]:
    """One hit: where to seek (the first matched word's start) and the snippet with the match marked."""
    first = next((i for i, m in enumerate(marks) if m), None)
    out: dict[str, Any] = {"seq": seq, "speaker": speaker,
                           "offset_ms": int(words[first][1]) if first is not None else start_ms,
                           "end_ms": end_ms, "snippet": snippet(text, words, marks, first)}
    if fuzzy:
        out["fuzzy"] = True
    return out


def snippet(text: str, words: Sequence[Sequence[Any]], marks: Sequence[bool],
            first: int | None) -> list[list[Any]]:
    """``[[text, is_hit], ...]`` around the first hit: a hit part is the word without its space and
    punctuation; text cut off at either end is shown as "…"."""
    if not words or first is None:
        cut = text.strip()
        if len(cut) > 160:
            cut = cut[:160].rstrip() + " …"
        return [[cut, False]]
    lo = max(0, first - SNIPPET_BEFORE)
    hi = min(len(words), lo + SNIPPET_WORDS)
    parts: list[list[Any]] = []

    def add(piece: str, is_hit: bool) -> None:
        if not piece:
            return
        if parts and parts[-1][1] == is_hit:
            parts[-1][0] += piece
        else:
            parts.append([piece, is_hit])

    if lo > 0:
        add("… ", False)
    for i in range(lo, hi):
        raw = str(words[i][0])
        if i == lo:
            raw = raw.lstrip()
        if i < len(marks) and marks[i]:
            core = raw.strip()
            lead = raw[: len(raw) - len(raw.lstrip())]
            head = len(core) - len(core.lstrip(_PUNCT))
            tail = len(core.rstrip(_PUNCT))
            if tail <= head:  # only punctuation: nothing to mark
                add(raw, False)
                continue
            add(lead + core[:head], False)
            add(core[head:tail], True)
            add(core[tail:], False)
        else:
            add(raw, False)
    if hi < len(words):
        add(" …", False)
    return parts
