"""The call actor both doors share, with a small fake door link (no Asterisk, no PostgreSQL): inputs in
order, the window timer, stopping, and the one failure path.  Both real doors are proven end to end in
tests/e2e (test_calls_e2e, test_agi_e2e, test_call_failure_e2e)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from support.settings import make_settings
from support.waiting import wait_for

from callrec.calls.actor import CallActor, Input, stop_actors
from callrec.calls.policy import Decision
from callrec.calls.service import CallService
from callrec.calls.session import Action, CallSession, HandBack, PlayPrompt, Prompt, StartTimer, State, StopPrompt
from callrec.store.calllog import CallLogWriter
from callrec.store.record import CallRecord

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class FakeLink:
    """A door link that records what it was asked to do, and answers like a healthy channel."""

    channel = "PJSIP/trunk-00000001"

    def __init__(self) -> None:
        self.actor: CallActor | None = None
        self.done: list[Action] = []
        self.released = False
        self.interrupted = False

    async def do(self, action: Action) -> list[Action]:
        assert self.actor is not None
        self.done.append(action)
        if isinstance(action, StartTimer):
            self.actor.start_timer("window", action.seconds)
        if isinstance(action, HandBack):
            return self.actor.session.handed_back(NOW)
        return []

    def translate(self, item: Input) -> list[Action] | None:
        assert self.actor is not None
        if item.kind == "notice_over":
            return self.actor.session.notice_finished(item.at)
        if item.kind == "bug":
            raise RuntimeError("a bug in the door")
        return None

    async def resync(self) -> list[Action]:
        return []

    async def release(self, reason: str) -> None:
        self.released = True

    def interrupt(self) -> None:
        self.interrupted = True


class Registry:
    def __init__(self) -> None:
        self.forgotten: list[CallActor] = []

    def forget(self, actor: CallActor) -> None:
        self.forgotten.append(actor)


def actor_for(mode: str, window: float = 5.0) -> tuple[CallActor, FakeLink, Registry, list[CallRecord]]:
    settings = make_settings(None, "postgresql://nowhere/none")
    service = CallService(settings, None, CallLogWriter(None), None)  # type: ignore[arg-type]
    finalized: list[CallRecord] = []
    service.on_call_finalized.append(finalized.append)
    record = CallRecord(id="11111111-2222-3333-4444-555555555555", door="ari", uniqueid="1.1", started_at=NOW,
                        channel=FakeLink.channel)
    prompt = Prompt("notice", "en", "sound:/p/en/notice", "/p/en/notice.wav", "ab" * 32, 4.0)
    session = CallSession(record, Decision(mode=mode, language="en", prompt="notice", mixmonitor_options="",
                                           rule=None), prompt, opt_out_key="9", opt_in_key="1",
                          decision_window=window, confirm=None, recordings_dir="/rec")
    link, registry = FakeLink(), Registry()
    actor = CallActor(session, service, link, registry)
    link.actor = actor
    return actor, link, registry, finalized


def kinds(actions: list[Any]) -> list[str]:
    return [type(a).__name__ for a in actions]


async def test_inputs_are_handled_in_order_and_the_call_is_followed_to_its_hang_up() -> None:
    actor, link, registry, finalized = actor_for("opt-out")
    task = actor.start(actor.session.start())
    actor.post("dtmf", digit="5")  # not the opt-out key: logged only
    actor.post("dtmf", digit="9")  # declined: the notice stops, the call goes back unrecorded
    await wait_for(lambda: actor.session.state is State.IN_DIALPLAN, 5)
    assert kinds(link.done) == ["PlayPrompt", "StopPrompt", "HandBack"]
    assert actor.session.record.keys_pressed == "59" and actor.session.record.consent == "declined"
    actor.post("hangup", cause=16)
    await asyncio.wait_for(task, 5)
    assert actor.session.state is State.ENDED and actor.session.record.hangup_cause == 16
    assert registry.forgotten == [actor] and link.released and [r.id for r in finalized] == [actor.id]


async def test_the_window_timer_posts_into_the_same_queue() -> None:
    actor, link, _, _ = actor_for("opt-in", window=0.05)
    actor.start(actor.session.start())
    actor.post("notice_over")
    await wait_for(lambda: actor.session.state is State.IN_DIALPLAN, 5)
    assert kinds(link.done) == ["PlayPrompt", "StartTimer", "HandBack"]
    assert actor.session.record.consent == "not_given"
    await stop_actors([actor], 5)


async def test_a_bug_hands_the_call_back_by_the_sessions_decision_and_the_call_is_still_followed() -> None:
    actor, link, registry, finalized = actor_for("notice")
    task = actor.start(actor.session.start())
    actor.post("bug")
    await wait_for(lambda: actor.session.state is State.IN_DIALPLAN, 5)
    assert isinstance(link.done[0], PlayPrompt) and link.done[1] == StopPrompt()
    back = link.done[2]
    assert isinstance(back, HandBack) and back.variables["CALLREC_CONSENT"] == "unavailable"
    assert actor.session.record.consent == "unavailable" and actor.session.record.handed_back_at is not None
    assert "internal error during the notice (RuntimeError: a bug in the door)" in actor.session.record.warnings[-1]
    assert not task.done() and not registry.forgotten  # still following the call
    actor.post("hangup")
    await asyncio.wait_for(task, 5)
    assert actor.session.state is State.ENDED and [r.id for r in finalized] == [actor.id]


async def test_stopping_hands_a_caller_in_the_notice_back_at_once() -> None:
    actor, link, registry, _ = actor_for("opt-out")
    task = actor.start(actor.session.start())
    await wait_for(lambda: link.done, 5)
    await stop_actors([actor], 5)
    assert task.done() and link.interrupted and registry.forgotten == [actor]
    assert kinds(link.done) == ["PlayPrompt", "StopPrompt", "HandBack"]
    assert actor.session.record.consent == "unavailable" and actor.session.state is State.IN_DIALPLAN


async def test_a_cancelled_actor_still_hands_the_caller_back() -> None:
    actor, link, _, _ = actor_for("opt-out")
    task = actor.start(actor.session.start())
    await wait_for(lambda: link.done, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(link.done[-1], HandBack) and actor.session.record.consent == "unavailable"
