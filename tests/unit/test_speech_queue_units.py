"""The transcription queue's pure parts: backoff, the call's language, policy selection, the backlog policy,
configured redaction patterns and their settings.  The queue in PostgreSQL: tests/e2e/test_speech_jobs.py; with
real calls and workers: tests/e2e/test_speech_queue_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest
from support.settings import SECRETS

from callrec.analytics.queue import (
    MAX_BACKOFF,
    Redactor,
    backlog_skip,
    backoff,
    job_language,
    policy_skip,
    selected_rules,
)
from callrec.config.settings import ConfigError, Settings, parse_settings
from callrec.speech.transcript import Segment, Track, Transcript, Word

HOUR_MS = 3_600_000


def settings(speech: dict[str, Any] | None = None, rules: list[dict[str, Any]] | None = None) -> Settings:
    raw: dict[str, Any] = {"speech": speech or {}}
    if rules is not None:
        raw["policy"] = {"rules": rules}
    return parse_settings(raw, SECRETS)


def test_backoff_doubles_from_the_retry_delay_and_stops_at_an_hour() -> None:
    assert [backoff(n, 60) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff(30, 60) == MAX_BACKOFF == 3600
    assert backoff(0, 5) == 5  # a job never tried counts as the first try


@pytest.mark.parametrize(("call", "default", "expected"), [
    ("ru", "auto", "ru"), ("en", "ru", "en"), ("ru_RU", "auto", "ru"), ("EN-gb", "auto", "en"),
    ("de", "auto", None), ("de", "ru", "ru"), (None, "en", "en"), (None, "auto", None), ("", "auto", None),
])
def test_the_language_comes_from_the_call_row_else_the_setting(call: str | None, default: str,
                                                                expected: str | None) -> None:
    assert job_language(call, default) == expected


RULES = [{"name": "sales", "did": "800*", "transcribe": True},
         {"name": "hr", "did": "900*", "transcribe": False},
         {"name": "plain", "did": "700*"}]


def test_transcribe_all_queues_every_call_but_a_rule_that_says_false() -> None:
    s = settings({"transcribe": "all"}, RULES)
    assert policy_skip(s, "sales") is None and policy_skip(s, "plain") is None and policy_skip(s, None) is None
    assert policy_skip(s, "hr") == "policy rule hr: transcribe = false"
    assert selected_rules(s) == (None, ["hr"])


def test_transcribe_rules_queues_only_calls_whose_rule_says_true() -> None:
    s = settings({"transcribe": "rules"}, RULES)
    assert policy_skip(s, "sales") is None
    for rule in ("hr", "plain", None):
        assert "[speech] transcribe = rules" in (policy_skip(s, rule) or "")
    assert selected_rules(s) == (["sales"], [])


def test_transcribe_none_queues_nothing() -> None:
    s = settings({"transcribe": "none"}, RULES)
    assert all(policy_skip(s, r) == "[speech] transcribe = none" for r in ("sales", "plain", None))


def test_under_the_backlog_cap_everything_is_queued() -> None:
    assert backlog_skip(0, HOUR_MS, 0, 10, 0.99) is None  # no cap
    assert backlog_skip(HOUR_MS, HOUR_MS, 2, 10, 0.99) is None  # 2 h waiting with this one: at the cap
    assert backlog_skip(0, 10 * HOUR_MS, 0, 0, 0.99) is None


def test_over_the_backlog_cap_the_configured_share_is_kept_and_the_rest_skipped_with_the_reason() -> None:
    draws = [i / 1000 for i in range(1000)]
    kept = [d for d in draws if backlog_skip(5 * HOUR_MS, HOUR_MS, 4, 10, d) is None]
    assert len(kept) == 100
    reason = backlog_skip(5 * HOUR_MS, HOUR_MS, 4, 10, 0.5)
    assert reason is not None and reason.startswith("backlog: 5.0 h of audio waiting, over [speech] backlog_hours = 4")
    assert all(backlog_skip(5 * HOUR_MS, 0, 4, 0, d) for d in draws)  # keep 0 %: nothing
    assert not any(backlog_skip(5 * HOUR_MS, 0, 4, 100, d) for d in draws)  # keep 100 %: everything


def transcript(*texts: str) -> Transcript:
    words = tuple(Word(t, 1000 + i * 300, 1250 + i * 300, 0.9) for i, t in enumerate(texts))
    seg = Segment(words[0].start_ms, words[-1].end_ms, "".join(texts), words)
    return Transcript((Track("mixed", 0, (seg,), ()),), 5000, "en")


def test_configured_patterns_mask_every_word_a_match_touches_and_keep_the_times() -> None:
    redact = Redactor([r"\b[A-Z]{2}\d{6}\b", r"secret word"])
    before = transcript(" my", " passport", " is", " AB123456,", " the", " secret", " word", " is", " fine")
    after = redact(before)
    words = after.tracks[0].segments[0].words
    assert [w.text for w in words] == [" my", " passport", " is", " ****", " the", " ****", " ****", " is",
                                       " fine"]
    assert [w.start_ms for w in words] == [w.start_ms for w in before.tracks[0].segments[0].words]
    assert after.tracks[0].segments[0].text == "".join(w.text for w in words)
    assert after.redacted == 2


def test_card_numbers_are_masked_with_or_without_patterns() -> None:
    for redact in (Redactor([]), Redactor([r"zzz"])):
        after = redact(transcript(" card", " 4111", " 1111", " 1111", " 1111", " thanks"))
        assert [w.text for _, w in after.words()] == [" card", " ****", " ****", " ****", " ****", " thanks"]
        assert after.redacted == 1


def test_no_match_leaves_the_transcript_as_it_was() -> None:
    before = transcript(" hello", " there")
    assert Redactor([r"\d{9}"])(before) == before


@pytest.mark.parametrize(("speech", "message"), [
    ({"redact_patterns": ["(unclosed"]}, "speech.redact_patterns[0]: not a valid regular expression"),
    ({"redact_patterns": ["ok", "a{2"]}, None),
    ({"redact_patterns": ["ok", "[z-a]"]}, "speech.redact_patterns[1]: not a valid regular expression"),
    ({"redact_patterns": ["x*"]}, "speech.redact_patterns[0]: matches the empty string"),
    ({"redact_patterns": [""]}, "speech.redact_patterns[0]: expected a non-empty regular expression"),
    ({"redact_patterns": "\\d+"}, "speech.redact_patterns: expected"),
    ({"transcribe": "some"}, "speech.transcribe: expected one of all, rules, none, got 'some'"),
    ({"lease": 5}, "speech.lease: expected 10-3600"),
    ({"max_attempts": 0}, "speech.max_attempts: expected 1-100"),
    ({"backlog_keep_percent": 120}, "speech.backlog_keep_percent: expected 0-100"),
    ({"backlog_hours": -1}, "speech.backlog_hours: expected"),
])
def test_bad_queue_settings_are_one_line_naming_the_key(speech: dict[str, Any], message: str | None) -> None:
    if message is None:  # "a{2" is a literal in Python's syntax: accepted
        assert settings(speech).speech.redact_patterns == tuple(speech["redact_patterns"])
        return
    with pytest.raises(ConfigError) as err:
        settings(speech)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_a_rule_word_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        settings({}, [{"name": "x", "did": "1*", "transcribe": "maybe"}])
    assert str(err.value).startswith("policy.rules[0].transcribe:") and "\n" not in str(err.value)
