"""``[retention]`` and ``[integrity]``: retention days (default and per policy rule), the signing key.

Kept apart from settings.py so the data-ops settings stay in one place; settings.py only hooks them in.
Both modules take their shared helpers from fields.py, so neither imports the other's insides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callrec.config.fields import REQUIRED, ConfigError, Range, build, check_ranges, setting

__all__ = ["MAX_DAYS", "IntegritySettings", "RetentionRule", "RetentionSettings", "check_integrity",
           "parse_retention"]

MAX_DAYS = 365 * 100
_DAYS = Range(0, MAX_DAYS, unit="days", zero="keep forever")


@dataclass(frozen=True)
class RetentionRule:
    """Retention for calls whose ``policy_rule`` is ``rule``.  ``None``: inherit the default."""

    rule: str = setting(REQUIRED, "the `[[policy.rules]]` name; a name no policy rule has is a config error",
                        shown_default="—")
    audio_days: int | None = setting(None, "`audio_days` for this rule's calls", range=_DAYS,
                                     shown_default="`[retention]`'s")
    metadata_days: int | None = setting(None, "`metadata_days` for this rule's calls", range=_DAYS,
                                        shown_default="`[retention]`'s")


@dataclass(frozen=True)
class RetentionSettings:
    audio_days: int = setting(0, "days after a call's start until its recording is deleted", range=_DAYS)
    metadata_days: int = setting(
        0, "days after a call's start until the call is anonymized (its audio too). "
           "When set, `audio_days` must be 1…`metadata_days`: audio cannot outlive its row", range=_DAYS)
    enabled: bool = setting(True, "run the job in `callrec serve` (when any days are set); "
                                  "`false`: only `callrec retention run` deletes")
    interval: float = setting(3600.0, "seconds between the daemon's passes; the first pass runs at start",
                              range=Range(1, 7 * 86400, unit="seconds"))
    # Calls per transaction; the job yields between batches so calls never wait on it.
    batch_size: int = setting(200, "calls per transaction", range=Range(1, 10000))
    rules: tuple[RetentionRule, ...] = setting((), 'per policy rule: `[retention.rules."NAME"]` tables, below')

    def for_rule(self, rule: str | None) -> tuple[int, int]:
        """(audio_days, metadata_days) for a call that matched policy rule ``rule``."""
        for r in self.rules:
            if r.rule == rule:
                return (self.audio_days if r.audio_days is None else r.audio_days,
                        self.metadata_days if r.metadata_days is None else r.metadata_days)
        return self.audio_days, self.metadata_days

    @property
    def active(self) -> bool:
        """Anything to delete at all?"""
        return any(days > 0 for days in (self.audio_days, self.metadata_days,
                                         *(r.audio_days or 0 for r in self.rules),
                                         *(r.metadata_days or 0 for r in self.rules)))


@dataclass(frozen=True)
class IntegritySettings:
    signing_key: str = setting(
        "", "the Ed25519 private key (PKCS#8 PEM, mode 600) that signs evidence-export manifests; "
            "`callrec keys generate` makes it", allowed="an absolute path, or empty")
    evidence_max_bytes: int = setting(
        2 * 1024**3, "the most audio one evidence export (API or `callrec export`) may carry: a selection whose "
                     "recordings add up to more is refused before any audio is read (the API's 413); the API "
                     "stages the zip in one temporary file of about this size",
        range=Range(1024**2, 1024**4, unit="bytes"))


# Every scalar key has its CALLREC_RETENTION_<KEY>; rules live only in the file.
RETENTION_ENV_KEYS = tuple(f.name for f in dataclasses.fields(RetentionSettings) if f.name != "rules")
_RULE_DAYS = ("audio_days", "metadata_days")


def parse_retention(table: Mapping[str, Any], environ: Mapping[str, str],
                    policy_rule_names: set[str]) -> RetentionSettings:
    """``[retention]`` and its ``[retention.rules."NAME"]`` tables, checked against the policy rule names."""
    values = {k: v for k, v in table.items() if k != "rules"}
    for key in RETENTION_ENV_KEYS:
        env_key = f"CALLREC_RETENTION_{key.upper()}"
        if env_key in environ:
            values[key] = environ[env_key]
    rules_raw = table.get("rules", {})
    if not isinstance(rules_raw, Mapping):
        raise ConfigError('retention.rules: expected tables like [retention.rules."rule-name"]')
    rules = []
    for name, entry in rules_raw.items():
        prefix = f"retention.rules.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{prefix}: expected a table with audio_days and/or metadata_days")
        if name not in policy_rule_names:
            # A typo here would silently fall back to the default and could delete too early.
            known = ", ".join(sorted(policy_rule_names)) or "none"
            raise ConfigError(f"{prefix}: no policy rule named {name!r} (policy rules: {known})")
        for key in entry:
            if key not in _RULE_DAYS:
                raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(_RULE_DAYS)})")
        rule = build(RetentionRule, prefix, {**entry, "rule": name})
        check_ranges(rule, prefix)
        rules.append(rule)
    s = build(RetentionSettings, "retention", {**values, "rules": tuple(rules)})
    check_ranges(s, "retention")
    _check_order("retention", s.audio_days, s.metadata_days)
    for r in rules:
        audio, meta = s.for_rule(r.rule)
        _check_order(f"retention.rules.{r.rule}", audio, meta)
    return s


def _check_order(prefix: str, audio: int, meta: int) -> None:
    # Anonymizing a row also deletes its audio, so audio kept longer than the row is a contradiction.
    if meta and (audio == 0 or audio > meta):
        raise ConfigError(f"{prefix}.audio_days: must be 1..metadata_days ({meta}) when metadata_days is set, "
                          f"got {audio}")


def check_integrity(s: IntegritySettings) -> None:
    """The signing key, when set, is an absolute path (the daemon's working folder is not the admin's)."""
    if s.signing_key and not s.signing_key.startswith("/"):
        raise ConfigError(f"integrity.signing_key: expected an absolute path, got {s.signing_key!r}")
    check_ranges(s, "integrity")
