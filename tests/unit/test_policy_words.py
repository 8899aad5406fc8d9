"""Recording words, caller-vs-callee precedence, QA sampling, explain (pure: no Asterisk)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from support.settings import SECRETS

from callrec.calls.explain import explain, facts_from
from callrec.calls.policy import CallFacts, Decision, decide, resolve_words
from callrec.calls.session import CallSession, HandBack, PlayPrompt, Prompt
from callrec.config.settings import (
    ConfigError,
    NoticeSettings,
    PolicyRule,
    PolicySettings,
    RecordingSettings,
    parse_settings,
)
from callrec.store.record import CallRecord

PROMPTS = {
    "en": {"notice", "notice-opt-out", "notice-opt-in", "not-recorded", "trading"},
    "ru": {"notice", "notice-opt-out", "notice-opt-in", "not-recorded"},
}
WORDS = ("force", "yes", "dontcare", "no", "never")

# The documented precedence table (docs/policy.md): rows = caller side, columns = callee side.
#               force    yes      dontcare  no       never
TABLE = {
    "force":    ("force", "force", "force", "force", "never"),
    "yes":      ("force", "yes",   "yes",   "yes",   "never"),
    "dontcare": ("force", "yes",   "DEF",   "no",    "never"),
    "no":       ("force", "no",    "no",    "no",    "never"),
    "never":    ("force", "never", "never", "never", "never"),
}


def two_sided(caller_word: str, callee_word: str, **policy: object) -> PolicySettings:
    return PolicySettings(rules=(
        PolicyRule(name="from-caller", caller="5551*", record=caller_word),
        PolicyRule(name="to-callee", did="100", record=callee_word),
    ), **policy)  # type: ignore[arg-type]


def run(pol: PolicySettings, facts: CallFacts | None = None, draw=None, mixmonitor: str = "") -> Decision:
    facts = facts or CallFacts(did="100", caller="5551234")
    return decide(pol, NoticeSettings(), RecordingSettings(mixmonitor_options=mixmonitor), facts, PROMPTS, draw=draw)


@pytest.mark.parametrize("default", ["yes", "no"])
@pytest.mark.parametrize("caller_word", WORDS)
@pytest.mark.parametrize("callee_index", range(5))
def test_precedence_table(caller_word: str, callee_index: int, default: str) -> None:
    callee_word = WORDS[callee_index]
    expected = TABLE[caller_word][callee_index]
    if expected == "DEF":
        expected = default
    d = run(two_sided(caller_word, callee_word, record=default))
    assert d.word == expected, d.trail
    assert d.record is (expected in ("force", "yes"))
    assert d.forced is (expected == "force")
    assert "," not in d.reason
    # The rule that decided is named in the reason (or policy.record when none did).
    if caller_word == callee_word == "dontcare":
        assert d.reason == f"{default}: policy.record (no rule decided)"
    else:
        decided_by = resolve_words(caller_word, callee_word, default)[1]
        assert f"rule {'from-caller' if decided_by == 'caller' else 'to-callee'} ({decided_by} side)" in d.reason


def test_yes_and_no_first_set_wins_and_overrides_later_side_wins() -> None:
    assert resolve_words("yes", "no", "yes") == ("yes", "caller")
    assert resolve_words("no", "yes", "yes") == ("no", "caller")
    assert resolve_words("force", "never", "yes") == ("never", "callee")
    assert resolve_words("never", "force", "yes") == ("force", "callee")
    assert resolve_words("dontcare", "dontcare", "no") == ("no", "default")


def test_not_recorded_decision_plays_no_notice_and_says_why() -> None:
    d = run(two_sided("dontcare", "never"))
    assert (d.record, d.word, d.sampled) == (False, "never", None)
    assert d.reason == "never: rule to-callee (callee side)"
    assert d.trail[-1].startswith("outcome: NOT RECORDED")
    record = CallRecord(id="c1", door="ari", uniqueid="u1", started_at=datetime(2026, 11, 27, tzinfo=UTC))
    prompt = Prompt("notice", "en", "sound:/p/en/notice", "/p/en/notice.wav", "ab" * 32, 5.0)
    s = CallSession(record, d, prompt, opt_out_key="9", opt_in_key="1", decision_window=5, confirm=None,
                    recordings_dir="/rec")
    actions = s.start()
    assert not any(isinstance(a, PlayPrompt) for a in actions)
    assert actions == [HandBack({"CALLREC_CALL_ID": "c1", "CALLREC_CONSENT": "not_asked", "CALLREC_RECORDING": "",
                                 "CALLREC_POLICY": "never", "CALLREC_REASON": "never: rule to-callee (callee side)"})]
    r = s.record
    assert (r.consent, r.record_policy, r.recording_status, r.notice_prompt) == ("not_asked", "never", "none", None)
    assert r.consent_at == r.started_at and s.state.value == "in_dialplan"
    # A second pass through the Gosub (transfer) gets the same answer, still no notice.
    assert s.entered_again(r.started_at)[0].variables["CALLREC_CONSENT"] == "not_asked"


def test_force_turns_opt_out_and_opt_in_into_notice() -> None:
    for mode in ("opt-out", "opt-in"):
        pol = PolicySettings(mode=mode, rules=(PolicyRule(name="trading", queue="trading", record="force"),))
        d = run(pol, CallFacts(did="100", args={"queue": "trading"}))
        assert (d.word, d.forced, d.mode, d.prompt, d.record) == ("force", True, "notice", "notice", True)
        assert any(step.startswith(f"force: consent mode {mode} becomes notice") for step in d.trail)
        # A dialplan mode= cannot give the caller a key either.
        d = run(pol, CallFacts(did="100", args={"queue": "trading", "mode": "opt-out"}))
        assert d.mode == "notice"


def test_force_is_never_sampled_out() -> None:
    pol = PolicySettings(sample_percent=0, rules=(PolicyRule(name="f", did="100", record="force"),))
    d = run(pol, draw=lambda: 0.99)
    assert (d.record, d.sampled) == (True, None)


def test_sampling_applies_to_yes_with_the_deciding_rules_rate() -> None:
    pol = PolicySettings(sample_percent=50, rules=(PolicyRule(name="qa", did="100", record="yes", sample_percent=20),))
    kept = run(pol, draw=lambda: 0.1999)
    dropped = run(pol, draw=lambda: 0.2)
    assert (kept.record, kept.sampled, dropped.record, dropped.sampled) == (True, True, False, False)
    assert dropped.reason == "yes: rule qa (callee side); sampled out at 20%"
    assert dropped.word == "yes"
    other = run(pol, CallFacts(did="200"), draw=lambda: 0.3)  # no rule: policy.sample_percent = 50
    assert (other.record, other.sampled) == (True, True)
    nothing = run(PolicySettings(sample_percent=0), draw=lambda: 0.0)
    assert (nothing.record, nothing.sampled) == (False, False)

    def no_draw() -> float:
        raise AssertionError("100% needs no draw")

    assert run(PolicySettings(), draw=no_draw).sampled is None


def test_sampling_rate_within_tolerance_with_a_fixed_seed() -> None:
    pol = PolicySettings(sample_percent=30)
    gen = random.Random(20261128)
    decisions = [run(pol, CallFacts(did=str(i)), draw=gen.random) for i in range(10000)]
    kept = sum(d.record for d in decisions)
    assert 2800 <= kept <= 3200, kept  # 30% +- 2 points (about 4.4 standard deviations)
    assert all(d.sampled is d.record for d in decisions)
    # The same seed gives the same decisions.
    again = random.Random(20261128)
    assert [run(pol, CallFacts(did=str(i)), draw=again.random).record for i in range(200)] == \
        [d.record for d in decisions[:200]]


def test_side_defaults_and_explicit_side() -> None:
    assert PolicyRule(name="a", caller="1*").effective_side == "caller"
    assert PolicyRule(name="b", caller="1*", context="from-trunk").effective_side == "caller"
    assert PolicyRule(name="c", caller="1*", did="100").effective_side == "callee"
    assert PolicyRule(name="d", context="from-trunk").effective_side == "callee"
    assert PolicyRule(name="e", did="1", side="caller").effective_side == "caller"
    # Two callee rules: the first one speaks for the side, the second is not consulted.
    pol = PolicySettings(rules=(PolicyRule(name="first", did="1*", record="no"),
                                PolicyRule(name="second", did="100", record="force")))
    d = run(pol)
    assert d.word == "no"
    d = decide(pol, NoticeSettings(), RecordingSettings(), CallFacts(did="100"), PROMPTS, explain=True)
    assert d.word == "no" and any("rule second" in t and "already speaks for the callee side" in t for t in d.trail)


def test_extension_and_queue_come_from_arguments() -> None:
    pol = PolicySettings(rules=(PolicyRule(name="sales-q", queue="sales*", record="never"),
                                PolicyRule(name="ext-2xx", extension="2??", record="force", mode="opt-in")))
    assert run(pol, CallFacts(did="1", args={"queue": "sales-eu"})).word == "never"
    assert run(pol, CallFacts(did="1", args={"extension": "201"})).word == "force"
    assert run(pol, CallFacts(did="1", extension="201")).word == "force"
    assert run(pol, CallFacts(did="1", args={"extension": "2011"})).word == "yes"


def test_record_argument_replaces_the_callee_word_and_bad_values_warn() -> None:
    pol = two_sided("dontcare", "yes")
    d = run(pol, CallFacts(did="100", caller="5551", args={"record": "never"}))
    assert (d.word, d.record) == ("never", False)
    assert "dialplan argument" in d.reason
    d = run(pol, CallFacts(did="100", caller="5551", args={"record": "maybe"}))
    assert d.word == "yes" and any("record='maybe' ignored" in w for w in d.warnings)
    # The caller side's yes still beats a dialplan "no" (yes/no: caller first).
    d = run(two_sided("yes", "dontcare"), CallFacts(did="100", caller="5551", args={"record": "no"}))
    assert d.word == "yes"


def test_rule_argument_picks_the_rule_for_its_side() -> None:
    pol = PolicySettings(rules=(PolicyRule(name="vip", caller="+1555*", record="force"),
                                PolicyRule(name="quiet", did="999", record="never"),
                                PolicyRule(name="default-callee", did="*", record="yes")))
    d = run(pol, CallFacts(did="100", caller="+15550", args={"rule": "quiet"}))
    assert (d.word, d.rule) == ("never", "quiet")  # quiet replaces default-callee; never beats force (later)


def test_the_deciding_rule_supplies_the_notice_settings_and_recording_options() -> None:
    pol = PolicySettings(mode="opt-out", rules=(
        PolicyRule(name="caller-ru", caller="+7*", language="ru", mode="opt-in", record="dontcare"),
        PolicyRule(name="trading", did="100", record="yes", prompt="trading", mixmonitor_options="b",
                   stereo=True, bridged_only=True),
    ))
    d = run(pol, CallFacts(did="100", caller="+7495"), mixmonitor="B(30)")
    assert (d.rule, d.mode, d.prompt, d.mixmonitor_options, d.stereo, d.bridged_only) == (
        "trading", "opt-out", "trading", "b", True, True)
    # Nobody's word decides: the first matching rule in file order supplies them, as before words existed.
    pol = PolicySettings(rules=(PolicyRule(name="caller-ru", caller="+7*", language="ru", mode="opt-in"),
                                PolicyRule(name="plain", did="100")))
    d = run(pol, CallFacts(did="100", caller="+7495"))
    # stereo falls back to [recordings] stereo (off by default); bridged_only stays unset.
    assert (d.rule, d.mode, d.language, d.stereo, d.bridged_only) == ("caller-ru", "opt-in", "ru", False, None)


@pytest.mark.parametrize(("raw", "message"), [
    ({"policy": {"record": "dontcare"}}, "policy.record: expected one of force, yes, no, never"),
    ({"policy": {"sample_percent": 150}}, "policy.sample_percent: expected 0-100"),
    ({"policy": {"sample_seed": "x"}}, "policy.sample_seed: expected a whole number"),
    ({"policy": {"rules": [{"did": "1", "record": "always"}]}}, "policy.rules[0].record: expected one of"),
    ({"policy": {"rules": [{"did": "1", "side": "left"}]}}, "policy.rules[0].side: expected caller or callee"),
    ({"policy": {"rules": [{"did": "1", "sample_percent": -1}]}}, "policy.rules[0].sample_percent"),
    ({"policy": {"rules": [{"did": "1", "stereo": "maybe"}]}}, "policy.rules[0].stereo: expected true or false"),
    ({"policy": {"rules": [{"record": "no"}]}}, "policy.rules[0]: a rule needs at least one of"),
    ({"hooks": {"command": "/bin/true {path}"}}, "hooks.command: expected a list of strings"),
    ({"hooks": {"command": ["notify.sh"]}}, "hooks.command: the program must be an absolute path"),
    ({"hooks": {"command": ["/bin/x", "{caller_number}"]}}, "hooks.command: unknown placeholder {caller_number}"),
    ({"hooks": {"webhook_url": "ftp://x"}}, "hooks.webhook_url: expected an http"),
    ({"hooks": {"webhook_url": "https://u:secret@x/"}}, "hooks.webhook_url: must not carry credentials"),
    ({"hooks": {"webhook_auth": "Bearer t"}}, "hooks.webhook_auth: set, but hooks.webhook_url is empty"),
    ({"hooks": {"webhook_url": "http://x/", "webhook_auth": "a\nb"}}, "hooks.webhook_auth: must be one line"),
    ({"hooks": {"concurrency": 0}}, "hooks.concurrency: expected 1-64"),
    ({"hooks": {"retry_initial": 10, "retry_max": 5}}, "hooks.retry_max: must not be below"),
])
def test_bad_policy_and_hook_config_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, SECRETS)
    assert str(err.value).startswith(message), str(err.value)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_env_overrides_for_policy_and_hook_secrets() -> None:
    s = parse_settings({"hooks": {"webhook_url": "https://hooks.example/x"}},
                       {**SECRETS, "CALLREC_POLICY_SAMPLE_SEED": "7", "CALLREC_POLICY_RECORD": "no",
                        "CALLREC_HOOKS_WEBHOOK_AUTH": "Bearer abc"})
    assert (s.policy.sample_seed, s.policy.record, s.hooks.webhook_auth) == (7, "no", "Bearer abc")


def test_explain_reads_like_a_decision_trail() -> None:
    s = parse_settings({"policy": {"mode": "opt-out", "rules": [
        {"name": "legal-never", "caller": "+49*", "record": "never"},
        {"name": "trading", "queue": "trading", "record": "force"},
        {"name": "support", "did": "800*", "record": "yes", "sample_percent": 20},
    ]}}, SECRETS)
    facts, warnings = facts_from(caller="+4930", did="8001", args=["queue=trading"])
    d, text = explain(s, facts, PROMPTS, warnings)
    assert d.word == "force" and d.mode == "notice"
    assert "rule legal-never (caller side; caller=+49*): matches; caller side says never" in text
    assert "rule support (callee side; did=800*): matches, but rule trading already speaks" in text
    assert "decided by the callee side: force (both sides override" in text
    assert "force: consent mode opt-out becomes notice" in text
    assert "CALLREC_POLICY=force" in text
    facts, _ = facts_from(caller="5551", did="8001")
    d, text = explain(s, facts, PROMPTS)
    assert "20% of these calls are recorded" in text and "(when kept by sampling)" in text
    facts, _ = facts_from(caller="+49 \x1b[2J", did="1")
    d, text = explain(s, facts, None)
    assert "\x1b" not in text and "NOT RECORDED" in text and "prompts not readable" in text
