"""A call session as the ARI door opens it, for tests of parties and the call log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from callrec.calls.policy import Decision
from callrec.calls.session import CallSession, Prompt
from callrec.doors import ari_parties
from callrec.store.record import CallRecord

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_session(channel_id: str = "anchor", args: dict[str, str] | None = None,
                connected: dict[str, str] | None = None) -> tuple[CallSession, dict[str, Any]]:
    channel: dict[str, Any] = {"id": channel_id, "name": "PJSIP/trunk-00000001",
                               "caller": {"number": "5557001", "name": ""},
                               "connected": connected or {"number": "", "name": ""}}
    record = CallRecord(id=str(uuid.uuid4()), door="ari", uniqueid=channel_id, started_at=at(0),
                        channel=channel["name"], caller_number="5551000", caller_name="Cust", called_number="100")
    prompt = Prompt("notice", "en", "sound:x", "/x.wav", "0" * 64, 7.0)
    session = CallSession(record, Decision("notice", "en", "notice", "", None), prompt, opt_out_key="9",
                          opt_in_key="1", decision_window=1, confirm=None, recordings_dir="/r")
    session.take_changes()
    ari_parties.start(session, channel, args or {}, at(0))
    return session, channel
