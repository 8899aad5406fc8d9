"""The party log (pure) and ARI party events (shapes as Asterisk 22 sends them).

The end-to-end proof with real transfers is tests/e2e/test_calls_parties_e2e.py, call_parties in
PostgreSQL is tests/e2e/test_parties_store.py; here are the edges:
malformed events, repeated events, loops, hostile text, parties-only writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from support.sessions import at, new_session

from callrec.calls.parties import MAX_PARTIES, PartyLog, extension_of
from callrec.calls.policy import CallFacts, parse_args
from callrec.calls.session import CallSession
from callrec.doors import ari_parties


@pytest.mark.parametrize(("name", "exten"), [
    ("PJSIP/201-0000002a", "201"),
    ("SIP/agent7-0a1b2c3d", "agent7"),
    ("Local/201@callrec-test-agents-00000005;1", "201"),
    ("IAX2/300-12345678", "300"),
    ("PJSIP/trunk-out-00000001", "trunk-out"),
    ("garbage", None),
    ("PJSIP/", None),
])
def test_extension_of_channel_names(name: str, exten: str | None) -> None:
    assert extension_of(name) == exten


def test_inbound_agent_then_blind_transfer() -> None:
    log = PartyLog()
    log.join(role="caller", number="5551000", name="C", channel="PJSIP/trunk-1", channel_id="a", at=at(0))
    log.join(role=None, number="201", name=None, channel="PJSIP/201-1", channel_id="b", at=at(5))
    assert log.agent == "201"
    assert log.join(role=None, number="201", name=None, channel="PJSIP/201-1", channel_id="b", at=at(6)) is None
    log.transferred(transferer_id="b", transferer="PJSIP/201-1", at=at(20))
    log.join(role=None, number="202", name=None, channel="PJSIP/202-1", channel_id="c", at=at(25))
    log.ended(at(60))
    rows = log.take_rows()
    assert rows is not None and log.take_rows() is None  # only news is handed out
    assert [(r["seq"], r["role"], r["number"], r["left_at"]) for r in rows] == [
        (1, "caller", "5551000", at(60)), (2, "transferer", "201", at(20)), (3, "transfer_target", "202", at(60))]
    assert log.agent == "202"


def test_attended_transfer_names_its_target() -> None:
    log = PartyLog()
    log.join(role="caller", number="5551000", name=None, channel="x", channel_id="a", at=at(0))
    log.join(role=None, number="201", name=None, channel="PJSIP/201-1", channel_id="b", at=at(1))
    log.transferred(transferer_id="b", transferer="PJSIP/201-1", at=at(9),
                    target={"number": "303", "name": None, "channel": "PJSIP/303-1", "channel_id": "d"})
    assert [(p.role, p.number) for p in log.parties] == [("caller", "5551000"), ("transferer", "201"),
                                                         ("transfer_target", "303")]
    # The Dial that made the target's leg may be reported afterwards: not a second party.
    assert log.join(role=None, number="303", name=None, channel="PJSIP/303-1", channel_id="d", at=at(10)) is None
    assert log.agent == "303"


def test_outbound_agent_stays_the_dialing_agent() -> None:
    log = PartyLog("outbound")
    log.join(role="agent", number="201", name="A", channel="PJSIP/201-1", at=at(0))
    log.join(role="callee", number="5557001", name=None, channel="PJSIP/trunk-2", channel_id="x", at=at(0))
    log.transferred(transferer_id="", transferer="PJSIP/201-1", at=at(30))
    log.join(role=None, number="202", name=None, channel="PJSIP/202-1", channel_id="y", at=at(35))
    assert log.agent == "201"
    assert [p.role for p in log.parties] == ["transferer", "callee", "transfer_target"]


def test_a_new_agent_without_transfer_closes_the_earlier_one() -> None:
    log = PartyLog()
    log.join(role=None, number="201", name=None, channel="L/201", channel_id="b", at=at(1))
    log.join(role=None, number="202", name=None, channel="L/202", channel_id="c", at=at(9))
    assert [(p.role, p.left_at) for p in log.parties] == [("agent", at(9)), ("agent", None)]


def test_a_transfer_loop_is_capped() -> None:
    log = PartyLog()
    for i in range(MAX_PARTIES * 2):
        log.join(role=None, number=str(i), name=None, channel=f"L/{i}", channel_id=str(i), at=at(i))
    assert len(log.parties) == MAX_PARTIES


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError):
        PartyLog().join(role="boss", number="1", name=None, channel="x", at=at(0))


# -- ARI events -> parties ----------------------------------------------------------------------


@dataclass
class FakeCall:
    session: CallSession


def snapshot(channel_id: str, name: str) -> dict[str, Any]:
    return {"id": channel_id, "name": name, "caller": {"number": "100"}, "connected": {}}


def test_outbound_arguments_make_an_outbound_row() -> None:
    args, warnings = parse_args(["", "direction=outbound", "agent=201", "agent_channel=PJSIP/201-0000001",
                                 "did=5557001", "context=agents"])
    assert warnings == []
    facts = ari_parties.adjust_facts(CallFacts(did="5557001", caller="5557001", args=args), {"connected": {}})
    assert facts.caller == "201"  # the policy sees the agent as the caller
    session, _ = new_session(args=args, connected={"number": "201", "name": "Agent Smith"})
    changes = session.take_changes()
    assert (changes["direction"], changes["agent"], changes["caller_number"], changes["caller_name"]) == (
        "outbound", "201", "201", "Agent Smith")
    assert session.parties is not None
    assert [(p.role, p.number, p.channel) for p in session.parties.parties] == [
        ("agent", "201", "PJSIP/201-0000001"), ("callee", "100", "PJSIP/trunk-00000001")]


def test_dial_and_transfer_events_reach_the_call() -> None:
    session, _ = new_session()
    calls = {"anchor": FakeCall(session)}
    saved: list[CallSession] = []
    anchor = snapshot("anchor", "PJSIP/trunk-00000001")
    agent = snapshot("a1", "PJSIP/201-00000002")
    assert ari_parties.on_event(calls, {"type": "Dial", "dialstatus": "", "caller": anchor, "peer": agent},
                                at(1), saved.append)
    assert saved == []  # ringing: nobody joined yet
    ari_parties.on_event(calls, {"type": "Dial", "dialstatus": "ANSWER", "caller": anchor, "peer": agent},
                         at(2), saved.append)
    assert session.record.agent == "201" and session.take_changes()["agent"] == "201"
    ari_parties.on_event(calls, {"type": "BridgeBlindTransfer", "result": "Success", "channel": agent,
                                 "transferee": anchor, "exten": "202"}, at(3), saved.append)
    ari_parties.on_event(calls, {"type": "Dial", "dialstatus": "ANSWER", "caller": anchor,
                                 "peer": snapshot("a2", "PJSIP/202-00000003")}, at(4), saved.append)
    assert session.record.agent == "202"
    assert session.parties is not None
    assert [(p.role, p.number) for p in session.parties.parties] == [
        ("caller", "5551000"), ("transferer", "201"), ("transfer_target", "202")]
    assert len(saved) == 3


@pytest.mark.parametrize("event", [
    {"type": "Dial", "dialstatus": "ANSWER", "caller": "not a dict", "peer": None},
    {"type": "Dial", "dialstatus": "ANSWER", "caller": {"id": "anchor"}, "peer": "x"},
    {"type": "Dial", "dialstatus": "ANSWER", "caller": {"id": "anchor"}, "peer": {"id": 5, "name": ["x"]}},
    {"type": "BridgeBlindTransfer", "result": "Success", "transferee": {"id": "anchor"}, "channel": "x"},
    {"type": "BridgeAttendedTransfer", "result": "Success", "transferee": {"id": "anchor"},
     "transferer_first_leg": 7, "transfer_target": "y"},
    {"type": "BridgeAttendedTransfer", "result": "Fail", "transferee": {"id": "anchor"}},
    {"type": "Dial"},
])
def test_malformed_party_events_change_nothing_and_never_raise(event: dict[str, Any]) -> None:
    session, _ = new_session()
    before = [p.row() for p in session.parties.parties] if session.parties else []
    ari_parties.on_event({"anchor": FakeCall(session)}, event, at(1), lambda s: None)
    assert session.parties is not None
    assert [p.row() for p in session.parties.parties][: len(before)] == before
    assert session.record.agent is None


def test_events_for_other_channels_are_not_ours() -> None:
    session, _ = new_session()
    calls = {"anchor": FakeCall(session)}
    event = {"type": "Dial", "dialstatus": "ANSWER", "caller": snapshot("other", "PJSIP/9-1"),
             "peer": snapshot("p", "PJSIP/201-2")}
    assert ari_parties.on_event(calls, event, at(1), lambda s: None)
    assert session.parties is not None and len(session.parties.parties) == 1
    assert not ari_parties.on_event(calls, {"type": "ChannelDtmfReceived"}, at(1), lambda s: None)


async def test_attended_transfer_without_its_target_in_the_event_looks_it_up() -> None:
    """Asterisk 22 sometimes leaves ``transfer_target`` out of the event the recorded channel's app
    gets; the target is then the other channel in the destination bridge, looked up by id."""
    session, _ = new_session()
    calls = {"anchor": FakeCall(session)}
    saved: list[CallSession] = []
    asked: list[str] = []

    async def lookup(channel_id: str) -> dict[str, Any]:
        asked.append(channel_id)
        return snapshot(channel_id, "Local/303@xfer-00000002;1")

    events = ari_parties.PartyEvents(saved.append, lookup)
    anchor = snapshot("anchor", "PJSIP/trunk-00000001")
    agent = snapshot("a1", "PJSIP/201-00000002")
    events.on_event(calls, {"type": "Dial", "dialstatus": "ANSWER", "caller": anchor, "peer": agent}, at(1))
    events.on_event(calls, {
        "type": "BridgeAttendedTransfer", "result": "Success", "transferer_first_leg": agent,
        "transferer_second_leg": agent, "transferee": anchor, "destination_type": "bridge", "destination_bridge": "B1",
        "transferer_first_leg_bridge": {"id": "B1", "channels": ["t9", "anchor"]},
        "transferer_second_leg_bridge": {"id": "B2", "channels": []}}, at(5))
    await asyncio.gather(*events._tasks)
    assert asked == ["t9"]
    assert session.parties is not None
    assert [(p.role, p.number) for p in session.parties.parties] == [
        ("caller", "5551000"), ("transferer", "201"), ("transfer_target", "303")]
    assert session.record.agent == "303" and saved[-1] is session
