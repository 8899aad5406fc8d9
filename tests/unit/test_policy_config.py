"""Policy precedence, language fallback and config validation (pure, no Asterisk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.settings import SECRETS

from callrec.calls.policy import CallFacts, decide, parse_args
from callrec.config.settings import (
    ConfigError,
    NoticeSettings,
    PolicyRule,
    PolicySettings,
    RecordingSettings,
    load_settings,
    parse_settings,
)
from callrec.display import safe_text

PROMPTS = {
    "en": {"notice", "notice-opt-out", "notice-opt-in", "not-recorded", "vip"},
    "ru": {"notice", "notice-opt-out", "notice-opt-in", "not-recorded"},
}


def policy(**kw: object) -> PolicySettings:
    rules = (
        PolicyRule(name="support-ru", did="7495*", mode="opt-out", language="ru", mixmonitor_options="b"),
        PolicyRule(name="vip", caller="+1555*", prompt="vip", mode="opt-in"),
        PolicyRule(name="sales", context="from-sales"),
    )
    return PolicySettings(rules=rules, **kw)  # type: ignore[arg-type]


def run(facts: CallFacts, pol: PolicySettings | None = None):
    return decide(pol or policy(), NoticeSettings(), RecordingSettings(mixmonitor_options=""), facts, PROMPTS)


def test_defaults_follow_channel_language() -> None:
    d = run(CallFacts(did="100", channel_language="ru"))
    assert (d.mode, d.language, d.prompt, d.rule) == ("notice", "ru", "notice", None)


def test_unknown_language_falls_back_to_default_and_regional_to_base() -> None:
    assert run(CallFacts(did="100", channel_language="de")).language == "en"
    assert run(CallFacts(did="100", channel_language="ru_RU")).language == "ru"
    assert run(CallFacts(did="100", channel_language="")).language == "en"


def test_first_matching_rule_wins() -> None:
    d = run(CallFacts(did="74951234567", caller="+15551234", channel_language="en"))
    assert (d.rule, d.mode, d.language, d.prompt, d.mixmonitor_options) == (
        "support-ru", "opt-out", "ru", "notice-opt-out", "b")
    d = run(CallFacts(did="100", caller="+15551234"))
    assert (d.rule, d.mode, d.prompt) == ("vip", "opt-in", "vip")
    assert run(CallFacts(did="100", context="from-sales")).rule == "sales"


def test_dialplan_arguments_override_rules() -> None:
    d = run(CallFacts(did="74951234567", args={"mode": "opt-in", "lang": "en"}))
    assert (d.rule, d.mode, d.language, d.prompt) == ("support-ru", "opt-in", "en", "notice-opt-in")
    d = run(CallFacts(did="100", args={"rule": "vip"}))
    assert d.rule == "vip"


def test_bad_arguments_are_ignored_with_a_warning() -> None:
    d = run(CallFacts(did="100", args={"mode": "record-everything", "rule": "nope"}))
    assert d.mode == "notice" and len(d.warnings) == 2
    args, warnings = parse_args(["mode=opt-out", "", "junk", " lang = ru ", "colour=red"])
    assert args == {"mode": "opt-out", "lang": "ru"} and len(warnings) == 2
    args, warnings = parse_args(["did=100", "context=from-trunk", "did=999", "mode=opt-in", "mode=notice"])
    assert args == {"did": "100", "context": "from-trunk", "mode": "opt-in"} and len(warnings) == 2


def test_missing_custom_prompt_falls_back_to_the_mode_default() -> None:
    d = run(CallFacts(did="100", caller="+1555", channel_language="ru"))  # vip prompt exists only in en
    assert (d.language, d.prompt) == ("en", "vip")
    d = run(CallFacts(did="100", args={"prompt": "nope"}))
    assert d.prompt == "notice" and d.warnings


def test_env_overrides_and_clear_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[asterisk]\nari_password = "file"\nami_password = "x"\n[notice]\ndecision_window = 2\n')
    s = load_settings(cfg, {"CALLREC_ASTERISK_ARI_PASSWORD": "env", "CALLREC_DATABASE_DSN": "postgresql:///x"})
    assert s.asterisk.ari_password == "env" and s.database.dsn == "postgresql:///x"
    assert s.notice.decision_window == 2.0


@pytest.mark.parametrize(("raw", "message"), [
    ({"asterisk": {"ari_url": "localhost:8088"}}, "asterisk.ari_url: expected an http:// or https:// URL"),
    ({"asterisk": {"ari_url": "http://u:p@h:8088"}}, "asterisk.ari_url: must not carry credentials"),
    ({"asterisk": {"ami_port": "x"}}, "asterisk.ami_port: expected a whole number"),
    ({"asterisk": {"colour": 1}}, "asterisk.colour: unknown key"),
    ({"notice": {"opt_out_key": "99"}}, "notice.opt_out_key: expected one DTMF key"),
    ({"notice": {"opt_in_key": "9"}}, "notice.opt_in_key: must differ"),
    ({"policy": {"mode": "always"}}, "policy.mode: expected one of notice, opt-out, opt-in"),
    ({"policy": {"rules": [{"name": "r", "mode": "x", "did": "1"}]}}, "policy.rules[0].mode"),
    ({"policy": {"rules": [{"name": "r"}]}}, "policy.rules[0]: a rule needs at least one of"),
    ({"recordings": {"mixmonitor_options": "b,/bin/sh"}}, "recordings.mixmonitor_options: unsupported"),
    ({"recordings": {"dir": "relative"}}, "recordings.dir: expected an absolute path"),
    ({"database": {"dsn": "mysql://x"}}, "database.dsn: expected a postgresql:// URL"),
    ({"database": {"read_dsn": "mysql://replica/x"}}, "database.read_dsn: expected a postgresql:// URL, or nothing"),
    ({"bogus": {}}, "bogus: unknown section"),
])
def test_bad_config_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, SECRETS)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_missing_password_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"^asterisk.ari_password: not set"):
        parse_settings({}, {})


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[asterisk\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, SECRETS)


def test_safe_text_escapes_terminal_controls_and_bidi() -> None:
    assert safe_text("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe_text("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert safe_text("Ivan 😀") == "Ivan 😀"
    assert safe_text("x" * 100, 10) == "x" * 9 + "…"
