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

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from callrec.calls.parties import PartyLog, extension_of
from callrec.calls.policy import CallFacts
from callrec.calls.session import CallSession

log = logging.getLogger("callrec.calls.parties")

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


Lookup = Callable[[str], Awaitable[dict[str, Any]]]


class PartyEvents:
    """The ARI door's party bookkeeping: events in, party changes saved.

    ``lookup`` (ARI ``GET /channels/{id}``) is used only when Asterisk leaves an attended
    transfer's target out of the event; it runs in a side task, never on a caller's path.
    """

    def __init__(self, save: Callable[[CallSession], None], lookup: Lookup | None = None) -> None:
        self.save = save
        self.lookup = lookup
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, calls: Mapping[str, HasSession], event: dict[str, Any], at: datetime) -> bool:
        """True if the event was a party event (handled here)."""
        missing: list[str] = []
        handled = on_event(calls, event, at, self.save, missing)
        if missing and self.lookup is not None:
            call = calls.get(str((event.get("transferee") or {}).get("id", "")))
            if call is not None:
                task = asyncio.get_running_loop().create_task(self._find_target(call.session, missing, at))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return handled

    async def _find_target(self, session: CallSession, channel_ids: list[str], at: datetime) -> None:
        assert self.lookup is not None and session.parties is not None
        for channel_id in channel_ids:
            try:
                snapshot = await self.lookup(channel_id)
            except Exception as exc:  # gone already, or ARI away: the next Dial may still name it
                log.debug("call %s: transfer target %s not found: %s", session.record.id, channel_id, exc)
                continue
            if isinstance(snapshot, dict) and session.parties.join(role=None, at=at, **_party(snapshot)) is not None:
                _sync_agent(session)
                self.save(session)
                return


def _sync_agent(session: CallSession) -> None:
    if session.parties is not None and session.parties.agent != session.record.agent:
        session.set_facts(agent=session.parties.agent)


def on_event(calls: Mapping[str, HasSession], event: dict[str, Any], at: datetime,
             save: Callable[[CallSession], None], missing: list[str] | None = None) -> bool:
    """Party events for the calls in hand.  True if the event was one of ours (handled).
    ``missing`` collects channel ids of a transfer target the event did not describe."""
    kind = event.get("type")
    if kind not in PARTY_EVENTS:
        return False
    try:
        session = _apply(calls, kind, event, at, missing if missing is not None else [])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a malformed event changes nothing
        log.warning("ignored a malformed %s event: %s", kind, exc)
        return True
    if session is not None and session.parties is not None:
        _sync_agent(session)
        save(session)
    return True


def _apply(calls: Mapping[str, HasSession], kind: str, event: dict[str, Any], at: datetime,
           missing: list[str]) -> CallSession | None:
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
        if not isinstance(target, dict):
            # Asterisk 22 sometimes leaves the target out of the event: it is whoever else is in
            # the bridge the call ends up in (looked up by PartyEvents).
            missing.extend(_others_in_destination(event, {_text(transferee_id(event)), _text(transferer.get("id"))}))
        session.parties.transferred(transferer_id=_text(transferer.get("id")), transferer=_text(transferer.get("name")),
                                    at=at, target=_party(target) if isinstance(target, dict) else None)
        log.info("call %s: attended transfer by %s to %s", session.record.id, transferer.get("name"),
                 (target or {}).get("name") if isinstance(target, dict) else "?")
        return session
    return None


def transferee_id(event: dict[str, Any]) -> Any:
    transferee = event.get("transferee")
    return transferee.get("id") if isinstance(transferee, dict) else None


def _others_in_destination(event: dict[str, Any], exclude: set[str]) -> list[str]:
    destination = event.get("destination_bridge")
    for key in ("transferer_first_leg_bridge", "transferer_second_leg_bridge"):
        bridge = event.get(key)
        if isinstance(bridge, dict) and bridge.get("id") == destination:
            return [str(c) for c in bridge.get("channels") or [] if str(c) not in exclude][:4]
    return []
