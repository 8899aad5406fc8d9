"""``[alerts]`` and its ``[[alerts.rules]]``: keyword alert rules matched against every new transcript.

Kept apart from settings.py like the data-ops and speech sections; settings.py only hooks it in.  The same
checks serve rules added through the API (``check_rule``), so a rule the file refuses is refused there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callrec.config.fields import REQUIRED, ConfigError, Range, build, check_ranges, setting

__all__ = ["ALERT_KINDS", "ALERT_SPEAKERS", "AlertRule", "AlertSettings", "build_rule", "check_rule", "parse_alerts"]

ALERT_KINDS = ("said", "not_said")
ALERT_SPEAKERS = ("any", "caller", "agent")
MAX_PHRASES = 100
MAX_PHRASE_CHARS = 200
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WITHIN = Range(1, 86400, unit="seconds")


@dataclass(frozen=True)
class AlertRule:
    """One ``[[alerts.rules]]`` entry (or a rule added through the API)."""

    name: str = setting(REQUIRED, "unique; shown on each alert, `callrec alerts --rule NAME` and the API filter by it",
                        allowed="letters, digits, `_ . -`, at most 64", shown_default="—")
    phrases: tuple[str, ...] = setting(
        REQUIRED, "words or phrases; any one of them counts. Word forms match as in search (`коммерческая тайна` "
                  "finds `коммерческую тайну`), a phrase's words in a row", shown_default="—",
        allowed=f"1-{MAX_PHRASES} phrases of 1-{MAX_PHRASE_CHARS} characters with at least one word that is "
                "not a stop word")
    speaker: str = setting("any", "who must say it: on a mono recording every word is `mixed` and counts for "
                                  "either", choices=ALERT_SPEAKERS)
    kind: str = setting("said", "`said`: alert when a phrase is said; `not_said`: alert when none is (script "
                                "compliance, e.g. the agent did not give their name)", choices=ALERT_KINDS)
    within_s: int | None = setting(None, "only the first N seconds of the recording count (`not_said`: a phrase "
                                         "said later is too late)", range=_WITHIN, shown_default="the whole call")


@dataclass(frozen=True)
class AlertSettings:
    enabled: bool = setting(True, "match each new transcript against the rules (these and the ones added through "
                                  "the API) and raise alerts; `false`: none are raised")
    rules: tuple[AlertRule, ...] = setting((), "`[[alerts.rules]]` tables, below")


def check_rule(rule: AlertRule, prefix: str) -> None:
    """One rule's values; ``prefix`` names it in the message (``alerts.rules[0]``, or ``body`` in the API)."""
    if not _NAME_RE.match(rule.name):
        raise ConfigError(f"{prefix}.name: expected letters, digits, '_', '.', '-' (at most 64), got {rule.name!r}")
    if not 1 <= len(rule.phrases) <= MAX_PHRASES:
        raise ConfigError(f"{prefix}.phrases: expected 1-{MAX_PHRASES} phrases, got {len(rule.phrases)}")
    for phrase in rule.phrases:
        if not phrase.strip() or len(phrase) > MAX_PHRASE_CHARS or not re.search(r"\w", phrase):
            raise ConfigError(f"{prefix}.phrases: expected words of 1-{MAX_PHRASE_CHARS} characters, got {phrase!r}")
        if any(ord(c) < 32 for c in phrase):
            raise ConfigError(f"{prefix}.phrases: a phrase contains a control character: {phrase!r}")
    if rule.speaker not in ALERT_SPEAKERS:
        raise ConfigError(f"{prefix}.speaker: expected one of {', '.join(ALERT_SPEAKERS)}, got {rule.speaker!r}")
    if rule.kind not in ALERT_KINDS:
        raise ConfigError(f"{prefix}.kind: expected one of {', '.join(ALERT_KINDS)}, got {rule.kind!r}")
    check_ranges(rule, prefix)


def build_rule(prefix: str, entry: Mapping[str, Any]) -> AlertRule:
    """A rule from a TOML table or a JSON object; every problem is one ``key: problem`` line."""
    for key in ("name", "phrases"):
        if key not in entry:
            raise ConfigError(f"{prefix}.{key}: missing")
    values = dict(entry)
    if isinstance(values.get("phrases"), str):  # one phrase written without brackets
        values["phrases"] = [values["phrases"]]
    rule: AlertRule = build(AlertRule, prefix, values)
    check_rule(rule, prefix)
    return rule


def parse_alerts(table: Mapping[str, Any], environ: Mapping[str, str]) -> AlertSettings:
    """``[alerts]`` with its ``[[alerts.rules]]``; names unique."""
    values = {k: v for k, v in table.items() if k != "rules"}
    if "CALLREC_ALERTS_ENABLED" in environ:
        values["enabled"] = environ["CALLREC_ALERTS_ENABLED"]
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, Sequence) or isinstance(rules_raw, str):
        raise ConfigError("alerts.rules: expected a list of tables [[alerts.rules]]")
    rules: list[AlertRule] = []
    names: set[str] = set()
    for i, entry in enumerate(rules_raw):
        prefix = f"alerts.rules[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{prefix}: expected a table")
        rule = build_rule(prefix, entry)
        if rule.name in names:
            raise ConfigError(f"{prefix}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        rules.append(rule)
    settings: AlertSettings = build(AlertSettings, "alerts", {**values, "rules": tuple(rules)})
    return settings
