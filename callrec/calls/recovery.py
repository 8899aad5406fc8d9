"""Calls an earlier run left unfinished (callrec was stopped or crashed mid-call): one path for both doors.

For each open row the door says where the channel is now, and the session decides the rest:

- **gone**: the call ended unseen; it is closed as lost (its end is when Asterisk last wrote the
  recording, when that is known) and its recording finalized;
- **waiting** in callrec's app again (ARI): the door takes the channel up as a new call, so this
  row is closed as lost once the door has stopped what the earlier run started;
- **in the dialplan**: handed back already; the door follows it to its hang-up;
- **unknown** (Asterisk unreachable): tried again at the next connection.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Protocol

from callrec.calls.service import CallService, utcnow
from callrec.calls.session import Action, CallSession, FinalizeRecording
from callrec.store.record import CallRecord

log = logging.getLogger("callrec.calls")


class Whereabouts(StrEnum):
    GONE = "gone"
    WAITING = "waiting"
    IN_DIALPLAN = "in_dialplan"
    UNKNOWN = "unknown"


class RecoveringDoor(Protocol):
    async def whereabouts(self, record: CallRecord) -> Whereabouts:
        """Where the call's channel is now."""
        ...

    async def before_retaking(self, record: CallRecord) -> None:
        """The channel waits in callrec's app again: stop what the earlier run started on it."""
        ...

    def follow(self, session: CallSession) -> None:
        """Follow a call back in the dialplan to its hang-up (an actor with nothing to do first)."""
        ...


async def recover_lost(records: list[CallRecord], service: CallService, door: RecoveringDoor) -> list[CallRecord]:
    """Settle the open rows of an earlier run; returns those to try again later."""
    again: list[CallRecord] = []
    for record in records:
        session = CallSession.restore(record, service.settings.recordings.dir)
        where = await door.whereabouts(record)
        if where is Whereabouts.UNKNOWN:
            again.append(record)
        elif where is Whereabouts.GONE:
            ended_at = await service.recording_closed_at(record)
            note = "the call ended while callrec was down; " + (
                "ended_at is when Asterisk closed the recording" if ended_at else "the hang-up time is unknown")
            finish_lost(service, session, session.lost(utcnow(), note, ended_at))
        elif where is Whereabouts.WAITING:
            await door.before_retaking(record)
            note = "callrec restarted during the notice; the call was taken up again as a new call row"
            finish_lost(service, session, session.lost(utcnow(), note))
        else:
            session.abort(utcnow(), "callrec restarted before the call was handed back")
            session.warn("callrec restarted during the call; followed again from the call log")
            service.save(session)
            door.follow(session)
            log.info("call %s: followed again after a restart (%s)", record.id, record.channel)
    return again


def finish_lost(service: CallService, session: CallSession, actions: list[Action]) -> None:
    """Save a call closed as lost, and finalize its recording if it has one."""
    service.save(session)
    for action in actions:
        if isinstance(action, FinalizeRecording):
            service.finalize_recording(session, action.file)
    if session.record.finalized_at is not None:
        service.call_finalized(session)
    if session.record.warnings:
        log.warning("call %s: %s", session.record.id, session.record.warnings[-1])
