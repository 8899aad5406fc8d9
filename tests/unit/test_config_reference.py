"""The generated configuration reference matches the code, and the validation enforces each documented range."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callrec.config import reference
from callrec.config.alerts import AlertRule
from callrec.config.dataops import RetentionRule
from callrec.config.fields import ConfigError, Range, doc_of, number
from callrec.config.settings import SECTIONS, PolicyRule, Settings, parse_settings

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"
SECRETS = {"asterisk": {"ari_password": "ari-secret", "ami_password": "ami-secret"}}


def test_the_page_is_what_the_code_generates() -> None:
    assert PAGE.read_text() == reference.render(), (
        "docs/configuration.md differs from the settings classes: "
        "run `callrec config reference > docs/configuration.md`")


def test_the_cli_prints_the_page_without_a_config_file() -> None:
    out = subprocess.run([sys.executable, "-m", "callrec", "config", "reference"], capture_output=True, text=True,
                         timeout=60, cwd="/", check=True)
    assert out.stdout == PAGE.read_text()


def _page_rows() -> dict[str, dict[str, list[str]]]:
    """{section heading: {key: [type, default, allowed, meaning]}} as the page shows them."""
    rows: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in PAGE.read_text().splitlines():
        if m := re.fullmatch(r"## `(.+)`", line):
            section = m.group(1)
            rows[section] = {}
        elif section and (m := re.fullmatch(r"\| `(\w+)` \| (.*) \|", line)):
            rows[section][m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return rows


def test_every_key_default_and_range_of_the_code_is_on_the_page() -> None:
    rows = _page_rows()
    for heading, cls, skip, _ in reference.TABLES:
        keys = [f for f in dataclasses.fields(cls) if f.name not in skip]
        assert list(rows[heading]) == [f.name for f in keys], heading
        for f in keys:
            doc = doc_of(f)
            assert doc is not None, f"{cls.__name__}.{f.name} has no setting(...) metadata"
            _, default, allowed, _ = rows[heading][f.name]
            if not doc.default and f.default not in (None, dataclasses.MISSING) and not isinstance(f.default, tuple):
                shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
                assert shown in default, f"{heading} {f.name}: default {f.default!r} not on the page ({default})"
            if doc.range is not None:
                assert allowed == doc.range.describe(), f"{heading} {f.name}"
            for choice in doc.choices:
                assert f"`{choice}`" in allowed, f"{heading} {f.name}: {choice} missing"


def test_the_page_has_no_section_the_file_does_not() -> None:
    headings = set(_page_rows())
    assert headings == {t[0] for t in reference.TABLES}
    assert {f"[{name}]" for name in SECTIONS} <= headings


def test_range_words() -> None:
    assert Range(0, 60, above=True, unit="seconds").describe() == "above 0 and at most 60 seconds"
    assert Range(1, 65535, what="a TCP port").describe() == "a TCP port 1-65535"
    assert Range(0, 36500, unit="days", zero="keep forever").describe() == "0 (keep forever) to 36500 days"
    assert Range(0.01, 720, unit="hours").describe() == "0.01-720 hours"
    assert Range(1).describe() == "at least 1"
    assert number(1048576) == "1048576" and number(5.0) == "5" and number(0.01) == "0.01"


# Other keys a value needs beside it to pass the cross-key checks (audio cannot outlive its row, ...).
_COMPANIONS: dict[str, dict[str, Any]] = {
    "retention.metadata_days": {"audio_days": 1},
    "hooks.retry_initial": {"retry_max": 86400},
    "hooks.retry_max": {"retry_initial": 0.001},
    "database.pool_min": {"pool_max": 10**6},
}


def _ranged_keys() -> list[tuple[str, str, Range, bool]]:
    """(section heading, key, range, is whole number) for every key with a documented range."""
    out = []
    for heading, cls, _, _ in reference.TABLES:
        for f in dataclasses.fields(cls):
            doc = doc_of(f)
            if doc is not None and doc.range is not None:
                out.append((heading, f.name, doc.range, str(f.type).startswith("int")))
    return out


def _raw(heading: str, key: str, value: float) -> dict[str, Any]:
    raw: dict[str, Any] = {k: dict(v) for k, v in SECRETS.items()}
    rule = {"name": "qa", "did": "800*"}
    if heading == "[[policy.rules]]":
        raw["policy"] = {"rules": [{**rule, key: value}]}
    elif heading == "[[alerts.rules]]":
        raw["alerts"] = {"rules": [{"name": "a", "phrases": ["x"], key: value}]}
    elif heading == '[retention.rules."NAME"]':
        raw["policy"] = {"rules": [rule]}
        extra = {"audio_days": 1} if key == "metadata_days" else {}
        raw["retention"] = {"rules": {"qa": {key: value, **extra}}}
    else:
        section = heading.strip("[]")
        raw.setdefault(section, {}).update({key: value, **_COMPANIONS.get(f"{section}.{key}", {})})
    return raw


def _edges(r: Range, whole: bool) -> list[tuple[float, bool]]:
    """(value, accepted?) just inside and just outside each end of the range."""
    step = 1 if whole else 0.001
    cases: list[tuple[float, bool]] = []
    if r.low is not None:
        cases += [(r.low, not r.above), (r.low - step, False)]
        if r.above:
            cases.append((r.low + step, True))
    if r.high is not None:
        cases += [(r.high, True), (r.high + step, False)]
    return cases


@pytest.mark.parametrize(("heading", "key", "rng", "whole"), _ranged_keys(),
                         ids=[f"{h}{k}" for h, k, _, _ in _ranged_keys()])
def test_validation_enforces_the_documented_range_at_its_edges(heading: str, key: str, rng: Range,
                                                               whole: bool) -> None:
    for value, accepted in _edges(rng, whole):
        value = int(value) if whole else value
        raw = _raw(heading, key, value)
        if accepted:
            parse_settings(raw, {})
        else:
            with pytest.raises(ConfigError) as err:
                parse_settings(raw, {})
            message = str(err.value)
            assert "\n" not in message
            assert f".{key}: expected {rng.describe()}, got " in message, message


def _whole_number_keys() -> list[tuple[str, str]]:
    """(section heading, key) for every int field of every settings class."""
    return [(heading, f.name) for heading, cls, _, _ in reference.TABLES for f in dataclasses.fields(cls)
            if str(f.type) in ("int", "int | None")]


def test_the_tables_hold_every_settings_class() -> None:
    """So that _whole_number_keys() misses no class: every section of Settings and the rule classes."""
    sections = {f.default_factory for f in dataclasses.fields(Settings)  # type: ignore[misc]
                if f.default_factory is not dataclasses.MISSING}
    assert {cls for _, cls, _, _ in reference.TABLES} == sections | {PolicyRule, RetentionRule, AlertRule}
    assert len(_whole_number_keys()) >= 10


@pytest.mark.parametrize(("heading", "key"), _whole_number_keys(), ids=[f"{h}{k}" for h, k in _whole_number_keys()])
@pytest.mark.parametrize("value", [1.5, 0.9, float("nan"), float("inf")])
def test_a_decimal_in_a_whole_number_key_is_refused(heading: str, key: str, value: float) -> None:
    """int() would cut it silently (retention 0.9 days -> 0 -> keep forever)."""
    with pytest.raises(ConfigError) as err:
        parse_settings(_raw(heading, key, value), {})
    message = str(err.value)
    assert "\n" not in message and message.endswith(f".{key}: expected a whole number, got {value!r}"), message


@pytest.mark.parametrize("environ", [{"CALLREC_ASTERISK_AMI_PORT": "15038.5"}, {"CALLREC_RETENTION_AUDIO_DAYS": "0.9"},
                                     {"CALLREC_AGI_HANDSHAKE_TIMEOUT": "nan"}])
def test_decimals_and_nan_from_the_environment_are_refused(environ: dict[str, str]) -> None:
    ((name, value),) = environ.items()
    key = name.removeprefix("CALLREC_").lower().replace("_", ".", 1)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: expected a (whole )?number, got '{value}'$"):
        parse_settings(SECRETS, environ)


def test_a_whole_number_written_as_a_decimal_is_taken() -> None:
    assert parse_settings({**SECRETS, "retention": {"audio_days": 30.0}}, {}).retention.audio_days == 30


def test_agi_handshake_timeout_zero_is_refused_as_documented() -> None:
    # The old README said "0-60", but 0 would never wait: the code refuses it, and now the page says so.
    with pytest.raises(ConfigError, match=r"^agi\.handshake_timeout: expected above 0 and at most 60 seconds, got 0$"):
        parse_settings({**SECRETS, "agi": {"handshake_timeout": 0}}, {})
    assert "above 0 and at most 60 seconds" in _page_rows()["[agi]"]["handshake_timeout"][2]


def test_every_rule_key_is_a_policy_rule_field() -> None:
    assert {f.name for f in dataclasses.fields(PolicyRule)} == set(_page_rows()["[[policy.rules]]"])
