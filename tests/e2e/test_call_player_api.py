"""The player's API (issue 13) against a real PostgreSQL: waveform peaks (stereo apart, cached, audited,
gone with the audio), the timeline from the call log's evidence, who read a call, and the audit trail
filtered by a piece of a call id, the caller and the agent.  Every new endpoint x every role x every
kind of seeded call (the authorization matrix of these endpoints), and the tags in use (tag suggestions)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import aiohttp
import numpy as np
import soundfile
from support.opsapi import T0, Bench, audit_rows, call, visible

from callrec.access import ROLES

READER_ROLES = {"admin", "supervisor", "security", "auditor"}
AUDIO_ROLES = {"admin", "supervisor", "agent", "security"}
TAG_ROLES = {"admin", "supervisor", "security"}


def who(role: str) -> str:
    """The audit trail's name of a role's bench token."""
    return f"{role}1(token:{role}-token)"


async def test_authorization_matrix_of_the_player_endpoints(bench: Bench, http: aiohttp.ClientSession) -> None:
    for role in ROLES:
        sees = visible(role, bench)
        for label, call_id in bench.calls.items():
            hidden = call_id not in sees
            st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/timeline", role)
            assert st == (404 if hidden else 200), (role, label, "timeline")
            if not hidden:
                assert json.loads(body)["events"][0]["kind"] == "call_start"
            st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/waveform", role)
            want = 403 if role not in AUDIO_ROLES else 404 if hidden or label in ("unrecorded", "deleted") else 200
            assert st == want, (role, label, "waveform")
            st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/readers", role)
            assert st == (403 if role not in READER_ROLES else 404 if hidden else 200), (role, label, "readers")
        for bogus in (str(uuid.uuid4()), "1"):
            for suffix in ("timeline", "waveform", "readers"):
                st, _, _ = await call(http, bench, "GET", f"/api/v1/calls/{bogus}/{suffix}", "admin")
                assert st == 404, (bogus, suffix)


async def test_stereo_waveform_keeps_the_parties_apart_is_cached_audited_and_goes_with_the_audio(
        bench: Bench, http: aiohttp.ClientSession) -> None:
    call_id = bench.calls["other"]
    row = await bench.pool.fetchrow("SELECT recording_path FROM calls WHERE id = $1", uuid.UUID(call_id))
    # 4 s of stereo: the caller talks (left) in the first second only, the agent (right) in the last only.
    rate = 8000
    t = np.arange(4 * rate) / rate
    left = np.where(t < 1, 0.5 * np.sin(2 * np.pi * 300 * t), 0.0)
    right = np.where(t >= 3, 0.25 * np.sin(2 * np.pi * 500 * t), 0.0)
    soundfile.write(str(bench.rec_dir / row["recording_path"]), np.stack([left, right], axis=1).astype(np.float32),
                    rate, subtype="PCM_16")
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/waveform", "supervisor")
    assert st == 200
    w = json.loads(body)
    assert w["channels"] == 2 and w["labels"] == ["caller", "agent"] and w["duration_ms"] == 4000
    per_s = 1000 // w["bucket_ms"]
    caller, agent = w["peaks"]
    assert len(caller) == len(agent) == w["buckets"] == 4000 // w["bucket_ms"]
    assert min(caller[1:per_s - 1]) > 100 and max(caller[per_s + 1:]) == 0  # about 0.5 of full scale: 127
    assert max(agent[:3 * per_s - 1]) == 0 and 55 < min(agent[3 * per_s + 1:]) <= 70  # 0.25: 64
    # Kept: a second request reads no file (it is gone now) and gets the same peaks.
    cached = await bench.pool.fetchval("SELECT count(*) FROM call_waveforms WHERE call_id = $1", uuid.UUID(call_id))
    assert cached == 1
    (bench.rec_dir / row["recording_path"]).rename(bench.rec_dir / (row["recording_path"] + ".moved"))
    st, body2, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/waveform", "admin")
    assert st == 200 and json.loads(body2)["peaks"] == w["peaks"]
    # Audited like a listen: once per principal and window.
    st, _, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/waveform", "supervisor")
    entries = await audit_rows(bench, call_id=uuid.UUID(call_id), action="waveform")
    assert sorted(r["actor"] for r in entries) == [who("admin"), who("supervisor")]
    # The audio marked deleted (by any code): the database drops the peaks with it.
    await bench.pool.execute("UPDATE calls SET audio_deleted_at = now(), audio_deleted_by = 'test' WHERE id = $1",
                             uuid.UUID(call_id))
    assert await bench.pool.fetchval("SELECT count(*) FROM call_waveforms") == 0
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/waveform", "admin")
    assert st == 404 and json.loads(body)["error"] == "the recording of this call was deleted"


async def test_the_timeline_is_the_call_logs_evidence_in_milliseconds(bench: Bench,
                                                                      http: aiohttp.ClientSession) -> None:
    call_id = uuid.UUID(bench.calls["party"])
    t = {name: T0 + timedelta(minutes=2, milliseconds=ms) for name, ms in (
        ("notice_start", 310), ("notice_end", 4120), ("consent", 5005), ("rec", 5210), ("pause", 7000),
        ("resume", 9500), ("transfer", 10250), ("end", 12000))}
    await bench.pool.execute(
        "UPDATE calls SET notice_started_at = $2, notice_finished_at = $3, consent_at = $4, keys_pressed = '1', "
        "consent = 'granted', consent_key = '1', recording_started_at = $5, handed_back_at = $5, ended_at = $6, "
        "hangup_cause = 16, hangup_cause_text = 'Normal Clearing' WHERE id = $1",
        call_id, t["notice_start"], t["notice_end"], t["consent"], t["rec"], t["end"])
    await bench.pool.execute("INSERT INTO recording_pauses (call_id, seq, paused_at, paused_by, pause_source, "
                             "resumed_at, resumed_by, resume_source) VALUES ($1, 1, $2, '201', 'dtmf', $3, '201', "
                             "'dtmf')", call_id, t["pause"], t["resume"])
    await bench.pool.execute("INSERT INTO call_parties (call_id, seq, number, name, role, joined_at) "
                             "VALUES ($1, 9, '204', 'Dan', 'transfer_target', $2)", call_id, t["transfer"])
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/timeline", "supervisor")
    assert st == 200
    tl = json.loads(body)
    kinds = [(e["kind"], e["call_ms"], e["audio_ms"]) for e in tl["events"]]
    assert kinds == [("call_start", 0, None), ("notice_start", 310, None), ("notice_end", 4120, None),
                     ("keys", 5005, None), ("consent", 5005, None), ("recording_start", 5210, 0),
                     ("handed_back", 5210, 0), ("pause", 7000, 1790), ("resume", 9500, 4290),
                     ("transfer", 10250, 5040), ("hangup", 12000, 6790)], kinds
    assert tl["recording"]["offset_ms"] == 5210 and tl["recording"]["available"] is True
    by_kind = {e["kind"]: e for e in tl["events"]}
    assert by_kind["consent"]["detail"] == {"consent": "granted", "key": "1"}
    assert by_kind["transfer"]["detail"] == {"role": "transfer_target", "number": "204", "name": "Dan"}
    assert by_kind["hangup"]["detail"]["cause_text"] == "Normal Clearing"
    # A declined call without audio: its timeline, with no offsets into audio.
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{bench.calls['unrecorded']}/timeline", "admin")
    tl = json.loads(body)
    assert tl["recording"]["available"] is False and tl["consent"] == "declined"
    assert all(e["audio_ms"] is None for e in tl["events"])
    # The bench's row has no consent time: the outcome is in the header, not guessed onto the line.
    assert [e["kind"] for e in tl["events"]] == ["call_start", "hangup"]


async def test_who_read_a_call_and_the_audit_trail_by_piece_of_id_caller_and_agent(
        bench: Bench, http: aiohttp.ClientSession) -> None:
    c = bench.calls
    await call(http, bench, "GET", f"/api/v1/calls/{c['other']}", "agent")  # hidden from the agent: denied
    for role in ("admin", "security"):
        await call(http, bench, "GET", f"/api/v1/calls/{c['other']}", role)
    await call(http, bench, "GET", f"/api/v1/calls/{c['other']}/audio", "security")
    await call(http, bench, "GET", f"/api/v1/calls/{c['other']}/audio?download=1", "admin")
    await call(http, bench, "GET", f"/api/v1/calls/{c['other']}", "admin")
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{c['other']}/readers", "supervisor")
    assert st == 200
    items = json.loads(body)["items"]
    got = {(i["actor"], i["action"]): i["times"] for i in items}
    assert got == {(who("admin"), "view"): 2, (who("security"), "view"): 1, (who("security"), "listen"): 1,
                   (who("admin"), "download"): 1}, got
    assert items[0]["actor"] == who("admin") and items[0]["action"] == "view"  # the latest first
    # The audit trail: a piece of the id (as copied from a screen), in any case.
    piece = c["other"][9:18].upper()
    st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={piece}", "auditor")
    assert st == 200
    entries = json.loads(body)["items"]
    assert entries and {e["call_id"] for e in entries} == {c["other"]}
    assert entries[0]["call"] == {"caller_number": "+4930222", "caller_name": "Carol", "called_number": "100",
                                  "agent": "202", "direction": "inbound"}
    # By the caller's number written any way (its last digits), by name, by agent.
    for caller in ("30222", "+49 30 222", "carol"):
        st, body, _ = await call(http, bench, "GET", "/api/v1/audit?caller=" + aiohttp.helpers.quote(caller),
                                 "admin")
        assert st == 200 and {e["call_id"] for e in json.loads(body)["items"]} == {c["other"]}, caller
    st, body, _ = await call(http, bench, "GET", "/api/v1/audit?agent=202&action=listen", "admin")
    assert {e["call_id"] for e in json.loads(body)["items"]} == {c["other"]}
    # What is not a piece of an id is a clear 400, not a database error.
    for bad in ("abc", "zzzz-1234", "x" * 40):
        st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={bad}", "admin")
        assert st == 400 and json.loads(body)["error"].startswith("call_id: expected a call id or at least 4"), bad
    # The auditor does not see the confidential call's entries, even by a piece of its id.
    await call(http, bench, "GET", f"/api/v1/calls/{c['confidential']}", "admin")
    st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={c['confidential'][:8]}", "auditor")
    assert st == 200 and json.loads(body)["items"] == []


async def test_tags_in_use_follow_the_roles_and_the_visibility_rule(bench: Bench, http: aiohttp.ClientSession) -> None:
    c = bench.calls
    for label, tag in (("mine", "billing"), ("other", "billing"), ("other", "vip"), ("confidential", "fraud")):
        await bench.pool.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, $2, 'test')",
                                 uuid.UUID(c[label]), tag)
    for role in ROLES:
        st, body, _ = await call(http, bench, "GET", "/api/v1/tags", role)
        if role not in TAG_ROLES:
            assert st == 403, role
            continue
        assert st == 200, role
        got = [(i["tag"], i["calls"]) for i in json.loads(body)["items"]]
        if role == "supervisor":  # the confidential call's tag is not shown
            assert got == [("billing", 2), ("vip", 1)], got
        else:
            assert got == [("billing", 2), ("fraud", 1), ("vip", 1)], (role, got)
    st, body, _ = await call(http, bench, "GET", "/api/v1/tags?prefix=V", "admin")
    assert [i["tag"] for i in json.loads(body)["items"]] == ["vip"]
    for bad in ("?prefix=" + "x" * 65, "?other=1", "?prefix=a&prefix=b"):
        st, _, _ = await call(http, bench, "GET", "/api/v1/tags" + bad, "admin")
        assert st == 400, bad
