"""``[retention]`` and ``[integrity]``: retention days (default and per policy rule), the signing key.

Kept apart from config.py so the data-ops settings stay in one place; config.py only hooks them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_MAX_DAYS = 365 * 100


@dataclass(frozen=True)
class RetentionRule:
    """Retention for calls whose ``policy_rule`` is ``rule``.  ``None``: inherit the default."""

    rule: str
    audio_days: int | None = None
    metadata_days: int | None = None


@dataclass(frozen=True)
class RetentionSettings:
    # Days after a call's start before its audio is deleted / its row anonymized.  0 = keep forever.
    audio_days: int = 0
    metadata_days: int = 0
    # The daemon runs the job every `interval` seconds (when any days are set and enabled).
    enabled: bool = True
    interval: float = 3600.0
    # Calls per transaction; the job yields between batches so calls never wait on it.
    batch_size: int = 200
    rules: tuple[RetentionRule, ...] = ()

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
    # Ed25519 private key (PEM, PKCS#8) that signs export manifests; `callrec keys generate` makes it.
    signing_key: str = ""


_RETENTION_SCALARS = ("audio_days", "metadata_days", "enabled", "interval", "batch_size")


def parse_retention(table: Mapping[str, Any], environ: Mapping[str, str],
                    policy_rule_names: set[str]) -> RetentionSettings:
    from callrec.config.settings import ConfigError, _build, _coerce  # late: config imports this module

    values = {k: v for k, v in table.items() if k != "rules"}
    for key in _RETENTION_SCALARS:
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
        days: dict[str, int] = {}
        for key, value in entry.items():
            if key not in ("audio_days", "metadata_days"):
                raise ConfigError(f"{prefix}.{key}: unknown key (known: audio_days, metadata_days)")
            days[key] = _coerce(f"{prefix}.{key}", "int", value)
            _check_days(f"{prefix}.{key}", days[key])
        rules.append(RetentionRule(rule=name, **days))
    s = _build(RetentionSettings, "retention", {**values, "rules": tuple(rules)})
    _check_days("retention.audio_days", s.audio_days)
    _check_days("retention.metadata_days", s.metadata_days)
    if not 1 <= s.interval <= 7 * 86400:
        raise ConfigError(f"retention.interval: expected 1-604800 seconds, got {s.interval:g}")
    if not 1 <= s.batch_size <= 10000:
        raise ConfigError(f"retention.batch_size: expected 1-10000, got {s.batch_size}")
    _check_order("retention", s.audio_days, s.metadata_days)
    for r in rules:
        audio, meta = s.for_rule(r.rule)
        _check_order(f"retention.rules.{r.rule}", audio, meta)
    return s


def _check_days(key: str, value: int | None) -> None:
    from callrec.config.settings import ConfigError

    if value is not None and not 0 <= value <= _MAX_DAYS:
        raise ConfigError(f"{key}: expected 0 (keep forever) to {_MAX_DAYS} days, got {value}")


def _check_order(prefix: str, audio: int, meta: int) -> None:
    # Anonymizing a row also deletes its audio, so audio kept longer than the row is a contradiction.
    from callrec.config.settings import ConfigError

    if meta and (audio == 0 or audio > meta):
        raise ConfigError(f"{prefix}.audio_days: must be 1..metadata_days ({meta}) when metadata_days is set, "
                          f"got {audio}")


def check_integrity(s: IntegritySettings) -> None:
    from callrec.config.settings import ConfigError

    if s.signing_key and not s.signing_key.startswith("/"):
        raise ConfigError(f"integrity.signing_key: expected an absolute path, got {s.signing_key!r}")

