"""A "caller" that places real calls into the sandbox Asterisk (tests, demo, benchmarks).

The tester is its own ARI application (``callrec-tester``) subscribed to every event source.
Each call is a Local channel pair: the ``;1`` leg (the caller) sits in the tester app, which
plays real speech into it, presses keys and hangs up; the ``;2`` leg runs the dialplan an admin
would write (``callrec-test-in``), which hands it to callrec.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callrec.asterisk.ari import Ari, AriNotFound, EventStream
from callrec.store.record import CallRecord

TESTER_APP = "callrec-tester"  # each Tester adds a unique suffix, so two runs never replace each other
# Stock Asterisk prompts with real speech, used as the caller's voice.
CALLER_SPEECH = "sound:vm-intro"  # 5.6 s of speech


class EventLog:
    """Every event the tester sees, with waiting on a condition (never a bare sleep).

    A waiter is a predicate and a future: each new event is offered to the waiting predicates and
    wakes only the waiter it matches (hundreds of calls in flight in a benchmark would otherwise
    wake every waiter on every event).  ``since``: look only at events from that index on (a
    call's events come after it was placed)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []

    async def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if self._waiters:
            waiting = []
            for match, fut in self._waiters:
                if fut.done():
                    continue
                if match(event):
                    fut.set_result(event)
                else:
                    waiting.append((match, fut))
            self._waiters = waiting

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                       what: str = "event", since: int = 0) -> dict[str, Any]:
        for event in itertools.islice(self.events, since, None):
            if match(event):
                return event
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            kinds = [e.get("type") for e in self.events[-15:]]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last events: {kinds}") from None


@dataclass
class PlacedCall:
    caller_id: str  # the ;1 leg (the caller, in the tester app)
    callee_id: str  # the ;2 leg (what callrec sees); its uniqueid is in the call log
    tester: Tester
    since: int = 0  # the tester's event count when the call was placed: its events come after

    async def answered(self, timeout: float = 10.0) -> None:
        await self.tester.log.wait_for(
            lambda e: e.get("type") == "StasisStart" and e["channel"]["id"] == self.caller_id,
            timeout, f"caller leg {self.caller_id} in the tester app", self.since)

    async def notice_started(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.tester.log.wait_for(
            lambda e: e.get("type") == "PlaybackStarted"
            and e["playback"].get("target_uri") == f"channel:{self.callee_id}", timeout, "the notice to start",
            self.since)

    async def playback_finished(self, timeout: float = 20.0) -> dict[str, Any]:
        return await self.tester.log.wait_for(
            lambda e: e.get("type") == "PlaybackFinished"
            and e["playback"].get("target_uri") == f"channel:{self.callee_id}", timeout, "the notice to end",
            self.since)

    async def handed_back(self, timeout: float = 30.0) -> dict[str, Any]:
        """The dialplan after callrec: its UserEvent carries the CALLREC_* variables."""
        event = await self.tester.log.wait_for(
            lambda e: e.get("type") == "ChannelUserevent" and e.get("eventname") == "CallrecTest"
            and e["channel"]["id"] == self.callee_id, timeout, "the dialplan to continue after callrec",
            self.since)
        return event.get("userevent") or {}

    async def speak(self, media: str = CALLER_SPEECH) -> str:
        """The caller talks (real recorded speech); returns the playback id."""
        playback_id = str(uuid.uuid4())
        await self.tester.ari.play(self.caller_id, media, playback_id)
        return playback_id

    async def spoken(self, playback_id: str, timeout: float = 30.0) -> None:
        await self.tester.log.wait_for(
            lambda e: e.get("type") == "PlaybackFinished" and e["playback"]["id"] == playback_id,
            timeout, "the caller's speech to end", self.since)

    async def press(self, digits: str) -> None:
        await self.tester.ari.send_dtmf(self.caller_id, digits)

    async def hang_up(self) -> None:
        try:
            await self.tester.ari.hangup(self.caller_id)
        except AriNotFound:
            pass


class Tester:
    __test__ = False  # not a test class, despite the name

    def __init__(self, ari_url: str, user: str, password: str) -> None:
        self.app = f"{TESTER_APP}-{uuid.uuid4().hex[:8]}"
        self.ari = Ari(ari_url, user, password, self.app, timeout=10)
        self.log = EventLog()
        self.stream = EventStream(self.ari, self.log.add, self._connected, subscribe_all=True)
        self._task: asyncio.Task[None] | None = None
        self.calls: list[PlacedCall] = []

    async def _connected(self) -> None:
        pass

    async def start(self) -> None:
        self._task = asyncio.create_task(self.stream.run())
        await asyncio.wait_for(self.stream.connected.wait(), 15)

    async def close(self) -> None:
        for call in self.calls:
            await call.hang_up()
        for call in self.calls:  # let the hang-up events arrive before the websocket closes
            if call.callee_id:
                try:
                    await self.log.wait_for(lambda e, c=call: e.get("type") == "ChannelDestroyed"
                                            and e["channel"]["id"] == c.callee_id, 5, "hang-up", call.since)
                except AssertionError:
                    pass
        await self.stream.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except TimeoutError:
                pass
        await self.ari.close()

    async def place_call(self, exten: str = "100", *, lang: str = "en", args: str = "",
                         caller_id: str | None = '"Test Caller" <5551000>',
                         variables: dict[str, str] | None = None, context: str = "callrec-test-in") -> PlacedCall:
        caller, callee = f"t-{uuid.uuid4()}", f"c-{uuid.uuid4()}"
        vars_ = {"_CALLREC_TEST_LANG": lang, "_CALLREC_TEST_ARGS": args, **(variables or {})}
        since = len(self.log.events)  # before the request: its events may arrive before the answer
        await self.ari.originate(f"Local/{exten}@{context}/n", app=self.app, caller_id=caller_id,
                                 channel_id=caller, other_channel_id=callee, variables=vars_)
        call = PlacedCall(caller, callee, self, since)
        self.calls.append(call)
        return call

    async def place_sip_call(self, exten: str = "100", caller_id: str = '"SIP Caller" <5552000>') -> PlacedCall:
        """Over real SIP/RTP: Asterisk calls itself through the PJSIP endpoint ``self`` on loopback."""
        caller = f"t-{uuid.uuid4()}"
        since = len(self.log.events)
        await self.ari.originate(f"PJSIP/{exten}@self", app=self.app, caller_id=caller_id, channel_id=caller)
        # The inbound SIP channel gets its own id; find it by the callrec notice it receives.
        call = PlacedCall(caller, "", self, since)
        self.calls.append(call)
        return call


class Finished:
    """Collects calls as the daemon finalizes them (its on_call_finalized hook)."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}
        self._changed = asyncio.Event()

    def __call__(self, record: CallRecord) -> None:
        self.records[record.uniqueid] = record
        self._changed.set()

    async def wait(self, uniqueid: str, timeout: float = 30.0) -> CallRecord:
        async def _wait() -> CallRecord:
            while uniqueid not in self.records:
                self._changed.clear()
                await self._changed.wait()
            return self.records[uniqueid]

        try:
            return await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"call {uniqueid} was not finalized within {timeout}s") from None

    async def wait_count(self, n: int, timeout: float = 60.0) -> None:
        async def _wait() -> None:
            while len(self.records) < n:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"only {len(self.records)} of {n} calls finalized within {timeout}s") from None
