"""[retention] settings: one line per bad key (from the parser and from `callrec retention run`, which
stops before it reaches the database), and the environment.  Retention itself: tests/e2e/test_retention.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.dataops_helpers import run_cli, write_config
from support.settings import SECRETS

from callrec.config.settings import ConfigError, parse_settings


@pytest.mark.parametrize(("retention", "message"), [
    ({"audio_days": -1}, "retention.audio_days: expected 0 (keep forever) to 36500 days, got -1"),
    ({"audio_days": 60, "metadata_days": 30}, "retention.audio_days: must be 1..metadata_days (30)"),
    ({"rules": {"typo": {"audio_days": 3}}}, "retention.rules.typo: no policy rule named 'typo'"),
    ({"batch_size": 0}, "retention.batch_size: expected 1-10000, got 0"),
    ({"audio_days": "ten"}, "retention.audio_days: expected a whole number, got 'ten'"),
])
def test_bad_retention_config_is_one_line(tmp_path: Path, retention: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"retention": retention}, SECRETS)
    assert str(err.value).startswith(message)
    cfg = write_config(tmp_path / "c.toml", "postgresql://x@127.0.0.1/x", tmp_path, retention=retention)
    result = run_cli(cfg, "retention", "run")
    assert result.returncode == 2 and result.stderr.startswith(f"callrec: config error: {message}")
    assert result.stderr.count("\n") == 1


def test_retention_settings_from_the_environment() -> None:
    s = parse_settings({"retention": {"audio_days": 90}},
                       {**SECRETS, "CALLREC_RETENTION_AUDIO_DAYS": "7", "CALLREC_RETENTION_ENABLED": "no",
                        "CALLREC_INTEGRITY_SIGNING_KEY": "/etc/callrec/k.pem"})
    assert (s.retention.audio_days, s.retention.enabled, s.integrity.signing_key) == (7, False, "/etc/callrec/k.pem")
    assert s.retention.active and s.retention.for_rule("anything") == (7, 0)
    assert not parse_settings({}, SECRETS).retention.active
