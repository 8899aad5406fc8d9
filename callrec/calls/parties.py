"""Who was on a call: the parties it passed through (``call_parties``), and the call's agent.

Pure: inputs are facts taken from Asterisk events (by ``ari_parties``), with their time.  The
log only grows; each party keeps its first role, except an agent who transfers the call away,
who becomes ``transferer``.  ``rows()`` gives the full list for the call-log writer, which
upserts it on (call_id, seq).

Roles:
- ``caller``: who called in (inbound: the recorded channel itself);
- ``agent``: the agent who dialed out (outbound), or who answered an inbound call;
- ``callee``: the called party of an outbound call (the recorded channel);
- ``transfer_target``: joined through a transfer (blind or attended);
- ``transferer``: an agent who transferred the call away.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

ROLES = ("caller", "agent", "callee", "transfer_target", "transferer")
MAX_PARTIES = 64  # a call looping through transfers must not grow without bound

_SUFFIX = re.compile(r"-[0-9a-fA-F]{6,}(;\d)?$")


def extension_of(channel_name: str) -> str | None:
    """The extension behind a channel name: ``PJSIP/201-0000002a`` -> ``201``,
    ``Local/201@agents-00000005;1`` -> ``201``, ``SIP/201-0a1b2c3d`` -> ``201``.

    The agent's extension is taken from the channel that was dialed, because Asterisk gives
    a dialed channel the *caller's* number as its own caller ID when the phone presets none.
    """
    tech, sep, rest = channel_name.partition("/")
    if not sep or not rest:
        return None
    if tech.lower() == "local":
        exten = rest.split("@", 1)[0]
    else:
        exten = _SUFFIX.sub("", rest)
        exten = exten.split("@", 1)[0]
    return exten[:80] or None


@dataclass
class Party:
    seq: int
    role: str
    number: str | None
    name: str | None
    channel: str
    joined_at: datetime
    left_at: datetime | None = None
    channel_id: str = field(default="", repr=False)  # Asterisk's id; not stored

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        del data["channel_id"]
        return data


class PartyLog:
    """The parties of one call, in the order they joined."""

    def __init__(self, direction: str = "inbound") -> None:
        self.direction = direction
        self.parties: list[Party] = []
        self.agent: str | None = None  # calls.agent
        self._dirty = False
        self._transfer_pending = False  # the next party to join came through a transfer

    # -- inputs --

    def join(self, *, role: str | None, number: str | None, name: str | None, channel: str,
             channel_id: str = "", at: datetime) -> Party | None:
        """A party is on the call.  ``role=None``: an answering agent, or a transfer target if
        a transfer is under way.  A channel already on the call is not added twice."""
        known = self.find(channel_id, channel)
        if known is not None and known.left_at is None:
            return None
        if len(self.parties) >= MAX_PARTIES:
            return None
        if role is None:
            role = "transfer_target" if self._transfer_pending else "agent"
            self._transfer_pending = False
            if role == "agent":
                # A new agent without a transfer (the call was dialed on): the earlier ones left.
                for party in self.parties:
                    if party.role in ("agent", "transfer_target") and party.left_at is None:
                        party.left_at = at
        if role not in ROLES:
            raise ValueError(f"unknown party role {role!r}")
        party = Party(seq=len(self.parties) + 1, role=role, number=number or None, name=name or None,
                      channel=channel, joined_at=at, channel_id=channel_id)
        self.parties.append(party)
        if role in ("agent", "transfer_target") and number and (self.direction != "outbound" or self.agent is None):
            # Inbound: the last agent who answered.  Outbound: the agent who dialed.
            self.agent = number
        self._dirty = True
        return party

    def transferred(self, *, transferer_id: str, transferer: str, at: datetime,
                    target: dict[str, Any] | None = None) -> None:
        """The call was transferred away from ``transferer``.  An attended transfer names its
        target at once; a blind one is followed by the target answering (``join``)."""
        party = self.find(transferer_id, transferer)
        if party is not None:
            if party.role in ("agent", "transfer_target"):
                party.role = "transferer"
            if party.left_at is None:
                party.left_at = at
            self._dirty = True
        self._transfer_pending = True
        if target is not None:
            self.join(role=None, at=at, **target)

    def ended(self, at: datetime) -> None:
        """The recorded channel hung up: everyone still on the call left with it."""
        for party in self.parties:
            if party.left_at is None:
                party.left_at = at
                self._dirty = True

    # -- output --

    def find(self, channel_id: str, channel: str) -> Party | None:
        for party in reversed(self.parties):
            if (channel_id and party.channel_id == channel_id) or (channel and party.channel == channel):
                return party
        return None

    def rows(self) -> list[dict[str, Any]]:
        return [p.row() for p in self.parties]

    def take_rows(self) -> list[dict[str, Any]] | None:
        """The full list when something changed since the last call, else None."""
        if not self._dirty:
            return None
        self._dirty = False
        return self.rows()
