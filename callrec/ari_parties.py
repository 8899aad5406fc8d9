"""Outbound calls and the parties of a call, from what the ARI door sees.

- At ``StasisStart`` the Stasis arguments say whether the call is outbound (``direction=outbound``,
  ``agent=``, ``agent_channel=``, set by ``dialplan/callrec-outbound.conf`` on the *called*
  party's channel).  ``adjust_facts`` makes the agent the caller for the policy;
  ``start`` fills direction, agent and the first parties.
- After the hand-back callrec stays subscribed to the recorded channel, so ARI keeps sending it
  ``Dial`` (the channel dialed an agent, who answered), ``BridgeBlindTransfer`` and
  ``BridgeAttendedTransfer`` events that name the recorded channel.  ``on_event`` turns them into
  party changes.  No AMI rights beyond the core's are needed for this.

The recording itself never moves: MixMonitor sits on the recorded channel (the caller inbound,
the called party outbound), the one party a blind or attended transfer keeps, so the file goes
on through every transfer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from .parties import PartyLog, extension_of
from .policy import CallFacts
from .session import CallSession

log = logging.getLogger("callrec.parties")

PARTY_EVENTS = frozenset({"Dial", "BridgeBlindTransfer", "BridgeAttendedTransfer"})
OUTBOUND = "outbound"


class HasSession(Protocol):
    session: CallSession


def is_outbound(args: Mapping[str, str]) -> bool:
    return args.get("direction", "").strip().lower() == OUTBOUND


def _text(value: Any, limit: int = 200) -> str:
    return str(value or "")[:limit]


def adjust_facts(facts: CallFacts, channel: dict[str, Any]) -> CallFacts:
    """Outbound: the policy sees the agent as the caller (the called party's channel carries the
    dialed number as its own caller ID)."""
    if not is_outbound(facts.args):
        return facts
    connected = channel.get("connected") or {}
    agent = facts.args.get("agent") or _text(connected.get("number"), 80)
    return dataclasses.replace(facts, caller=agent)


def start(session: CallSession, channel: dict[str, Any], args: Mapping[str, str], at: datetime) -> None:
    """A new call: direction, agent and the first parties.  No I/O."""
    record = session.record
    parties = PartyLog(OUTBOUND if is_outbound(args) else "inbound")
    session.parties = parties
    channel_id = _text(channel.get("id"))
    if parties.direction == OUTBOUND:
        connected = channel.get("connected") or {}
        agent = _text(args.get("agent") or connected.get("number"), 80) or None
        agent_name = _text(connected.get("name")) or None
        session.set_facts(direction=OUTBOUND, agent=agent, caller_number=agent, caller_name=agent_name)
        parties.join(role="agent", number=agent, name=agent_name, channel=_text(args.get("agent_channel")), at=at)
        parties.join(role="callee", number=record.called_number, name=None, channel=record.channel,
                     channel_id=channel_id, at=at)
    else:
        parties.join(role="caller", number=record.caller_number, name=record.caller_name, channel=record.channel,
                     channel_id=channel_id, at=at)


def _party(snapshot: dict[str, Any]) -> dict[str, Any]:
    name = _text(snapshot.get("name"))
    return {"number": extension_of(name), "name": None, "channel": name, "channel_id": _text(snapshot.get("id"))}


def on_event(calls: Mapping[str, HasSession], event: dict[str, Any], at: datetime,
             save: Callable[[CallSession], None]) -> bool:
    """Party events for the calls in hand.  True if the event was one of ours (handled)."""
    kind = event.get("type")
    if kind not in PARTY_EVENTS:
        return False
    try:
        session = _apply(calls, kind, event, at)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a malformed event changes nothing
        log.warning("ignored a malformed %s event: %s", kind, exc)
        return True
    if session is not None and session.parties is not None:
        if session.parties.agent != session.record.agent:
            session.set_facts(agent=session.parties.agent)
        save(session)
    return True


def _apply(calls: Mapping[str, HasSession], kind: str, event: dict[str, Any], at: datetime) -> CallSession | None:
    def call_of(snapshot: Any) -> CallSession | None:
        if not isinstance(snapshot, dict):
            return None
        call = calls.get(str(snapshot.get("id", "")))
        return call.session if call is not None and call.session.parties is not None else None

    if kind == "Dial":
        if event.get("dialstatus") != "ANSWER":
            return None
        session = call_of(event.get("caller"))
        if session is None:
            return None  # the recorded channel was the one dialed (outbound): its agent is known
        assert session.parties is not None
        peer = event.get("peer")
        if not isinstance(peer, dict):
            return None
        party = session.parties.join(role=None, at=at, **_party(peer))
        if party is not None:
            log.info("call %s: %s %s (%s) answered", session.record.id, party.role, party.number, party.channel)
        return session
    if kind == "BridgeBlindTransfer":
        if event.get("result") != "Success":
            return None
        session = call_of(event.get("transferee"))
        if session is None:
            return None
        assert session.parties is not None
        transferer = event.get("channel") or {}
        session.parties.transferred(transferer_id=_text(transferer.get("id")), transferer=_text(transferer.get("name")),
                                    at=at)
        log.info("call %s: blind transfer by %s to %s", session.record.id, transferer.get("name"),
                 _text(event.get("exten"), 80))
        return session
    if kind == "BridgeAttendedTransfer":
        if event.get("result") != "Success":
            return None
        session = call_of(event.get("transferee"))
        if session is None:
            return None
        assert session.parties is not None
        transferer = event.get("transferer_first_leg") or {}
        target = event.get("transfer_target")
        session.parties.transferred(transferer_id=_text(transferer.get("id")), transferer=_text(transferer.get("name")),
                                    at=at, target=_party(target) if isinstance(target, dict) else None)
        log.info("call %s: attended transfer by %s to %s", session.record.id, transferer.get("name"),
                 (target or {}).get("name") if isinstance(target, dict) else "?")
        return session
    return None
