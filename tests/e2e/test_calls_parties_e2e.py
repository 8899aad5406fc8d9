"""Outbound calls, agents and transfers, end to end on the real Asterisk 22 + PostgreSQL.

Dialplan: dialplan/callrec-outbound.conf (the piece PBX admins install) and
tests/asterisk/callrec-test-calls.conf (agents, called parties, transfer targets).  Agents' phones
and called parties are Local-channel legs the tester answers in its own ARI app, so the test can
listen to what they hear and press their keys.  Transfers are real Asterisk transfers made with
the features map (blind ``#``, attended ``*2``) on bridges made by Dial.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
import soundfile
from caller import CALLER_SPEECH, PlacedCall, Tester

from callrec.app import Daemon

SPEECH_RMS_FLOOR = -45.0


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def place(tester: Tester, endpoint: str, caller_id: str, variables: dict[str, str]) -> PlacedCall:
    """A Local-channel call: the ;1 leg (the phone) sits in the tester app, ;2 runs the dialplan."""
    phone, line = f"t-{uuid.uuid4()}", f"c-{uuid.uuid4()}"
    await tester.ari.originate(endpoint, app=tester.app, caller_id=caller_id, channel_id=phone,
                               other_channel_id=line, variables={"__CALLREC_TESTER_APP": tester.app, **variables})
    call = PlacedCall(phone, line, tester)
    tester.calls.append(call)
    return call


async def answer_leg(tester: Tester, role: str, number: str, timeout: float = 15) -> str:
    """A test-side phone rings (an agent, a called party): answer it, return its channel id."""
    event = await tester.log.wait_for(
        lambda e: e.get("type") == "StasisStart" and (e.get("args") or [])[:2] == [role, number],
        timeout, f"{role} {number} to ring")
    channel_id = event["channel"]["id"]
    await tester.ari.request("POST", f"/channels/{channel_id}/answer")
    return channel_id


async def partner(tester: Tester, channel_id: str) -> str:
    """The other half of a Local channel pair (…;2 -> …;1)."""
    channel = await tester.ari.get_channel(channel_id)
    name = channel["name"]
    other = name[:-1] + ("1" if name.endswith(";2") else "2")
    for ch in await tester.ari.list_channels():
        if ch["name"] == other:
            return ch["id"]
    raise AssertionError(f"no partner channel {other}")


async def bridged(tester: Tester, channel_id: str, times: int = 1, timeout: float = 20) -> None:
    """Until the channel has entered a bridge ``times`` times (a transfer bridges it again)."""
    def enough(_: dict[str, Any]) -> bool:
        return sum(1 for e in tester.log.events if e.get("type") == "ChannelEnteredBridge"
                   and e["channel"]["id"] == channel_id) >= times

    await tester.log.wait_for(enough, timeout, f"{channel_id} to be bridged ({times})")


async def keep_talking(tester: Tester, channel_id: str, times: int = 10) -> set[str]:
    """The customer's line talks without a pause for the whole call (queued speech), so the
    recording has audio from start to end; only this one direction carries audio, as in a call
    where the agent listens.  Returns the playback ids."""
    ids = {str(uuid.uuid4()) for _ in range(times)}
    for playback in ids:
        await tester.ari.play(channel_id, CALLER_SPEECH, playback)
    return ids


async def talk_on(tester: Tester, ids: set[str]) -> None:
    """Until one more stretch of the customer's speech (5.6 s) has been heard, from now on."""
    done = {e["playback"]["id"] for e in tester.log.events if e.get("type") == "PlaybackFinished"}
    await tester.log.wait_for(lambda e: e.get("type") == "PlaybackFinished" and e["playback"]["id"] in ids
                              and e["playback"]["id"] not in done, 30, "the customer's speech to go on")


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


def notices_played(tester: Tester, channel_id: str) -> list[dict[str, Any]]:
    return [e for e in tester.log.events if e.get("type") == "PlaybackStarted"
            and e["playback"].get("target_uri") == f"channel:{channel_id}"
            and "/notice" in e["playback"].get("media_uri", "")]


async def finish(daemon: Daemon, finished: Any, dsn: str, uniqueid: str) -> asyncpg.Record:
    await finished.wait(uniqueid, 40)
    assert daemon.writer is not None and await daemon.writer.flush()
    (r,) = await fetch(dsn, "SELECT * FROM calls WHERE uniqueid = $1", uniqueid)
    return r


async def parties(dsn: str, call_id: Any) -> list[tuple[str, str | None]]:
    rows = await fetch(dsn, "SELECT * FROM call_parties WHERE call_id = $1 ORDER BY seq", call_id)
    for row in rows:
        assert row["joined_at"] is not None and row["left_at"] is not None and row["left_at"] >= row["joined_at"]
    return [(row["role"], row["number"]) for row in rows]


# Around a transfer Asterisk's MixMonitor was seen to lose up to about 1 s of audio (22.10.1, audio in
# both directions, loaded host); a file that stopped at the transfer would lack the 5.6 s of talk after it.
TRANSFER_TOLERANCE = 1.0


def check_recording(daemon: Daemon, r: asyncpg.Record, tolerance: float = 0.5) -> None:
    """The file is one recording of the whole recorded span of the call."""
    assert r["recording_status"] == "ready", (r["recording_status"], r["recording_error"])
    path = daemon.settings.recordings.local_path / r["recording_path"]
    siblings = [p.name for p in path.parent.iterdir() if p.name.startswith(str(r["id"]))]
    assert siblings == [path.name], siblings  # one file for the call
    info = soundfile.info(str(path))
    span = (r["ended_at"] - r["recording_started_at"]).total_seconds()
    assert abs(info.duration - span) < tolerance, (info.duration, span)
    assert r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


def best_match(heard: np.ndarray, excerpt: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``excerpt`` anywhere in ``heard`` (1.0 = identical)."""
    n = len(heard) + len(excerpt)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(excerpt, size)), size)[: len(heard)]
    window = np.convolve(heard ** 2, np.ones(len(excerpt)), "full")[len(excerpt) - 1: len(excerpt) - 1 + len(heard)]
    norm = np.sqrt(np.maximum(window, 1e-9) * float(np.sum(excerpt ** 2)))
    return float(np.max(corr / norm))


# -- outbound ------------------------------------------------------------------------------------


async def call_out(tester: Tester, number: str, args: str = "", agent: str = "201",
                   variables: dict[str, str] | None = None) -> tuple[PlacedCall, str, str]:
    """The agent dials ``number``; the called party answers.  Returns (agent call, the called
    party's test-side leg, the called party's channel as callrec sees it)."""
    agent_call = await place(tester, f"Local/{number}@callrec-test-out/n", f'"Agent Smith" <{agent}>',
                             {"__CALLREC_TEST_ARGS": args, **(variables or {})})
    # (The agent's phone is "answered" only once Dial connects it, after the notice.)
    callee_leg = await answer_leg(tester, "callee", number)
    return agent_call, callee_leg, await partner(tester, callee_leg)


async def test_outbound_callee_hears_the_notice_and_the_call_is_logged(
        daemon: Daemon, tester: Tester, finished: Any, database: str) -> None:
    agent_call, callee_leg, callee = await call_out(tester, "5557001", "mode=notice")
    # Listen to what the called party hears: a snoop on the audio their channel sends them, recorded.
    snoop = await tester.ari.request("POST", f"/channels/{callee}/snoop",
                                     {"spy": "out", "app": tester.app, "appArgs": "listen"})
    await tester.log.wait_for(lambda e: e.get("type") == "StasisStart" and e["channel"]["id"] == snoop["id"],
                              10, "the snoop channel")
    listen = f"callrec-test-{uuid.uuid4().hex[:8]}"
    await tester.ari.request("POST", f"/channels/{snoop['id']}/record",
                             {"name": listen, "format": "wav", "ifExists": "overwrite", "beep": False,
                              "maxDurationSeconds": 60, "maxSilenceSeconds": 0})
    speech = await keep_talking(tester, callee_leg)
    started = await tester.log.wait_for(
        lambda e: e.get("type") == "PlaybackStarted" and e["playback"].get("target_uri") == f"channel:{callee}",
        15, "the notice to the called party")
    assert started["playback"]["media_uri"].endswith("/en/notice")
    # The agent is connected only after the notice: the bridge comes after the notice ended.
    await bridged(tester, callee)
    assert any(e.get("type") == "PlaybackFinished" and e["playback"]["id"] == started["playback"]["id"]
               for e in tester.log.events)
    await agent_call.answered()
    # The agent's side learned the outcome (EXPORT onto the agent's channel).
    assert await tester.ari.get_variable(agent_call.callee_id, "CALLREC_CONSENT") == "implied"
    call_id = await tester.ari.get_variable(agent_call.callee_id, "CALLREC_CALL_ID")
    assert call_id and (await tester.ari.get_variable(agent_call.callee_id, "CALLREC_RECORDING")).endswith(
        f"{call_id}.wav")
    await talk_on(tester, speech)
    await tester.ari.request("POST", f"/recordings/live/{listen}/stop")
    await agent_call.hang_up()
    r = await finish(daemon, finished, database, callee)

    assert str(r["id"]) == call_id
    assert (r["direction"], r["agent"], r["called_number"], r["caller_number"]) == (
        "outbound", "201", "5557001", "201")
    assert r["caller_name"] == "Agent Smith" and r["context"] == "callrec-test-out"
    assert (r["consent_mode"], r["consent"], r["notice_completed"]) == ("notice", "implied", True)
    check_recording(daemon, r)
    assert await parties(database, r["id"]) == [("agent", "201"), ("callee", "5557001")]
    (agent_party,) = await fetch(database, "SELECT channel FROM call_parties WHERE call_id = $1 AND role = 'agent'",
                                 r["id"])
    assert agent_party["channel"].startswith("Local/5557001@callrec-test-out-")

    # What the called party heard contains the notice itself (not just some sound).
    body = await tester.ari.session.get(f"{tester.ari.base}/recordings/stored/{listen}/file")
    heard, rate = soundfile.read(io.BytesIO(await body.read()), dtype="float64")
    await tester.ari.request("DELETE", f"/recordings/stored/{listen}")
    notice, notice_rate = soundfile.read(str(daemon.settings.notice.local_prompts_path / "en" / "notice.wav"),
                                         dtype="float64")
    assert rate == notice_rate == 8000
    excerpt = notice[int(2.0 * rate): int(5.0 * rate)]  # 3 s from the middle of the notice
    assert best_match(heard, excerpt) > 0.5  # other audio scores below 0.1


async def test_outbound_opt_out_key_is_told_to_the_agent(daemon: Daemon, tester: Tester, finished: Any,
                                                         database: str) -> None:
    agent_call, callee_leg, callee = await call_out(tester, "5557002", "mode=opt-out")
    await tester.log.wait_for(
        lambda e: e.get("type") == "PlaybackStarted" and e["playback"].get("target_uri") == f"channel:{callee}",
        15, "the notice to the called party")
    await tester.ari.send_dtmf(callee_leg, "9")  # the called party opts out
    await bridged(tester, callee)
    assert await tester.ari.get_variable(agent_call.callee_id, "CALLREC_CONSENT") == "declined"
    assert await tester.ari.get_variable(agent_call.callee_id, "CALLREC_RECORDING") == ""
    await agent_call.hang_up()
    r = await finish(daemon, finished, database, callee)
    assert (r["direction"], r["agent"], r["consent"], r["consent_key"]) == ("outbound", "201", "declined", "9")
    assert r["recording_status"] == "none" and r["recording_path"] is None


async def test_outbound_opt_in_required_refuses_the_call_without_consent(
        daemon: Daemon, tester: Tester, finished: Any, database: str) -> None:
    agent_call, _callee_leg, callee = await call_out(tester, "5557003", "mode=opt-in",
                                                     variables={"CALLREC_OUTBOUND_REQUIRE_CONSENT": "1"})
    # No key: not_given; the agent's dialplan goes on after Dial, never connected.
    back = await tester.log.wait_for(
        lambda e: e.get("type") == "ChannelUserevent" and e.get("eventname") == "CallrecTestOut"
        and e["channel"]["id"] == agent_call.callee_id, 30, "the agent's Dial to return")
    assert back["userevent"]["consent"] == "not_given"
    assert not any(e.get("type") == "ChannelEnteredBridge" and e["channel"]["id"] == callee for e in tester.log.events)
    r = await finish(daemon, finished, database, callee)
    assert (r["direction"], r["consent"], r["recording_status"]) == ("outbound", "not_given", "none")


async def test_outbound_blind_transfer_by_the_agent_keeps_the_recording(
        daemon: Daemon, tester: Tester, finished: Any, database: str) -> None:
    agent_call, callee_leg, callee = await call_out(tester, "5557004", "mode=notice")
    speech = await keep_talking(tester, callee_leg)
    await bridged(tester, callee)
    await agent_call.answered()
    await tester.ari.send_dtmf(agent_call.caller_id, "#202")  # the agent: blind transfer to 202
    transfer = await tester.log.wait_for(lambda e: e.get("type") == "BridgeBlindTransfer", 20, "the blind transfer")
    await answer_leg(tester, "agent", "202")
    await bridged(tester, callee, times=2)
    await talk_on(tester, speech)
    await tester.ari.hangup(callee_leg)
    r = await finish(daemon, finished, database, callee)
    assert len(notices_played(tester, callee)) == 1
    assert [row["n"] for row in await fetch(database, "SELECT count(*) AS n FROM calls")] == [1]
    check_recording(daemon, r, TRANSFER_TOLERANCE)
    assert r["recording_started_at"] < event_time(transfer) < r["ended_at"]
    assert (r["direction"], r["agent"]) == ("outbound", "201")  # still the agent who dialed
    assert await parties(database, r["id"]) == [("transferer", "201"), ("callee", "5557004"),
                                                ("transfer_target", "202")]


async def test_outbound_callee_hanging_up_in_the_notice_is_never_connected(
        daemon: Daemon, tester: Tester, finished: Any, database: str) -> None:
    agent_call, callee_leg, callee = await call_out(tester, "5557005", "mode=opt-out")
    await tester.log.wait_for(
        lambda e: e.get("type") == "PlaybackStarted" and e["playback"].get("target_uri") == f"channel:{callee}",
        15, "the notice to the called party")
    await tester.ari.hangup(callee_leg)
    back = await tester.log.wait_for(
        lambda e: e.get("type") == "ChannelUserevent" and e.get("eventname") == "CallrecTestOut"
        and e["channel"]["id"] == agent_call.callee_id, 20, "the agent's Dial to return")
    # Nothing reached the agent's channel: the row says why.  (Asterisk still reports the Dial as
    # ANSWER: the called party had answered before hanging up in the pre-bridge subroutine.)
    assert (back["userevent"]["consent"], back["userevent"]["call_id"]) == ("", "")
    r = await finish(daemon, finished, database, callee)
    assert (r["direction"], r["agent"], r["consent"], r["recording_status"]) == (
        "outbound", "201", "abandoned", "none")


# -- inbound to an agent, transfers ------------------------------------------------------------------


async def call_in(tester: Tester, agent: str) -> tuple[PlacedCall, str, set[str]]:
    """A customer calls in (notice mode), is put through to ``agent`` and talks.  Returns the call,
    the agent's phone and the customer's speech."""
    call = await place(tester, "Local/100@callrec-test-agent-in/n", '"Customer" <5551000>',
                       {"__CALLREC_TEST_ARGS": "mode=notice", "__CALLREC_TEST_AGENT": agent})
    await call.answered()
    back = await call.handed_back()
    assert back["consent"] == "implied"
    speech = await keep_talking(tester, call.caller_id)
    phone = await answer_leg(tester, "agent", agent)
    await bridged(tester, call.callee_id)
    return call, phone, speech


async def test_inbound_agent_and_parties(daemon: Daemon, tester: Tester, finished: Any, database: str) -> None:
    call, _phone, speech = await call_in(tester, "201")
    await talk_on(tester, speech)
    await call.hang_up()
    r = await finish(daemon, finished, database, call.callee_id)
    assert (r["direction"], r["agent"], r["caller_number"], r["called_number"]) == ("inbound", "201", "5551000", "100")
    assert await parties(database, r["id"]) == [("caller", "5551000"), ("agent", "201")]
    check_recording(daemon, r)


async def test_blind_transfer_keeps_one_recording_and_one_notice(daemon: Daemon, tester: Tester, finished: Any,
                                                                 database: str) -> None:
    call, phone, speech = await call_in(tester, "201")
    await tester.ari.send_dtmf(phone, "#202")  # agent 201: blind transfer to 202
    # The customer's channel goes through the callrec Gosub again at 202: same call, no new notice.
    again = await tester.log.wait_for(
        lambda e: e.get("type") == "ChannelUserevent" and e.get("eventname") == "CallrecTestXfer"
        and e["channel"]["id"] == call.callee_id, 20, "the transferred call to pass callrec again")
    transfer = await tester.log.wait_for(lambda e: e.get("type") == "BridgeBlindTransfer", 5, "the blind transfer")
    await answer_leg(tester, "agent", "202")
    await bridged(tester, call.callee_id, times=2)
    await talk_on(tester, speech)  # the customer talks to agent 202
    await call.hang_up()
    r = await finish(daemon, finished, database, call.callee_id)

    assert again["userevent"]["consent"] == "implied" and again["userevent"]["call_id"] == str(r["id"])
    assert len(notices_played(tester, call.callee_id)) == 1
    assert [row["n"] for row in await fetch(database, "SELECT count(*) AS n FROM calls")] == [1]
    check_recording(daemon, r, TRANSFER_TOLERANCE)
    assert r["recording_started_at"] < event_time(transfer) < r["ended_at"]  # one file, across the transfer
    assert r["agent"] == "202"
    assert await parties(database, r["id"]) == [("caller", "5551000"), ("transferer", "201"),
                                                ("transfer_target", "202")]


async def test_attended_transfer_keeps_one_recording_and_one_notice(daemon: Daemon, tester: Tester, finished: Any,
                                                                    database: str) -> None:
    call, phone, speech = await call_in(tester, "201")
    await tester.ari.send_dtmf(phone, "*2303")  # agent 201: attended transfer, consults 303
    await answer_leg(tester, "agent", "303")
    await talk_on(tester, speech)  # 201 consults 303 while the customer waits (and talks on)
    await tester.ari.hangup(phone)  # 201 hangs up: the transfer completes
    transfer = await tester.log.wait_for(lambda e: e.get("type") == "BridgeAttendedTransfer", 20,
                                         "the attended transfer")
    await talk_on(tester, speech)  # the customer talks to agent 303
    await call.hang_up()
    r = await finish(daemon, finished, database, call.callee_id)

    assert len(notices_played(tester, call.callee_id)) == 1
    assert [row["n"] for row in await fetch(database, "SELECT count(*) AS n FROM calls")] == [1]
    check_recording(daemon, r, TRANSFER_TOLERANCE)
    assert r["recording_started_at"] < event_time(transfer) < r["ended_at"]
    assert r["agent"] == "303"
    assert await parties(database, r["id"]) == [("caller", "5551000"), ("transferer", "201"),
                                                ("transfer_target", "303")]
