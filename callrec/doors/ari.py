"""The ARI door: calls that reach ``Stasis(callrec, ...)``.

Each call gets an actor: an event queue and one task that feeds its ``CallSession`` in order and
carries out the actions it returns through ARI (notice, hand-back) and AMI (MixMonitor).
Events for different calls never wait on each other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from callrec.asterisk.ari import Ari, AriError, AriNotFound, AriUnavailable, EventStream
from callrec.calls.policy import CallFacts, parse_args
from callrec.calls.service import CallService, utcnow
from callrec.calls.session import (
    CallRecord,
    CallSession,
    CancelTimer,
    FinalizeRecording,
    HandBack,
    PlayPrompt,
    RecordingStatus,
    StartRecording,
    StartTimer,
    State,
    StopPrompt,
)
from callrec.doors import ari_parties

log = logging.getLogger("callrec.ari")

AMI_HANGUP_GRACE = 2.0  # seconds ARI gets to report a hang-up itself before AMI's report is used


@dataclass
class Input:
    kind: str  # dtmf | playback_started | playback_finished | window | notice_timeout | hangup
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


class AriCall:
    def __init__(self, door: AriDoor, session: CallSession, channel_id: str, channel_name: str) -> None:
        self.door = door
        self.session = session
        self.channel_id = channel_id
        self.channel_name = channel_name
        self.queue: asyncio.Queue[Input] = asyncio.Queue()
        self.playback_id: str | None = None
        self.playback_kind: str | None = None  # "notice" or "confirm"
        self.timer: asyncio.TimerHandle | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # callrec is stopping: leave once the call is back in the dialplan

    @property
    def id(self) -> str:
        return self.session.record.id

    def post(self, kind: str, at: datetime | None = None, data: dict[str, Any] | None = None, **more: Any) -> None:
        self.queue.put_nowait(Input(kind, at or utcnow(), {**(data or {}), **more}))

    async def run(self, first: list[Any]) -> None:
        service = self.door.service
        try:
            await self.execute(first)
            while not self.session.ended and not (self.closing and self.session.state is State.IN_DIALPLAN):
                item = await self.queue.get()
                actions = await self._resync() if item.kind == "resync" else self.handle(item)
                service.save(self.session)
                await self.execute(actions)
        except asyncio.CancelledError:
            if self.session.state not in (State.IN_DIALPLAN, State.ENDED):
                # Stopped mid-flow: never leave the caller in a Stasis app nobody serves.
                await asyncio.shield(self._rescue())
            raise
        except Exception:
            log.exception("call %s: flow failed; handing the call back to the dialplan", self.id)
            await self._rescue()
        finally:
            self._cancel_timers()
            self.door.forget(self)

    def handle(self, item: Input) -> list[Any]:
        s = self.session
        if item.kind == "dtmf":
            return s.dtmf(item.data["digit"], item.at)
        if item.kind == "playback_started":
            if item.data["id"] == self.playback_id and self.playback_kind == "notice":
                return s.notice_started(item.at)
            return []
        if item.kind == "playback_finished":
            if item.data["id"] != self.playback_id:
                return []
            kind, self.playback_id, self.playback_kind = self.playback_kind, None, None
            self._cancel_watchdog()
            if kind == "notice":
                if item.data.get("failed"):
                    return s.notice_failed(item.at, "Asterisk could not play the prompt")
                if item.data.get("assumed"):
                    s.warn("notice end not seen (ARI reconnect); assumed played to the end")
                return s.notice_finished(item.at)
            return s.confirm_finished(item.at)
        if item.kind == "window":
            return s.window_expired(item.at)
        if item.kind == "notice_timeout":
            if s.state is State.NOTIFYING:
                return [StopPrompt(), *s.notice_failed(item.at, "the notice did not finish in time")]
            if s.state is State.CONFIRMING:
                return [StopPrompt(), *s.confirm_finished(item.at)]
            return []
        if item.kind == "entered_again":
            return s.entered_again(item.at)
        if item.kind == "shutdown":
            self.closing = True
            return s.abort(item.at, "callrec stopped during the notice; the call went on unrecorded")
        if item.kind == "hangup":
            if item.data.get("note"):
                s.warn(item.data["note"])
            return s.hangup(item.at, item.data.get("cause"), item.data.get("cause_text"))
        return []

    async def execute(self, actions: list[Any]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            more = await self._do(action)
            self.door.service.save(self.session)
            pending.extend(more or [])

    async def _do(self, action: Any) -> list[Any] | None:
        ari, service = self.door.ari, self.door.service
        if isinstance(action, PlayPrompt):
            kind = "notice" if self.session.state is State.NOTIFYING else "confirm"
            self.playback_id, self.playback_kind = playback_id(kind, self.id), kind
            try:
                await ari.play(self.channel_id, action.prompt.media, self.playback_id)
            except AriNotFound:
                self.playback_id = self.playback_kind = None
                return self.session.hangup(utcnow())  # the caller left before the prompt began
            except AriError as exc:
                self.playback_id = self.playback_kind = None
                log.warning("call %s: playing %s failed: %s", self.id, action.prompt.file, exc)
                if kind == "notice":
                    return self.session.notice_failed(utcnow(), str(exc))
                return self.session.confirm_finished(utcnow())
            limit = max(action.prompt.duration * 2 + 5, 10.0)
            limit = min(limit, service.settings.notice.max_notice_seconds)
            self.watchdog = asyncio.get_running_loop().call_later(limit, self.post, "notice_timeout")
            return None
        if isinstance(action, StopPrompt):
            pid, self.playback_id, self.playback_kind = self.playback_id, None, None
            self._cancel_watchdog()
            if pid:
                try:
                    await ari.stop_playback(pid)
                except AriError:
                    pass  # already over
            return None
        if isinstance(action, StartTimer):
            self.timer = asyncio.get_running_loop().call_later(action.seconds, self.post, "window")
            return None
        if isinstance(action, CancelTimer):
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return None
        if isinstance(action, StartRecording):
            return await service.start_recording(self.session, self.channel_name, action.file, action.options)
        if isinstance(action, HandBack):
            if await self._hand_back(action.variables):
                return self.session.handed_back(utcnow())
            return None
        if isinstance(action, FinalizeRecording):
            service.finalize_recording(self.session, action.file)
            return None
        raise TypeError(f"unknown action {action!r}")

    async def _resync(self) -> list[Any]:
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
        dialplan = channel.get("dialplan") or {}
        if self.session.state is State.IN_DIALPLAN and dialplan.get("app_name") == "Stasis" \
                and str(dialplan.get("app_data", "")).split(",")[0] == ari.app:
            # The hand-back did not get through before the outage: send it again.
            return self.session.entered_again(utcnow())
        if self.playback_id:
            try:
                await ari.get_playback(self.playback_id)
            except AriNotFound:
                return self.handle(Input("playback_finished", utcnow(), {"id": self.playback_id, "assumed": True}))
            except AriError:
                pass
        return []

    async def _hand_back(self, variables: dict[str, str], attempts: int = 4) -> bool:
        """Set the CALLREC_* variables and continue in the dialplan.  True once the call is back.

        Retried with backoff: a caller must never be left waiting in the Stasis app.
        """
        ari = self.door.ari
        try:
            # Keep getting this channel's hang-up after it leaves the Stasis app (best effort:
            # AMI's Hangup and the reconnect re-sync cover a missing subscription).
            await ari.subscribe_channel(self.channel_id)
        except AriError as exc:
            if isinstance(exc, AriNotFound) or exc.status == 422:  # "Event source does not exist"
                return False  # hung up meanwhile: the hang-up event ends the call
            log.warning("call %s: cannot subscribe to %s: %s", self.id, self.channel_name, exc)
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.gather(*(ari.set_variable(self.channel_id, k, v) for k, v in variables.items()))
                await ari.continue_in_dialplan(self.channel_id)
                return True
            except AriNotFound:
                return False  # hung up meanwhile
            except AriError as exc:
                if exc.status == 409:  # "not in Stasis": already back in the dialplan
                    return True
                log.error("call %s: handing back to the dialplan failed (attempt %d): %s", self.id, attempt, exc)
                if attempt == attempts:
                    self.session.warn(f"hand-back failed: {exc}")
                    return False
                await asyncio.sleep(delay)
                delay *= 2
        return False

    async def _rescue(self) -> None:
        """After a bug or a stop mid-flow: continue the call, unrecorded unless already recording."""
        ari = self.door.ari
        variables = self.session.variables()
        if not self.session.record.consent:
            variables["CALLREC_CONSENT"] = "unavailable"
        try:
            if self.playback_id:
                await ari.stop_playback(self.playback_id)
        except AriError:
            pass
        try:
            await asyncio.gather(*(ari.set_variable(self.channel_id, k, v) for k, v in variables.items()))
            await ari.continue_in_dialplan(self.channel_id)
        except AriError:
            pass

    def _cancel_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _cancel_timers(self) -> None:
        self._cancel_watchdog()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class AriDoor:
    def __init__(self, ari: Ari, service: CallService) -> None:
        self.ari = ari
        self.service = service
        self.calls: dict[str, AriCall] = {}  # by channel id
        self.stream = EventStream(ari, self.on_event, self.on_connected)
        self.parties = ari_parties.PartyEvents(service.save, ari.get_channel)  # agents, transfers
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._to_recover: list[CallRecord] = []
        self.closing = False  # stopping: new calls are passed straight through

    # -- events in --

    def _note_dial_status(self, event: dict[str, Any]) -> None:
        """How the recorded caller's last Dial() ended, for a recording that never started (bridged-only).
        ARI's Dial event comes on the same stream as the hang-up, so it is known before finalizing;
        AMI's DialEnd (recording_finalize.BridgeWatch) may arrive after it."""
        caller = event.get("caller")
        status = event.get("dialstatus")
        if not isinstance(caller, dict) or not isinstance(status, str) or not status:
            return
        call = self.calls.get(str(caller.get("id", "")))
        if call is not None:
            self.service.dial_status[call.session.record.id] = status[:32]

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        at = _event_time(event)
        if kind == "Dial":
            self._note_dial_status(event)
        if self.parties.on_event(self.calls, event, at):
            return  # who joined or left the call (agents, transfers)
        channel = event.get("channel") if isinstance(event.get("channel"), dict) else None
        if kind == "StasisStart" and channel is not None:
            known = self.calls.get(str(channel.get("id")))
            if known is not None:
                known.post("entered_again", at)  # a second Stasis() on a call in hand
                return
            if self.closing:
                self._pass_through(str(channel.get("id", "")), "callrec is stopping")
                return
            try:
                self.start_call(channel, [str(a) for a in event.get("args") or []], at)
            except Exception:
                log.exception("cannot take call %s; it goes on unrecorded", channel.get("name"))
                self._pass_through(str(channel.get("id", "")), "internal error")
            return
        if kind in ("PlaybackStarted", "PlaybackFinished"):
            playback = event.get("playback") or {}
            target = str(playback.get("target_uri", ""))
            call = self.calls.get(target.partition(":")[2]) if target.startswith("channel:") else None
            if call is not None:
                if kind == "PlaybackStarted":
                    call.post("playback_started", at, id=playback.get("id"))
                else:
                    call.post("playback_finished", at, id=playback.get("id"),
                              failed=playback.get("state") == "failed")
            return
        if channel is None:
            return
        call = self.calls.get(str(channel.get("id")))
        if call is None:
            return
        if kind == "ChannelDtmfReceived":
            digit = str(event.get("digit", ""))
            if len(digit) == 1:
                call.post("dtmf", at, digit=digit)
        elif kind in ("ChannelHangupRequest", "ChannelDestroyed"):
            # The hang-up request comes first, ahead of the notice's "failed" PlaybackFinished
            # and StasisEnd: it is the moment the caller left.
            cause = event.get("cause")
            call.post("hangup", at, cause=cause if isinstance(cause, int) and cause > 0 else None,
                      cause_text=event.get("cause_txt"))
        elif kind == "StasisEnd" and call.session.state not in (State.IN_DIALPLAN, State.ENDED):
            # Left our app without our hand-back: only a hang-up does that.
            call.post("hangup", at)

    def on_ami_hangup(self, uniqueid: str, cause: int | None, cause_text: str | None) -> None:
        """AMI's Hangup is a second source, for when the ARI websocket is down.

        AMI and ARI are separate sockets, so AMI's Hangup can overtake ARI events that happened
        before it (the notice starting).  While ARI is connected its own hang-up events win and
        AMI's only fills in a missing cause, a moment later.
        """
        call = self.calls.get(uniqueid)
        if call is None:
            return
        if self.stream.connected.is_set():
            asyncio.get_running_loop().call_later(AMI_HANGUP_GRACE, call.post, "hangup", None,
                                                  {"cause": cause, "cause_text": cause_text})
        else:
            call.post("hangup", cause=cause, cause_text=cause_text)

    async def on_connected(self) -> None:
        """After a (re)connect: catch up on what happened while the websocket was down."""
        await self._recover()
        for call in list(self.calls.values()):
            call.post("resync")  # each call checks itself, in order with its own actions
        await self._adopt_orphans()

    def expect_recovery(self, records: list[CallRecord]) -> None:
        """Open rows from an earlier run, to follow up once ARI is reachable."""
        self._to_recover = list(records)

    async def _recover(self) -> None:
        """Calls the log shows as unfinished from an earlier run (callrec was stopped or crashed)."""
        records, self._to_recover = self._to_recover, []
        for record in records:
            session = CallSession.restore(record, self.service.settings.recordings.dir)
            try:
                channel = await self.ari.get_channel(record.uniqueid)
            except AriNotFound:
                ended_at = await self.service.recording_closed_at(record)
                note = "the call ended while callrec was down; " + (
                    "ended_at is when Asterisk closed the recording" if ended_at else "the hang-up time is unknown")
                self._finish_lost(session, session.lost(utcnow(), note, ended_at))
                continue
            except AriError:
                self._to_recover.append(record)  # try again at the next connection
                continue
            dialplan = channel.get("dialplan") or {}
            if dialplan.get("app_name") == "Stasis" and str(dialplan.get("app_data", "")).split(",")[0] == self.ari.app:
                # Still waiting in our app: _adopt_orphans() takes it up again as a new call.  A prompt
                # the earlier run started may still be playing, and the channel would carry out our
                # requests only after it: stop it first.
                for kind in ("notice", "confirm"):
                    try:
                        await self.ari.stop_playback(playback_id(kind, record.id))
                    except AriError:
                        pass
                if record.recording_status in (RecordingStatus.STARTING, RecordingStatus.RECORDING):
                    # Crashed between MixMonitor and the hand-back: the caller is asked again, so
                    # the earlier recording must stop (a "no" now must not be recorded).
                    await self._stop_recording(record)
                note = "callrec restarted during the notice; the call was taken up again as a new call row"
                self._finish_lost(session, session.lost(utcnow(), note))
                continue
            # Back in the dialplan (recording or not): follow it to its hang-up.
            session.abort(utcnow(), "callrec restarted before the call was handed back")
            session.warn("callrec restarted during the call; followed again from the call log")
            call = AriCall(self, session, record.uniqueid, record.channel)
            self.calls[call.channel_id] = call
            try:
                await self.ari.subscribe_channel(call.channel_id)
            except AriError as exc:
                log.warning("call %s: cannot follow channel %s again: %s", record.id, record.channel, exc)
            self.service.save(session)
            call.task = asyncio.create_task(call.run([]), name=f"call-{record.id}")
            log.info("call %s: followed again after a restart (%s)", record.id, record.channel)

    async def _stop_recording(self, record: CallRecord) -> None:
        ami = self.service.ami
        try:
            await ami.wait_logged_in(timeout=5)
            await ami.stop_mix_monitor(record.channel)
        except Exception as exc:
            log.error("call %s: could not stop the earlier recording on %s: %s", record.id, record.channel, exc)

    def _finish_lost(self, session: CallSession, actions: list[Any]) -> None:
        self.service.save(session)
        for action in actions:
            if isinstance(action, FinalizeRecording):
                self.service.finalize_recording(session, action.file)
        if session.record.finalized_at is not None:
            self.service.call_finalized(session)
        log.warning("call %s: %s", session.record.id, session.record.warnings[-1])

    async def _adopt_orphans(self) -> None:
        """Channels waiting in our Stasis app that no actor owns (the daemon restarted mid-call)."""
        try:
            channels = await self.ari.list_channels()
        except (AriError, AriUnavailable):
            return
        for ch in channels:
            dialplan = ch.get("dialplan") or {}
            app_data = str(dialplan.get("app_data", ""))
            if dialplan.get("app_name") != "Stasis" or ch.get("id") in self.calls:
                continue
            app, _, rest = app_data.partition(",")
            if app != self.ari.app:
                continue
            log.warning("adopting channel %s found waiting in Stasis(%s)", ch.get("name"), app)
            call = self.start_call(ch, rest.split(",") if rest else [], utcnow())
            call.session.warn("adopted after a daemon restart: the notice was played again")

    # -- calls --

    def start_call(self, channel: dict[str, Any], raw_args: list[str], at: datetime) -> AriCall:
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
        call = AriCall(self, session, str(channel["id"]), str(channel.get("name", "")))
        self.calls[call.channel_id] = call
        first = session.start()  # the notice: the first thing that happens
        self.service.save(session)
        call.task = asyncio.create_task(call.run(first), name=f"call-{session.record.id}")
        side = asyncio.create_task(self._fill_linkedid(call))
        self._side_tasks.add(side)
        side.add_done_callback(self._side_tasks.discard)
        return call

    async def _fill_linkedid(self, call: AriCall) -> None:
        """The linkedid is not in ARI's channel model; read it once the notice is under way."""
        try:
            linkedid = await self.ari.get_variable(call.channel_id, "CHANNEL(linkedid)")
        except AriError:
            return
        if linkedid and call.session.record.linkedid is None:
            call.session.record.linkedid = linkedid
            self.service.writer.update(call.id, {"linkedid": linkedid})

    def _pass_through(self, channel_id: str, why: str) -> None:
        """Send a call callrec cannot serve straight back to the dialplan, unrecorded."""

        async def go() -> None:
            try:
                await self.ari.set_variable(channel_id, "CALLREC_CONSENT", "unavailable")
                await self.ari.continue_in_dialplan(channel_id)
            except AriError as exc:
                log.error("channel %s: could not pass it through (%s): %s", channel_id, why, exc)

        task = asyncio.create_task(go())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def forget(self, call: AriCall) -> None:
        if self.calls.get(call.channel_id) is call:
            del self.calls[call.channel_id]
        if call.session.record.finalized_at is not None:
            self.service.call_finalized(call.session)

    async def close(self, timeout: float = 3.0) -> None:
        """Stopping: callers still in the notice are handed back at once rather than left waiting
        in a Stasis app nobody serves; calls already back in the dialplan keep recording and are
        finalized at the next start."""
        self.closing = True
        calls = list(self.calls.values())
        for call in calls:
            call.post("shutdown")
        tasks = [c.task for c in calls if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=timeout)


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
