"""Keyword alerts: every new transcript matched against the alert rules, each match an alert row and its
hook jobs, written in the transaction that saves the transcript (the runner's ``after_save``).

What counts as a match is decided here, in pure Python, over lexemes PostgreSQL computed once for the
call's words and the rules' phrases (store/alerts.py: the ``russian`` configuration of the search index):

- a phrase matches where its words follow each other in one speaker's words (in time order, across that
  speaker's segments), each transcript word sharing a lexeme with the phrase word; a stop word inside a
  phrase stands for any one word, as in ``phraseto_tsquery``;
- ``speaker``: on a stereo transcript only that party's words count; on a mono one every word is
  ``mixed`` and counts for either party (no alert is lost; the alert says ``mixed``);
- ``said``: the earliest match (before ``within_s``, when set) raises the alert;
- ``not_said``: an alert when no phrase was said (before ``within_s``): absent, or said too late (the
  alert then carries when).  A call in which that party said nothing at all raises none: there was
  nobody to hold to the script (an unanswered or one-sided call).

One alert per rule and call: a transcript saved again (a job run twice, another model) raises no second
alert for a rule that already fired and withdraws none, so a receiver never gets the same alert twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callrec.config.alerts import AlertRule
from callrec.config.settings import Settings
from callrec.hooks import queue_alert
from callrec.store import alerts as store
from callrec.store.calllog import is_transient
from callrec.store.db import Conn, record_from_row

__all__ = ["AlertMatcher", "Match", "Spoken", "SpokenWord", "Terms", "decide", "first_said", "phrase_terms",
           "rule_of"]

log = logging.getLogger("callrec.alerts")

# A phrase as lexeme sets, one per word; an empty set is a stop word (any one word there).
Terms = tuple[frozenset[str], ...]


@dataclass(frozen=True)
class SpokenWord:
    speaker: str  # caller | agent | mixed
    start_ms: int
    lexemes: frozenset[str]


@dataclass(frozen=True)
class Match:
    rule: str
    kind: str  # said | not_said
    phrase: str
    speaker: str | None
    offset_ms: int | None


def phrase_terms(words: Sequence[Iterable[str]]) -> Terms | None:
    """A phrase's words' lexemes as terms, stop words at either end dropped (as ``phraseto_tsquery`` does);
    None when nothing but stop words is left (such a phrase can never match)."""
    terms = [frozenset(w) for w in words]
    while terms and not terms[0]:
        terms.pop(0)
    while terms and not terms[-1]:
        terms.pop()
    return tuple(terms) or None


def _speakers(rule_speaker: str) -> tuple[str, ...]:
    if rule_speaker == "any":
        return ("caller", "agent", "mixed")
    return (rule_speaker, "mixed")  # a mono transcript cannot tell the parties apart


class Spoken:
    """A call's words per speaker, in time order, with where each lexeme occurs: built once per call,
    so matching costs about the occurrences of each phrase's first word, not rules x words (it runs in
    the runner's transaction, on the daemon's event loop)."""

    def __init__(self, words: Iterable[SpokenWord]) -> None:
        by: dict[str, list[SpokenWord]] = {}
        for w in words:
            by.setdefault(w.speaker, []).append(w)
        self.tracks = {speaker: sorted(track, key=lambda w: w.start_ms) for speaker, track in by.items()}
        self.index: dict[str, dict[str, list[int]]] = {}
        for speaker, track in self.tracks.items():
            where: dict[str, list[int]] = {}
            for i, w in enumerate(track):
                for lexeme in w.lexemes:
                    where.setdefault(lexeme, []).append(i)
            self.index[speaker] = where

    def speaks(self, speakers: tuple[str, ...]) -> bool:
        return any(self.tracks.get(s) for s in speakers)

    def first(self, terms: Terms, speaker: str) -> int | None:
        """The offset of the earliest place ``speaker`` says ``terms``, or None."""
        track = self.tracks.get(speaker)
        if not track:
            return None
        where = self.index[speaker]
        starts = sorted({i for lexeme in terms[0] for i in where.get(lexeme, ())})
        n = len(terms)
        for i in starts:
            if i + n <= len(track) and all(not t or t & track[i + k].lexemes for k, t in enumerate(terms)):
                return track[i].start_ms
        return None


def first_said(phrases: Mapping[str, Terms | None], spoken: Spoken,
               speakers: tuple[str, ...]) -> tuple[str, str, int] | None:
    """The earliest place any phrase is said by one of ``speakers``: (phrase, speaker, offset of its first
    word), or None."""
    best: tuple[str, str, int] | None = None
    for speaker in speakers:
        for phrase, terms in phrases.items():
            if not terms:
                continue
            at = spoken.first(terms, speaker)
            if at is not None and (best is None or at < best[2]):
                best = (phrase, speaker, at)
    return best


def decide(rule: AlertRule, phrases: Mapping[str, Terms | None],
           spoken: Spoken | Sequence[SpokenWord]) -> Match | None:
    """Whether ``rule`` raises an alert for a call whose words are ``spoken``; pure."""
    if not isinstance(spoken, Spoken):
        spoken = Spoken(spoken)
    speakers = _speakers(rule.speaker)
    mine = {p: phrases.get(p) for p in rule.phrases}
    hit = first_said(mine, spoken, speakers)
    limit = None if rule.within_s is None else rule.within_s * 1000
    in_time = hit is not None and (limit is None or hit[2] < limit)
    if rule.kind == "said":
        if hit is None or not in_time:
            return None
        return Match(rule.name, "said", hit[0], hit[1], hit[2])
    if in_time or not spoken.speaks(speakers):
        return None
    if hit is not None:  # said, but too late
        return Match(rule.name, "not_said", hit[0], rule.speaker, hit[2])
    return Match(rule.name, "not_said", " | ".join(rule.phrases), rule.speaker, None)


def rule_of(row: Mapping[str, Any]) -> AlertRule:
    """An ``alert_rules`` row as a rule (the table's checks are the config's)."""
    return AlertRule(name=row["name"], phrases=tuple(row["phrases"]), speaker=row["speaker"], kind=row["kind"],
                     within_s=row["within_s"])


class AlertMatcher:
    """The transcript runner's ``after_save`` callback: ``await matcher(conn, call_id)`` inside the
    transaction that saved the call's transcript."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._warned: set[str] = set()  # phrases of stop words only: logged once, not per transcript

    async def rules(self, conn: Conn) -> list[AlertRule]:
        """The config's rules, then the API's (a name in the file cannot be added through the API)."""
        own = list(self.settings.alerts.rules)
        names = {r.name for r in own}
        return own + [r for r in map(rule_of, await store.list_rules(conn)) if r.name not in names]

    async def __call__(self, conn: Conn, call_id: str) -> None:
        if not self.settings.alerts.enabled:
            return
        try:
            # A savepoint: a bug here must not cost the transcript the runner is saving.
            async with conn.transaction():
                await self._match(conn, call_id)
        except Exception as exc:
            if is_transient(exc):
                raise  # the database is away: the runner retries the job as a whole
            log.exception("alerts: matching call %s failed; its transcript is kept without alerts", call_id)

    async def _match(self, conn: Conn, call_id: str) -> list[Match]:
        rules = await self.rules(conn)
        if not rules:
            return []
        spoken = Spoken(SpokenWord(speaker, start, frozenset(lex))
                        for speaker, start, text, lex in await store.spoken_words(conn, call_id)
                        if any(c.isalnum() for c in text))  # punctuation alone is no word
        phrases = sorted({p for r in rules for p in r.phrases})
        split = [p.split() for p in phrases]
        flat = await store.lexemes(conn, [w for ws in split for w in ws])
        terms: dict[str, Terms | None] = {}
        at = 0
        for phrase, ws in zip(phrases, split, strict=True):
            terms[phrase] = phrase_terms(flat[at:at + len(ws)])
            at += len(ws)
            if terms[phrase] is None and phrase not in self._warned:
                self._warned.add(phrase)
                log.warning("alerts: phrase %r has only stop words and never matches", phrase)
        raised: list[Match] = []
        record = None
        for rule in rules:
            match = decide(rule, terms, spoken)
            if match is None:
                continue
            alert = await store.insert_alert(conn, rule=match.rule, call_id=call_id, kind=match.kind,
                                             phrase=match.phrase, speaker=match.speaker, offset_ms=match.offset_ms)
            if alert is None:
                continue  # the rule fired for this call before (an earlier transcript)
            if record is None:
                row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1::uuid", call_id)
                assert row is not None  # the alert's foreign key found it
                record = record_from_row(row)
            hooks = await queue_alert(conn, self.settings.hooks, alert, record)
            log.info("alert %d: rule %s (%s) on call %s%s", alert["id"], match.rule, match.kind, call_id,
                     f"; {hooks} hook job(s) queued" if hooks else "")
            raised.append(match)
        return raised
