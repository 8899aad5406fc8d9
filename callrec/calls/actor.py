"""One call's actor: inputs in order into its ``CallSession``, the actions it returns carried out.

Both doors use it.  A door adds a ``DoorLink`` per call, which only translates: it carries out
the actions that speak to the channel (play, stop, wait for a key, hand back) in its protocol
(ARI REST calls, AGI commands) and returns the session's answer to what came back.  The actor
owns everything else: the input queue, the key window and prompt timers (for doors that have
none of their own), recording start and finalization, saving changes, stopping, and the one way
a call ends when callrec itself fails.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from callrec.calls.service import CallService, utcnow
from callrec.calls.session import (
    Action,
    CallSession,
    FinalizeRecording,
    StartRecording,
    State,
)

log = logging.getLogger("callrec.calls")

STOPPED = "callrec stopped during the notice; the call went on unrecorded"


@dataclass
class Input:
    """Something that happened to the call, with when it happened."""

    kind: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


class DoorLink(Protocol):
    """What a door does for one call, in its own protocol."""

    channel: str  # the channel name (MixMonitor is started on it)

    async def do(self, action: Action) -> list[Action]:
        """Carry out a channel action; return the session's answer to its outcome."""
        ...

    def translate(self, item: Input) -> list[Action] | None:
        """A door-specific input (e.g. ARI's playback events); None if the door does not know it."""
        ...

    async def resync(self) -> list[Action]:
        """After the door's event link came back: what happened meanwhile."""
        ...

    async def release(self, reason: str) -> None:
        """The actor is done (or failed): leave the channel in the dialplan, close the session."""
        ...

    def interrupt(self) -> None:
        """Stopping: cut a prompt or key window short, so the hand-back comes next."""
        ...


class Registry(Protocol):
    def forget(self, actor: CallActor) -> None: ...


class CallActor:
    """Feeds one call's inputs to its session in order and carries out what it decides."""

    def __init__(self, session: CallSession, service: CallService, link: DoorLink, registry: Registry) -> None:
        self.session = session
        self.service = service
        self.link = link
        self.registry = registry
        self.queue: asyncio.Queue[Input] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # callrec is stopping: leave once the call is back in the dialplan
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def id(self) -> str:
        return self.session.record.id

    def start(self, first: list[Action]) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(first), name=f"call-{self.id}")
        return self.task

    def post(self, kind: str, at: datetime | None = None, **data: Any) -> None:
        self.queue.put_nowait(Input(kind, at or utcnow(), data))

    def note(self, actions: list[Action]) -> None:
        """A fact the session took in directly (linkedid, bridged, dial status): save it.  Facts
        may still arrive after the actor has finished (AMI lags ARI), so they skip the queue."""
        assert not actions, "facts never lead to actions"
        self.service.save(self.session)

    # -- timers (doors whose protocol has none: ARI) --

    def start_timer(self, kind: str, seconds: float) -> None:
        self.cancel_timer(kind)
        self._timers[kind] = asyncio.get_running_loop().call_later(seconds, self.post, kind)

    def cancel_timer(self, kind: str) -> None:
        handle = self._timers.pop(kind, None)
        if handle is not None:
            handle.cancel()

    # -- the flow --

    async def run(self, first: list[Action]) -> None:
        actions = first
        try:
            while True:
                try:
                    await self.execute(actions)
                    if self.session.ended or (self.closing and self.session.state is State.IN_DIALPLAN):
                        return
                    item = await self.queue.get()
                    actions = await self.handle(item)
                    self.service.save(self.session)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # A bug must not cost the caller: hand the call back, then keep following it to
                    # its hang-up so the row is finished like any other.
                    log.exception("call %s: flow failed; handing the call back to the dialplan", self.id)
                    await self.fail(f"internal error during the notice ({type(exc).__name__}: {str(exc)[:160]}); "
                                    "the call went on unrecorded")
                    actions = []
        except asyncio.CancelledError:
            if self.session.state not in (State.IN_DIALPLAN, State.ENDED):
                # Stopped mid-flow: never leave the caller waiting in an app nobody serves.
                await asyncio.shield(self.fail(STOPPED))
            raise
        finally:
            for kind in list(self._timers):
                self.cancel_timer(kind)
            await self.link.release("the call's flow is over")
            self.registry.forget(self)
            if self.session.record.finalized_at is not None:
                self.service.call_finalized(self.session)

    async def handle(self, item: Input) -> list[Action]:
        s, at = self.session, item.at
        if item.kind == "dtmf":
            return s.dtmf(item.data["digit"], at)
        if item.kind == "window":
            return s.window_expired(at)
        if item.kind == "prompt_timeout":
            return s.prompt_timed_out(at)
        if item.kind == "entered_again":
            return s.entered_again(at)
        if item.kind == "shutdown":
            self.closing = True
            return s.abort(at, STOPPED)
        if item.kind == "hangup":
            if item.data.get("note"):
                s.warn(item.data["note"])
            return s.hangup(at, item.data.get("cause"), item.data.get("cause_text"))
        if item.kind == "gone":
            ended_at = await self.service.recording_closed_at(s.record)
            return s.lost(utcnow(), "the channel was gone, its hang-up not seen (its events missed, or a "
                                    "broken AGI session)", ended_at)
        if item.kind == "resync":
            return await self.link.resync()
        return self.link.translate(item) or []

    async def execute(self, actions: list[Action]) -> None:
        pending = list(actions)
        while True:
            if self.closing and self.session.state not in (State.IN_DIALPLAN, State.ENDED):
                # Stopping: hand the caller back now, unrecorded, instead of the next step.
                aborted = self.session.abort(utcnow(), STOPPED)
                if aborted:
                    pending = aborted
                    self.service.save(self.session)
            if not pending:
                return
            action = pending.pop(0)
            if isinstance(action, StartRecording):
                more = await self.service.start_recording(self.session, self.link.channel, action.file,
                                                          action.options)
            elif isinstance(action, FinalizeRecording):
                self.service.finalize_recording(self.session, action.file)
                more = []
            else:
                more = await self.link.do(action)
            self.service.save(self.session)
            pending.extend(more)

    async def fail(self, note: str) -> None:
        """callrec failed (or was stopped) mid-flow: the session decides how the call goes on, and
        the door carries that out as far as it still can."""
        actions = self.session.internal_error(utcnow(), note)
        self.service.save(self.session)
        self.link.interrupt()
        for action in actions:
            try:
                if not isinstance(action, StartRecording | FinalizeRecording):
                    await self.link.do(action)
            except Exception as exc:  # the channel may be gone; the dialplan's fail-safe covers it
                log.warning("call %s: while handing back after a failure: %s", self.id, exc)
        self.service.save(self.session)

    def stop(self) -> None:
        """callrec is stopping: a caller in the notice is handed back at once."""
        self.closing = True
        self.post("shutdown")
        self.link.interrupt()


async def stop_actors(actors: list[CallActor], timeout: float) -> None:
    """Stop every call's actor; those still busy after ``timeout`` are cancelled (and hand their
    call back on the way out)."""
    for actor in actors:
        actor.stop()
    tasks = [a.task for a in actors if a.task is not None]
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
