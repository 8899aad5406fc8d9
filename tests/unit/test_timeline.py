"""The call's timeline (store/timeline.py) from call-log rows, without a database: each key at its own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from callrec.store import timeline

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(**fields: Any) -> dict[str, Any]:
    base = {"started_at": T0, "notice_started_at": at(0.2), "notice_finished_at": at(4.0), "notice_completed": True,
            "consent": "granted", "consent_key": "1", "consent_at": at(6.5), "consent_mode": "opt-in",
            "recording_status": "ready", "recording_started_at": at(6.6), "recording_duration": 20.0,
            "audio_deleted_at": None, "handed_back_at": at(6.7), "ended_at": at(27.0)}
    return {**base, **fields}


def events(call: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    out = timeline.build(call, [], [])["events"]
    return [e for e in out if kind is None or e["kind"] in (kind, "keys")]


def test_each_key_is_an_event_at_its_own_time() -> None:
    keys = events(row(keys_pressed="51", keys_at=[at(1.25), at(6.5)]), "key")
    assert [(e["kind"], e["detail"], e["call_ms"], e["audio_ms"]) for e in keys] == [
        ("key", {"key": "5"}, 1250, None),  # during the notice, before the recording began
        ("key", {"key": "1"}, 6500, None)]
    assert keys[0]["at"] == at(1.25)
    # In time order with the rest; the deciding key comes before the consent it caused (same instant).
    kinds = [e["kind"] for e in events(row(keys_pressed="51", keys_at=[at(1.25), at(6.5)]))]
    assert kinds == ["call_start", "notice_start", "key", "notice_end", "key", "consent", "recording_start",
                     "handed_back", "hangup"]


def test_a_key_inside_the_recording_has_its_audio_offset() -> None:
    keys = events(row(keys_pressed="157", keys_at=[at(1), at(6.5), at(10.6)]), "key")
    assert [e["audio_ms"] for e in keys] == [None, None, 4000]


def test_a_row_from_before_the_times_were_kept_shows_its_keys_at_consent() -> None:
    for keys_at in (None, [], [at(6.5)]):  # no column, the migration's default, or not one time per key
        keys = events(row(keys_pressed="51", keys_at=keys_at), "key")
        assert [(e["kind"], e["detail"], e["call_ms"]) for e in keys] == [("keys", {"keys": "51"}, 6500)]
    assert events(row(keys_pressed="", keys_at=[]), "key") == []
