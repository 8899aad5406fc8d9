"""The daemon reads only the events it uses: AMI through its session's ``Filter`` (the sandbox's manager.conf
has no ``eventfilter``, so without it every call-class event of every channel arrives), ARI through the app's
event filter (without it, the channel followed after the hand-back brings every ChannelVarset and
ChannelDialplan of the dialplan)."""

from __future__ import annotations

from typing import Any

from caller import Finished, Tester
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.doors.ari import ARI_EVENTS


async def test_asterisk_delivers_only_the_events_callrec_reads(daemon: Daemon, tester: Tester,
                                                               finished: Finished) -> None:
    ami = daemon.ami
    assert ami is not None and ami.manager is not None
    await wait_for(lambda: ami.filtered, 10, what="Asterisk to take the AMI event filter")
    seen: list[str] = []
    dispatch = ami.manager.dispatch

    def counting(event: Any) -> Any:
        seen.append(str(event.get("Event")))
        return dispatch(event)

    ami.manager.dispatch = counting  # type: ignore[method-assign]
    door = daemon.door
    assert door is not None
    ari_seen: list[str] = []
    on_event = door.stream.on_event

    def ari_counting(event: dict[str, Any]) -> Any:
        ari_seen.append(str(event.get("type")))
        return on_event(event)

    door.stream.on_event = ari_counting
    call = await tester.place_call(args="mode=notice")
    back = await call.handed_back()
    assert back["consent"] == "implied"
    await call.hang_up()
    await finished.wait(call.callee_id)
    # Its hang-up came through AMI too (the ARI door's second source) ...
    await wait_for(lambda: "Hangup" in seen, 10, what="AMI's Hangup of the call")
    # ... and nothing else of the dozens of call-class events its channels raised.
    assert set(seen) <= set(ami.event_names()), sorted(set(seen) - set(ami.event_names()))
    assert {"Hangup", "BridgeEnter", "DialEnd", "UserEvent"} <= set(ami.event_names())
    # ARI: the call's own events, its hang-up after the hand-back among them, and none of the others.
    assert {"StasisStart", "PlaybackStarted", "PlaybackFinished", "StasisEnd", "ChannelDestroyed"} <= set(ari_seen)
    assert set(ari_seen) <= set(ARI_EVENTS), sorted(set(ari_seen) - set(ARI_EVENTS))
    app = await door.ari.request("GET", f"/applications/{door.ari.app}")
    assert sorted(e["type"] for e in app["events_allowed"]) == sorted(ARI_EVENTS)
