"""Keyword alerts on a real PostgreSQL: transcripts saved through store/transcripts.py, matched by
AlertMatcher in the saving transaction as the transcription runner does it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from support.opsapi import insert_call
from support.settings import make_settings

from callrec.analytics.alerts import AlertMatcher
from callrec.config.settings import Settings
from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
from callrec.store.transcripts import save_transcript

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
RULES = [
    # Word forms: the rule says "коммерческая тайна", the agent says "коммерческую тайну".
    {"name": "trade-secret", "phrases": ["коммерческая тайна", "confidential"]},
    {"name": "refund-caller", "phrases": ["refunds"], "speaker": "caller"},
    {"name": "agent-name", "phrases": ["меня зовут", "my name is"], "speaker": "agent", "kind": "not_said",
     "within_s": 30},
    {"name": "early-price", "phrases": ["цена"], "within_s": 10},
]


def track(speaker: str, channel: int, *lines: tuple[int, str]) -> Track:
    """A track of segments, each ``(start_ms, text)``, words 400 ms apart."""
    segments = []
    for start, text in lines:
        words = tuple(Word(" " + w, start + 400 * i, start + 400 * i + 300, 0.9) for i, w in enumerate(text.split()))
        segments.append(Segment(start, words[-1].end_ms, " " + text, words))
    return Track(speaker, channel, tuple(segments), tuple(Interval(s.start_ms, s.end_ms) for s in segments))


def transcript(caller: list[tuple[int, str]], agent: list[tuple[int, str]], duration_ms: int = 60000) -> Transcript:
    return Transcript((track("caller", 0, *caller), track("agent", 1, *agent)), duration_ms, "ru",
                      model="whisper-base@d01c3014")


async def save_and_match(conn: asyncpg.Connection, matcher: AlertMatcher, call_id: str, t: Transcript) -> None:
    """As the runner does it: the transcript and its alerts in one transaction."""
    async with conn.transaction():
        await save_transcript(conn, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)
        await matcher(conn, call_id)


async def alerts_of(conn: asyncpg.Connection, call_id: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM alerts WHERE call_id = $1::uuid", call_id)
    return {r["rule"]: dict(r) for r in rows}


def settings_with(dsn: str | None = None, **hooks: Any) -> Settings:
    return make_settings(None, dsn, alerts={"rules": RULES}, hooks=hooks)


async def test_rules_fire_once_per_call_with_word_forms_speaker_and_time(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    call = await insert_call(conn, None, started=T0, agent="201")
    t = transcript(caller=[(500, "Здравствуйте я хочу вернуть деньги"), (20000, "Мне нужны refunds")],
                   agent=[(3000, "Добрый день компания Ромашка"),
                          (40000, "Меня зовут Анна это коммерческую тайну не разглашаем")])
    await save_and_match(conn, matcher, call, t)
    got = await alerts_of(conn, call)
    assert set(got) == {"trade-secret", "refund-caller", "agent-name"}
    secret = got["trade-secret"]
    assert (secret["kind"], secret["phrase"], secret["speaker"]) == ("said", "коммерческая тайна", "agent")
    assert secret["offset_ms"] == 40000 + 4 * 400  # the first word of the phrase as said
    assert (got["refund-caller"]["speaker"], got["refund-caller"]["offset_ms"]) == ("caller", 20000 + 2 * 400)
    # The agent gave their name, but after 30 s: a script-compliance alert that says when ("меня" is a
    # stop word, so the match, as in search, starts at "зовут").
    name = got["agent-name"]
    assert (name["kind"], name["phrase"], name["speaker"], name["offset_ms"]) == (
        "not_said", "меня зовут", "agent", 40400)

    # The same transcript saved and matched again (a job run twice): no second alert, same ids.
    ids = {k: v["id"] for k, v in got.items()}
    await save_and_match(conn, matcher, call, t)
    again = await alerts_of(conn, call)
    assert {k: v["id"] for k, v in again.items()} == ids
    assert await conn.fetchval("SELECT count(*) FROM alerts") == 3


async def test_speaker_restriction_and_not_said_in_time(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    # The agent says "refunds" (not the caller), gives their name in time, and says the price early.
    call = await insert_call(conn, None, started=T0, agent="201")
    await save_and_match(conn, matcher, call, transcript(
        caller=[(1000, "Алло")], agent=[(2000, "Меня зовут Олег"), (5000, "Цены и refunds")]))
    got = await alerts_of(conn, call)
    assert set(got) == {"early-price"}  # цены ~ цена; refunds said by the agent only; name in time
    assert (got["early-price"]["speaker"], got["early-price"]["offset_ms"]) == ("agent", 5000)

    # The name never said at all: the alert names the phrases and no offset.
    absent = await insert_call(conn, None, started=T0 + timedelta(minutes=1), agent="201")
    await save_and_match(conn, matcher, absent, transcript(caller=[(500, "Алло")],
                                                           agent=[(1500, "Слушаю вас"), (15000, "Цена вопроса")]))
    got = await alerts_of(conn, absent)
    assert set(got) == {"agent-name"}  # the price came after 10 s
    assert (got["agent-name"]["phrase"], got["agent-name"]["offset_ms"]) == ("меня зовут | my name is", None)

    # An unanswered call (the agent said nothing): nobody to hold to the script.
    silent = await insert_call(conn, None, started=T0 + timedelta(minutes=2), agent="201")
    await save_and_match(conn, matcher, silent, transcript(caller=[(500, "Алло алло")], agent=[]))
    assert await alerts_of(conn, silent) == {}


async def test_a_rule_added_later_fires_on_a_new_transcript_and_a_config_name_wins(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    await conn.execute("INSERT INTO alert_rules (name, phrases, created_by) VALUES "
                       "('complaint', '{жалоба}', 'admin1'), ('trade-secret', '{скидка}', 'admin1')")
    call = await insert_call(conn, None, started=T0, agent="201")
    await save_and_match(conn, matcher, call, transcript(
        caller=[(700, "У меня жалобу примите и скидку")], agent=[(3000, "Меня зовут Анна")]))
    assert set(await alerts_of(conn, call)) == {"complaint"}  # "trade-secret" is the file's rule, not скидка
