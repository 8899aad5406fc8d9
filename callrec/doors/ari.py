"""The ARI door: calls that reach ``Stasis(callrec, ...)``.  Translation only.

ARI events become inputs of the call's actor (``callrec.calls.actor``); the channel actions the
session returns become ARI requests (play, stop, hand back = set variables + continue).  Events
for different calls never wait on each other.  AMI's ``BridgeEnter`` and ``DialEnd`` for the
calls this door follows are facts for the session too (``bridged_at``; why a recording is empty).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from callrec.asterisk.ari import Ari, AriError, AriNotFound, AriUnavailable, EventStream
from callrec.calls.actor import CallActor, Input, stop_actors
from callrec.calls.policy import CallFacts, parse_args
from callrec.calls.recovery import Whereabouts, recover_lost
from callrec.calls.service import CallService, utcnow
from callrec.calls.session import (
    Action,
    CallSession,
    CancelTimer,
    HandBack,
    PlayPrompt,
    RecordingStatus,
    StartTimer,
    State,
    StopPrompt,
    prompt_time_limit,
)
from callrec.doors import ari_parties
from callrec.store.record import CallRecord

log = logging.getLogger("callrec.ari")

# With `channelvars = CHANNEL(linkedid)` in ari.conf's [general], every channel in ARI's events carries
# it: one request per call fewer.
LINKEDID_VAR = "CHANNEL(linkedid)"
AMI_HANGUP_GRACE = 2.0  # seconds ARI gets to report a hang-up itself before AMI's report is used
# The ARI events this door reads (on_event, ari_parties): Asterisk is asked for these only (the app's
# event filter).  A channel followed after the hand-back would otherwise bring every ChannelVarset and
# ChannelDialplan of the dialplan's lines, some 17 events per call, each parsed to be dropped.
ARI_EVENTS = ("StasisStart", "StasisEnd", "PlaybackStarted", "PlaybackFinished", "ChannelDtmfReceived",
              "ChannelHangupRequest", "ChannelDestroyed", *sorted(ari_parties.PARTY_EVENTS))


class AriLink:
    """One call's channel, spoken to through ARI."""

    def __init__(self, door: AriDoor, channel_id: str, channel: str) -> None:
        self.door = door
        self.channel_id = channel_id
        self.channel = channel
        self.actor: CallActor | None = None
        self.playback_id: str | None = None
        self.playback_kind: str | None = None  # "notice" or "confirm"

    @property
    def session(self) -> CallSession:
        assert self.actor is not None
        return self.actor.session

    async def do(self, action: Action) -> list[Action]:
        ari, actor = self.door.ari, self.actor
        assert actor is not None
        if isinstance(action, PlayPrompt):
            kind = "notice" if self.session.state is State.NOTIFYING else "confirm"
            self.playback_id, self.playback_kind = playback_id(kind, actor.id), kind
            try:
                await ari.play(self.channel_id, action.prompt.media, self.playback_id)
            except AriNotFound:
                self.playback_id = self.playback_kind = None
                return self.session.hangup(utcnow())  # the caller left before the prompt began
            except AriError as exc:
                self.playback_id = self.playback_kind = None
                log.warning("call %s: playing %s failed: %s", actor.id, action.prompt.file, exc)
                if kind == "notice":
                    return self.session.notice_failed(utcnow(), str(exc))
                return self.session.confirm_finished(utcnow())
            cap = self.door.service.settings.notice.max_notice_seconds
            actor.start_timer("prompt_timeout", prompt_time_limit(action.prompt, cap))
            return []
        if isinstance(action, StopPrompt):
            pid, self.playback_id, self.playback_kind = self.playback_id, None, None
            actor.cancel_timer("prompt_timeout")
            if pid:
                try:
                    await ari.stop_playback(pid)
                except AriError:
                    pass  # already over
            return []
        if isinstance(action, StartTimer):
            actor.start_timer("window", action.seconds)
            return []
        if isinstance(action, CancelTimer):
            actor.cancel_timer("window")
            return []
        if isinstance(action, HandBack):
            if await self._hand_back(action.variables):
                return self.session.handed_back(utcnow())
            return []
        raise TypeError(f"not an ARI action: {action!r}")

    def translate(self, item: Input) -> list[Action] | None:
        s = self.session
        if item.kind == "playback_started":
            if item.data["id"] == self.playback_id and self.playback_kind == "notice":
                return s.notice_started(item.at)
            return []
        if item.kind == "playback_finished":
            if item.data["id"] != self.playback_id:
                return []
            kind, self.playback_id, self.playback_kind = self.playback_kind, None, None
            assert self.actor is not None
            self.actor.cancel_timer("prompt_timeout")
            if kind == "notice":
                if item.data.get("failed"):
                    return s.notice_failed(item.at, "Asterisk could not play the prompt")
                if item.data.get("assumed"):
                    s.warn("notice end not seen (ARI reconnect); assumed played to the end")
                return s.notice_finished(item.at)
            return s.confirm_finished(item.at)
        if item.kind == "left_app":
            return s.left_app(item.at)
        return None

    async def resync(self) -> list[Action]:
        """After an ARI reconnect: what happened to this call while events could not arrive."""
        ari = self.door.ari
        try:
            channel = await ari.get_channel(self.channel_id)
        except AriNotFound:
            self.session.warn("hang-up happened while the ARI connection was down")
            return self.session.hangup(utcnow())
        except AriError:
            return []
        self.session.events_lost()
        if self.door.in_our_app(channel):
            # Still in our app: if the hand-back did not get through before the outage, again.
            return self.session.entered_again(utcnow())
        if self.playback_id:
            try:
                await ari.get_playback(self.playback_id)
            except AriNotFound:
                return self.translate(Input("playback_finished", utcnow(), {"id": self.playback_id,
                                                                             "assumed": True})) or []
            except AriError:
                pass
        return []

    async def release(self, reason: str) -> None:
        pass  # the channel lives on in the dialplan; nothing of ours holds it

    def interrupt(self) -> None:
        pass  # ARI requests are short; the actor's next step is the hand-back

    async def _hand_back(self, variables: dict[str, str], attempts: int = 4) -> bool:
        """Set the CALLREC_* variables and continue in the dialplan.  True once the call is back.

        Retried with backoff: a caller must never be left waiting in the Stasis app.
        """
        ari, call_id = self.door.ari, self.session.record.id
        try:
            # Keep getting this channel's hang-up after it leaves the Stasis app (best effort:
            # AMI's Hangup and the reconnect re-sync cover a missing subscription).
            await ari.subscribe_channel(self.channel_id)
        except AriError as exc:
            if isinstance(exc, AriNotFound) or exc.status == 422:  # "Event source does not exist"
                return False  # hung up meanwhile: the hang-up event ends the call
            log.warning("call %s: cannot subscribe to %s: %s", call_id, self.channel, exc)
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                await set_variables(ari, self.channel_id, variables)
                await ari.continue_in_dialplan(self.channel_id)
                return True
            except AriNotFound:
                return False  # hung up meanwhile
            except AriError as exc:
                if exc.status == 409:  # "not in Stasis": already back in the dialplan
                    return True
                log.error("call %s: handing back to the dialplan failed (attempt %d): %s", call_id, attempt, exc)
                if attempt == attempts:
                    self.session.warn(f"hand-back failed: {exc}")
                    return False
                await asyncio.sleep(delay)  # backoff between retries, not a wait for an event
                delay *= 2
        return False


class AriDoor:
    def __init__(self, ari: Ari, service: CallService) -> None:
        self.ari = ari
        self.service = service
        self.calls: dict[str, CallActor] = {}  # by channel id
        self.stream = EventStream(ari, self.on_event, self.on_connected)
        self.parties = ari_parties.PartyEvents(service.save, ari.get_channel)  # agents, transfers
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._to_recover: list[CallRecord] = []
        self._swept: set[CallActor] = set()  # told "gone" by the sweep, not finished yet
        self.closing = False  # stopping: new calls are passed straight through

    # -- events in --

    def on_event(self, event: dict[str, Any]) -> Awaitable[None] | None:
        kind = event["type"]
        at = _event_time(event)
        if kind == "Dial":
            self._dial_status(event)
        if self.parties.on_event(self.calls, event, at):
            return None  # who joined or left the call (agents, transfers)
        channel = event.get("channel") if isinstance(event.get("channel"), dict) else None
        if kind == "StasisStart" and channel is not None:
            known = self.calls.get(str(channel.get("id")))
            if known is not None:
                known.post("entered_again", at)  # a second Stasis() on a call in hand
                return None
            if self.closing:
                self._pass_through(str(channel.get("id", "")), "callrec is stopping")
                return None
            try:
                self.start_call(channel, [str(a) for a in event.get("args") or []], at)
            except Exception:
                log.exception("cannot take call %s; it goes on unrecorded", channel.get("name"))
                self._pass_through(str(channel.get("id", "")), "internal error")
                return None
            # The notice first: the call's actor sends its play request before the next event is read
            # (in a burst, the events already received would otherwise all be handled first).
            return asyncio.sleep(0)
        if kind in ("PlaybackStarted", "PlaybackFinished"):
            playback = event.get("playback") or {}
            target = str(playback.get("target_uri", ""))
            actor = self.calls.get(target.partition(":")[2]) if target.startswith("channel:") else None
            if actor is not None:
                if kind == "PlaybackStarted":
                    actor.post("playback_started", at, id=playback.get("id"))
                else:
                    actor.post("playback_finished", at, id=playback.get("id"),
                               failed=playback.get("state") == "failed")
            return None
        if channel is None:
            return None
        actor = self.calls.get(str(channel.get("id")))
        if actor is None:
            return None
        if kind == "ChannelDtmfReceived":
            digit = str(event.get("digit", ""))
            if len(digit) == 1:
                actor.post("dtmf", at, digit=digit)
        elif kind in ("ChannelHangupRequest", "ChannelDestroyed"):
            # The hang-up request comes first, ahead of the notice's "failed" PlaybackFinished
            # and StasisEnd: it is the moment the caller left.
            cause = event.get("cause")
            actor.post("hangup", at, cause=cause if isinstance(cause, int) and cause > 0 else None,
                       cause_text=event.get("cause_txt"))
        elif kind == "StasisEnd":
            actor.post("left_app", at)
        return None

    def _dial_status(self, event: dict[str, Any]) -> None:
        """ARI's Dial event comes on the same stream as the hang-up, so it is known before
        finalizing; AMI's DialEnd (``on_dial_end``) may arrive after it."""
        caller, status = event.get("caller"), event.get("dialstatus")
        if isinstance(caller, dict) and isinstance(status, str):
            actor = self.calls.get(str(caller.get("id", "")))
            if actor is not None:
                actor.note(actor.session.dial_ended(status))

    def on_bridge_enter(self, fields: dict[str, str]) -> None:
        """AMI BridgeEnter: the recorded channel was bridged to another party."""
        actor = self.calls.get(fields.get("Uniqueid", ""))
        if actor is not None:
            actor.note(actor.session.bridged(utcnow()))

    def on_dial_end(self, fields: dict[str, str]) -> None:
        """AMI DialEnd: how the recorded channel's last dial attempt ended."""
        actor = self.calls.get(fields.get("Uniqueid", ""))
        if actor is not None:
            actor.note(actor.session.dial_ended(fields.get("DialStatus", "")))

    def on_ami_hangup(self, uniqueid: str, cause: int | None, cause_text: str | None) -> None:
        """AMI's Hangup is a second source, for when the ARI websocket is down.

        AMI and ARI are separate sockets, so AMI's Hangup can overtake ARI events that happened
        before it (the notice starting).  While ARI is connected its own hang-up events win and
        AMI's only fills in a missing cause, a moment later.
        """
        actor = self.calls.get(uniqueid)
        if actor is None:
            return
        if self.stream.connected.is_set():
            asyncio.get_running_loop().call_later(
                AMI_HANGUP_GRACE, lambda: actor.post("hangup", cause=cause, cause_text=cause_text))
        else:
            actor.post("hangup", cause=cause, cause_text=cause_text)

    # -- the hang-up sweep: calls whose hang-up no event reported --

    async def sweep(self, interval: float) -> None:
        """Every ``interval`` seconds, one ``GET /channels`` against the calls this door follows.

        A hang-up missed while both ARI's websocket and AMI were down would otherwise be noticed
        only at the next reconnect or start.  Runs beside the calls, never on a caller's path.
        """
        while True:
            await asyncio.sleep(interval)  # the period itself, not a wait for an event
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hang-up sweep failed; trying again in %.0f s", interval)

    async def sweep_once(self) -> int:
        """Post ``gone`` to every followed call whose channel Asterisk no longer has; how many."""
        if not self.calls:
            return 0
        # Only calls followed before the request: a channel created meanwhile is in the answer.
        followed = dict(self.calls)
        try:
            channels = await self.ari.list_channels()
        except (AriError, AriUnavailable):
            return 0  # ARI cannot tell: the next sweep, or the reconnect's re-sync, will
        present = {str(ch.get("id")) for ch in channels}
        # Still followed (an actor may have finished during the request) and not told already.
        gone = [actor for channel_id, actor in followed.items()
                if channel_id not in present and self.calls.get(channel_id) is actor and actor not in self._swept]
        self._swept.update(gone)
        for actor in gone:
            if self.stream.connected.is_set():
                # ARI's own hang-up event may be on its way: it wins (cause, exact time).
                asyncio.get_running_loop().call_later(AMI_HANGUP_GRACE, actor.post, "gone")
            else:
                actor.post("gone")
        if gone:
            log.warning("hang-up sweep: %d call(s) whose channel is gone, hang-up not seen", len(gone))
        return len(gone)

    async def on_connected(self) -> None:
        """After a (re)connect: catch up on what happened while the websocket was down."""
        await self.filter_events()
        records, self._to_recover = self._to_recover, []
        self._to_recover += await recover_lost(records, self.service, self)
        for actor in list(self.calls.values()):
            actor.post("resync")  # each call checks itself, in order with its own actions
        await self._adopt_orphans()

    async def filter_events(self) -> bool:
        """Ask Asterisk for the events this door reads only (``PUT /applications/{app}/eventFilter``).
        Refused (an Asterisk without it): every event still comes, and the others are ignored as before."""
        try:
            await self.ari.request("PUT", f"/applications/{quote(self.ari.app, safe='')}/eventFilter",
                                   body={"allowed": [{"type": kind} for kind in ARI_EVENTS]})
            return True
        except AriError as exc:
            log.info("ARI event filter not set (%s): every event of the app is read", exc)
            return False

    # -- calls an earlier run left open (callrec.calls.recovery) --

    def expect_recovery(self, records: list[CallRecord]) -> None:
        """Open rows from an earlier run, to follow up once ARI is reachable."""
        self._to_recover = list(records)

    def recover_later(self, records: list[CallRecord]) -> None:
        """Open rows from an earlier run found after the start (the database was away): followed
        up now if ARI is connected, else at its next connection."""
        if not self.stream.connected.is_set():
            self._to_recover += records
            return

        async def recover() -> None:
            self._to_recover += await recover_lost(records, self.service, self)

        task = asyncio.create_task(recover(), name="ari-recover")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def in_our_app(self, channel: dict[str, Any]) -> bool:
        dialplan = channel.get("dialplan") or {}
        return dialplan.get("app_name") == "Stasis" and \
            str(dialplan.get("app_data", "")).split(",")[0] == self.ari.app

    async def whereabouts(self, record: CallRecord) -> Whereabouts:
        try:
            channel = await self.ari.get_channel(record.uniqueid)
        except AriNotFound:
            return Whereabouts.GONE
        except AriError:
            return Whereabouts.UNKNOWN
        # Still waiting in our app: _adopt_orphans() takes it up again as a new call.
        return Whereabouts.WAITING if self.in_our_app(channel) else Whereabouts.IN_DIALPLAN

    async def before_retaking(self, record: CallRecord) -> None:
        # A prompt the earlier run started may still be playing, and the channel would carry out
        # our requests only after it: stop it first.
        for kind in ("notice", "confirm"):
            try:
                await self.ari.stop_playback(playback_id(kind, record.id))
            except AriError:
                pass
        if record.recording_status in (RecordingStatus.STARTING, RecordingStatus.RECORDING):
            # Crashed between MixMonitor and the hand-back: the caller is asked again, so the
            # earlier recording must stop (a "no" now must not be recorded).
            try:
                await self.service.ami.wait_logged_in(timeout=5)
                await self.service.ami.stop_mix_monitor(record.channel)
            except Exception as exc:
                log.error("call %s: could not stop the earlier recording on %s: %s", record.id, record.channel, exc)

    def follow(self, session: CallSession) -> None:
        record = session.record
        actor = self._actor(session, record.uniqueid, record.channel)
        self._side(self._subscribe(actor))
        actor.start([])

    async def _subscribe(self, actor: CallActor) -> None:
        try:
            await self.ari.subscribe_channel(actor.session.record.uniqueid)
        except AriError as exc:
            log.warning("call %s: cannot follow channel %s again: %s", actor.id, actor.link.channel, exc)

    async def _adopt_orphans(self) -> None:
        """Channels waiting in our Stasis app that no actor owns (the daemon restarted mid-call)."""
        try:
            channels = await self.ari.list_channels()
        except (AriError, AriUnavailable):
            return
        for ch in channels:
            if not self.in_our_app(ch) or ch.get("id") in self.calls:
                continue
            log.warning("adopting channel %s found waiting in Stasis(%s)", ch.get("name"), self.ari.app)
            rest = str((ch.get("dialplan") or {}).get("app_data", "")).partition(",")[2]
            actor = self.start_call(ch, rest.split(",") if rest else [], utcnow())
            actor.session.warn("adopted after a daemon restart: the notice was played again")

    # -- calls --

    def start_call(self, channel: dict[str, Any], raw_args: list[str], at: datetime) -> CallActor:
        args, arg_warnings = parse_args(raw_args)
        dialplan = channel.get("dialplan") or {}
        caller = channel.get("caller") or {}
        facts = CallFacts(
            did=args.get("did") or str(dialplan.get("exten", "")),
            caller=str(caller.get("number", "")),
            context=args.get("context") or str(dialplan.get("context", "")),
            channel_language=str(channel.get("language", "")),
            args=args,
        )
        facts = ari_parties.adjust_facts(facts, channel)
        session = self.service.open_call(
            door="ari", uniqueid=str(channel["id"]), channel=str(channel.get("name", "")), facts=facts,
            caller_name=str(caller.get("name", "")), started_at=at,
        )
        for warning in arg_warnings:
            session.warn(warning)
        ari_parties.start(session, channel, args, at)
        actor = self._actor(session, str(channel["id"]), str(channel.get("name", "")))
        first = session.start()  # the notice: the first thing that happens
        linkedid = (channel.get("channelvars") or {}).get(LINKEDID_VAR)
        if isinstance(linkedid, str) and linkedid:
            session.linkedid_known(linkedid)  # ari.conf's channelvars: in the first write, no request
        self.service.save(session)
        actor.start(first)
        if session.record.linkedid is None:
            self._side(self._fill_linkedid(actor))
        return actor

    def _actor(self, session: CallSession, channel_id: str, channel: str) -> CallActor:
        link = AriLink(self, channel_id, channel)
        actor = CallActor(session, self.service, link, self)
        link.actor = actor
        self.calls[channel_id] = actor
        return actor

    async def _fill_linkedid(self, actor: CallActor) -> None:
        """The linkedid is not in ARI's channel model (unless ari.conf's ``channelvars`` names it):
        read it once the notice is under way."""
        try:
            linkedid = await self.ari.get_variable(actor.session.record.uniqueid, LINKEDID_VAR)
        except AriError:
            return
        actor.note(actor.session.linkedid_known(linkedid))

    def _pass_through(self, channel_id: str, why: str) -> None:
        """Send a call callrec cannot serve straight back to the dialplan, unrecorded."""

        async def go() -> None:
            try:
                await self.ari.set_variable(channel_id, "CALLREC_CONSENT", "unavailable")
                await self.ari.continue_in_dialplan(channel_id)
            except AriError as exc:
                log.error("channel %s: could not pass it through (%s): %s", channel_id, why, exc)

        self._side(go())

    def _side(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def forget(self, actor: CallActor) -> None:
        self._swept.discard(actor)
        for key, known in list(self.calls.items()):
            if known is actor:
                del self.calls[key]

    async def close(self, timeout: float = 3.0) -> None:
        """Stopping: callers still in the notice are handed back at once rather than left waiting
        in a Stasis app nobody serves; calls already back in the dialplan keep recording and are
        finalized at the next start."""
        self.closing = True
        await stop_actors(list(self.calls.values()), timeout)
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=timeout)


async def set_variables(ari: Ari, channel_id: str, variables: dict[str, str]) -> None:
    """Channel variables in one request where ARI 22 allows it: ``ARRAY(A,B,...)`` = ``a,b,...``
    (one ``POST .../variable`` sets them all, as the dialplan's ``Set(ARRAY(...)=...)`` does).  A value
    ARRAY() would split or rewrite goes in a request of its own, as do all of them when there is one."""
    one = {k: v for k, v in variables.items() if array_safe(v)}
    rest = {k: v for k, v in variables.items() if k not in one}
    if len(one) == 1:
        rest, one = variables, {}
    requests = [ari.set_variable(channel_id, k, v) for k, v in rest.items()]
    if one:
        requests.append(ari.set_variable(channel_id, f"ARRAY({','.join(one)})", ",".join(one.values())))
    await asyncio.gather(*requests)


def array_safe(value: str) -> bool:
    """Whether ARRAY() hands ``value`` over unchanged: Asterisk's argument parser splits at commas outside
    parentheses and brackets, and drops double quotes and backslashes (checked on 22.10.1)."""
    if any(c in value for c in ',"\\'):
        return False
    for opening, closing in (("(", ")"), ("[", "]")):
        depth = 0
        for c in value:
            if c == opening:
                depth += 1
            elif c == closing:
                depth -= 1
                if depth < 0:
                    return False
        if depth:
            return False
    return True


def playback_id(kind: str, call_id: str) -> str:
    """Predictable from the call log, so a restarted daemon can stop what an earlier run started."""
    return f"callrec-{kind}-{call_id}"


def _event_time(event: dict[str, Any]) -> datetime:
    """Asterisk stamps events ("2026-11-27T21:59:00.123+0000"); use that clock for evidence."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
        except ValueError:
            pass
    return utcnow()
