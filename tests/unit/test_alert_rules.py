"""Keyword alerts: the pure decision (callrec/analytics/alerts.py) and the [alerts] config checks."""

from __future__ import annotations

import pytest

from callrec.analytics.alerts import Match, SpokenWord, decide, phrase_terms
from callrec.config import ConfigError
from callrec.config.alerts import AlertRule
from callrec.config.settings import parse_settings

BASE = {"asterisk": {"ari_password": "x", "ami_password": "y"}}


def words(speaker: str, *items: tuple[int, str]) -> list[SpokenWord]:
    """Words with lexemes given directly (stemming itself is PostgreSQL's, tested end to end)."""
    return [SpokenWord(speaker, start, frozenset(lex.split("|")) if lex else frozenset()) for start, lex in items]


TERMS = {
    "коммерческая тайна": phrase_terms([["коммерческ"], ["тайн"]]),
    "меня зовут": phrase_terms([[], ["зовут"]]),  # "меня" is a stop word: dropped at the start
    "refund": phrase_terms([["refund"]]),
    "не так": phrase_terms([[], []]),
}


def rule(**kw: object) -> AlertRule:
    values: dict[str, object] = {"name": "r", "phrases": ("коммерческая тайна",), **kw}
    return AlertRule(**values)  # type: ignore[arg-type]


def test_phrase_terms_drop_stop_words_at_the_ends_and_keep_gaps() -> None:
    assert phrase_terms([[], ["a"], [], ["b"], []]) == (frozenset({"a"}), frozenset(), frozenset({"b"}))
    assert phrase_terms([[], []]) is None


def test_said_earliest_match_with_speaker_and_offset() -> None:
    call = (words("caller", (500, "это"), (900, "коммерческ"), (1300, "тайн"))
            + words("agent", (200, "коммерческ"), (600, "тайн|тайна")))
    assert decide(rule(), TERMS, call) == Match("r", "said", "коммерческая тайна", "agent", 200)
    assert decide(rule(speaker="caller"), TERMS, call) == Match("r", "said", "коммерческая тайна", "caller", 900)


def test_phrase_words_must_follow_each_other_in_one_speakers_words() -> None:
    apart = words("agent", (0, "коммерческ"), (400, "условн"), (800, "тайн"))
    assert decide(rule(), TERMS, apart) is None
    across = words("agent", (0, "коммерческ")) + words("caller", (300, "тайн"))
    assert decide(rule(), TERMS, across) is None
    # A gap word inside a phrase (a stop word) stands for any one word.
    gap = {"x": phrase_terms([["a"], [], ["b"]])}
    assert decide(AlertRule("g", ("x",)), gap, words("agent", (0, "a"), (1, "z"), (2, "b"))) is not None
    assert decide(AlertRule("g", ("x",)), gap, words("agent", (0, "a"), (2, "b"))) is None


def test_a_mono_transcript_counts_for_either_party() -> None:
    mono = words("mixed", (3000, "коммерческ"), (3400, "тайн"))
    assert decide(rule(speaker="agent"), TERMS, mono) == Match("r", "said", "коммерческая тайна", "mixed", 3000)


def test_said_within_seconds() -> None:
    late = words("agent", (31000, "коммерческ"), (31400, "тайн"))
    assert decide(rule(within_s=30), TERMS, late) is None
    assert decide(rule(within_s=32), TERMS, late) is not None


def test_not_said_within_seconds_script_compliance() -> None:
    r = AlertRule("greeting", ("меня зовут", "refund"), speaker="agent", kind="not_said", within_s=30)
    in_time = words("agent", (1000, ""), (1400, "зовут"), (1800, "ан"))
    assert decide(r, TERMS, in_time) is None
    absent = words("agent", (1000, "добр"), (1400, "ден"))
    assert decide(r, TERMS, absent) == Match("greeting", "not_said", "меня зовут | refund", "agent", None)
    too_late = words("agent", (45000, "зовут"))
    assert decide(r, TERMS, too_late) == Match("greeting", "not_said", "меня зовут", "agent", 45000)
    # Said by the caller only: the agent still did not say it.
    assert decide(r, TERMS, words("caller", (100, "зовут")) + absent) is not None
    # The agent said nothing at all (unanswered, one-sided): nobody to hold to the script.
    assert decide(r, TERMS, words("caller", (100, "алл"))) is None
    assert decide(r, TERMS, []) is None


def test_a_phrase_of_stop_words_never_matches() -> None:
    assert decide(AlertRule("n", ("не так",)), TERMS, words("agent", (0, ""), (1, ""))) is None


def test_config_rules_and_their_errors() -> None:
    s = parse_settings({**BASE, "alerts": {"rules": [
        {"name": "trade-secret", "phrases": ["коммерческая тайна", "confidential"]},
        {"name": "greeting", "phrases": "меня зовут", "speaker": "agent", "kind": "not_said", "within_s": 30}]}}, {})
    assert [r.name for r in s.alerts.rules] == ["trade-secret", "greeting"]
    assert s.alerts.rules[1].phrases == ("меня зовут",) and s.alerts.rules[1].within_s == 30
    assert s.alerts.enabled is True


@pytest.mark.parametrize(("alerts", "message"), [
    ({"rules": [{"name": "a"}]}, "alerts.rules[0].phrases: missing"),
    ({"rules": [{"phrases": ["x"]}]}, "alerts.rules[0].name: missing"),
    ({"rules": [{"name": "a", "phrases": []}]}, "alerts.rules[0].phrases: expected 1-100 phrases, got 0"),
    ({"rules": [{"name": "a", "phrases": ["  "]}]}, "alerts.rules[0].phrases: expected words"),
    ({"rules": [{"name": "a", "phrases": [3]}]}, "alerts.rules[0].phrases: expected a list of strings"),
    ({"rules": [{"name": "a", "phrases": ["x"], "speaker": "boss"}]}, "alerts.rules[0].speaker: expected one of"),
    ({"rules": [{"name": "a", "phrases": ["x"], "kind": "shouted"}]}, "alerts.rules[0].kind: expected one of"),
    ({"rules": [{"name": "a", "phrases": ["x"], "within_s": 0}]}, "alerts.rules[0].within_s: expected 1-86400"),
    ({"rules": [{"name": "a", "phrases": ["x"], "within_s": 1.5}]}, "alerts.rules[0].within_s: expected a whole"),
    ({"rules": [{"name": "a b", "phrases": ["x"]}]}, "alerts.rules[0].name: expected letters"),
    ({"rules": [{"name": "a", "phrases": ["x"]}, {"name": "a", "phrases": ["y"]}]},
     "alerts.rules[1].name: duplicate rule name 'a'"),
    ({"rules": [{"name": "a", "phrases": ["x"], "words": 1}]}, "alerts.rules[0].words: unknown key"),
    ({"rules": {"name": "a"}}, "alerts.rules: expected a list of tables"),
    ({"enabled": "maybe"}, "alerts.enabled: expected true or false"),
    ({"colour": 1}, "alerts.colour: unknown key"),
])
def test_config_errors_name_the_key(alerts: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, "alerts": alerts}, {})
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("hooks", "message"), [
    ({"alert_webhook_url": "ftp://x"}, "hooks.alert_webhook_url: expected an http:// or https:// URL"),
    ({"alert_webhook_url": "http://u:p@x/"}, "hooks.alert_webhook_url: must not carry credentials"),
    ({"alert_command": ["notify"]}, "hooks.alert_command: the program must be an absolute path"),
    ({"alert_command": ["/bin/echo", "{path}"]}, "hooks.alert_command: unknown placeholder {path}"),
])
def test_alert_hook_errors(hooks: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, "hooks": hooks}, {})
    assert str(err.value).startswith(message), str(err.value)
    s = parse_settings({**BASE, "hooks": {"alert_webhook_url": "http://127.0.0.1:9/alerts", "webhook_hmac_key": "k",
                                          "alert_command": ["/bin/echo", "{rule}", "{alert_id}"]}}, {})
    assert s.hooks.alert_command == ("/bin/echo", "{rule}", "{alert_id}")


def test_an_alert_hook_payload_argv_and_environment() -> None:
    from datetime import UTC, datetime

    from callrec.hooks import alert_payload, command_argv, hook_environment
    from callrec.store.record import CallRecord

    record = CallRecord(id="7d3e1c7a-0000-4000-8000-000000000001", door="ari", uniqueid="1.2",
                        started_at=datetime(2026, 12, 1, 9, 59, tzinfo=UTC),
                        caller_number="+4930111", caller_name="{rule} $(x)", recording_sha256="ab" * 32)
    alert = {"id": 17, "rule": "trade-secret", "kind": "said", "phrase": "коммерческая тайна", "speaker": "agent",
             "offset_ms": 41600, "created_at": datetime(2026, 12, 1, 10, tzinfo=UTC)}
    payload = alert_payload(alert, record)
    assert payload["event"] == "alert.matched" and payload["call_id"] == record.id
    assert payload["alert"] == {**alert, "created_at": "2026-12-01T10:00:00+00:00"}
    assert payload["call"]["caller_name"] == "{rule} $(x)"  # caller data: verbatim, never expanded
    assert set(payload) == {"event", "call_id", "alert", "call", "recording"}
    argv = command_argv(("/usr/local/bin/notify", "--rule={rule}", "{alert_id}", "{call_id}", "{kind}", "{path}"),
                        payload)
    assert argv == ["/usr/local/bin/notify", "--rule=trade-secret", "17", record.id, "said", "{path}"]
    env = hook_environment(payload, 2)
    assert (env["CALLREC_EVENT"], env["CALLREC_ALERT_ID"], env["CALLREC_CALL_ID"], env["CALLREC_HOOK_ATTEMPT"]) == (
        "alert.matched", "17", record.id, "2")
    assert "CALLREC_RECORDING" not in env


def test_one_spoken_index_serves_every_rule_and_finds_the_first_full_match() -> None:
    from callrec.analytics.alerts import Spoken

    # "коммерческ" said 3000 times, "тайн" once, right after the last one.
    track = [(i * 300, "коммерческ") for i in range(3000)] + [(3000 * 300, "тайн")]
    spoken = Spoken(words("agent", *track))
    rules = [rule(name=f"r{i}") for i in range(50)]
    assert {decide(r, TERMS, spoken) for r in rules} == {
        *(Match(f"r{i}", "said", "коммерческая тайна", "agent", 2999 * 300) for i in range(50))}
