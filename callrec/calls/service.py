"""What both doors (ARI, later FastAGI) share: opening a call, recording, logging, finalizing."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callrec.asterisk.ami import Ami, AmiError, AmiTimeout
from callrec.calls.policy import NOT_RECORDED_PROMPT, CallFacts, decide
from callrec.calls.prompts import PromptCatalog
from callrec.calls.session import Action, CallSession, RecordingStatus
from callrec.config.settings import Settings
from callrec.recording.files import OutsideFolder, in_files, recording_path
from callrec.recording.finalize import finalize_call_recording
from callrec.recording.stereo import mixmonitor_args as stereo_mixmonitor_args
from callrec.recording.stereo import part_names as stereo_part_names
from callrec.store.calllog import CallLogWriter
from callrec.store.record import CallRecord

log = logging.getLogger("callrec.calls")


def utcnow() -> datetime:
    return datetime.now(UTC)


class CallService:
    def __init__(self, settings: Settings, prompts: PromptCatalog, writer: CallLogWriter, ami: Ami) -> None:
        self.settings = settings
        self.prompts = prompts
        self.writer = writer
        self.ami = ami
        self._background: set[asyncio.Task[Any]] = set()
        # Tests and the demo wait on these instead of sleeping.
        self.on_call_finalized: list[Callable[[CallRecord], None]] = []
        self.finalized = 0
        # QA sampling draws; policy.sample_seed makes the sequence repeatable (None: seeded by the OS).
        self.sampler = random.Random(settings.policy.sample_seed)

    def open_call(self, *, door: str, uniqueid: str, channel: str, facts: CallFacts,
                  caller_name: str | None, started_at: datetime) -> CallSession:
        """Make the session for a new call.  No I/O: the caller is about to hear the notice."""
        s = self.settings
        decision = decide(s.policy, s.notice, s.recordings, facts, self.prompts.available(), draw=self.sampler.random)
        notice = self.prompts.get(decision.language, decision.prompt)
        assert notice is not None, "decide() only picks installed prompts"
        confirm = None
        if s.notice.confirm_not_recorded:
            confirm = self.prompts.get(decision.language, NOT_RECORDED_PROMPT) or self.prompts.get(
                s.notice.default_language, NOT_RECORDED_PROMPT)
        record = CallRecord(
            id=str(uuid.uuid4()), door=door, uniqueid=uniqueid, channel=channel, started_at=started_at,
            caller_number=facts.caller, caller_name=caller_name, called_number=facts.did,
            context=facts.context, channel_language=facts.channel_language or None,
        )
        session = CallSession(
            record, decision, notice, opt_out_key=s.notice.opt_out_key, opt_in_key=s.notice.opt_in_key,
            decision_window=s.notice.decision_window, confirm=confirm, recordings_dir=s.recordings.dir,
        )
        for warning in decision.warnings:
            log.warning("call %s: %s", record.id, warning)
        if not decision.record:
            log.info("call %s: not recorded by policy: %s", record.id, decision.reason)
        return session

    def save(self, session: CallSession) -> None:
        self.writer.update(session.record.id, session.take_changes())
        if session.parties is not None:
            if session.record.ended_at is not None:
                session.parties.ended(session.record.ended_at)
            rows = session.parties.take_rows()
            if rows is not None:
                self.writer.update(session.record.id, {"parties": rows})

    async def start_recording(self, session: CallSession, channel: str, file: str, options: str) -> list[Action]:
        """MixMonitor through AMI; the outcome goes into the session either way."""
        path = f"{self.settings.recordings.dir.rstrip('/')}/{file}"
        if session.record.recording_channels == 2:  # stereo: one file per direction, merged at the end
            path, options = stereo_mixmonitor_args(self.settings.recordings.dir, file, options)
        try:
            await self.ami.mix_monitor(channel, path, options)
        except AmiTimeout as exc:
            # Asterisk got the action but did not answer: it may be recording.  Tell the dialplan
            # "not recorded", and look for the file at hang-up all the same.
            log.error("call %s: MixMonitor unanswered: %s", session.record.id, exc)
            actions = session.recording_uncertain(utcnow(), str(exc))
        except AmiError as exc:
            log.error("call %s: MixMonitor failed: %s", session.record.id, exc)
            actions = session.recording_failed(utcnow(), str(exc))
        else:
            actions = session.recording_started(utcnow())
        self.save(session)
        return actions

    def finalize_recording(self, session: CallSession, file: str) -> None:
        """After hang-up: in the background, wait for the file to close, measure it, log it."""
        task = asyncio.create_task(self._finalize(session, file), name=f"finalize-{session.record.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finalize(self, session: CallSession, file: str) -> None:
        try:
            r = session.record
            result = await finalize_call_recording(
                self.settings, file, channels=r.recording_channels,
                why_empty=lambda: (r.bridged_at, session.decision.mixmonitor_options, session.dial_status))
            session.recording_finalized(utcnow(), result.status, result.facts)
        except Exception as exc:  # never leave a row in "finalizing"
            log.exception("call %s: finalizing %s failed", session.record.id, file)
            session.recording_finalized(utcnow(), RecordingStatus.FAILED, {"recording_error": str(exc)[:500]})
        self.save(session)
        self.call_finalized(session)

    def call_finalized(self, session: CallSession) -> None:
        self.finalized += 1
        r = session.record
        log.info("call %s finished: consent=%s recording=%s%s", r.id, r.consent, r.recording_status,
                 f" ({r.recording_duration:.1f}s)" if r.recording_duration else "")
        for callback in list(self.on_call_finalized):
            try:
                callback(r)
            except Exception:
                log.exception("call-finalized callback failed")

    async def recording_closed_at(self, record: CallRecord) -> datetime | None:
        """When Asterisk last wrote the call's recording (its end, for a call that ended unseen)."""
        if not record.recording_path:
            return None
        # A stereo call's per-direction files (not merged yet): the later of the two.
        names = (record.recording_path, *stereo_part_names(record.recording_path))
        times = await in_files(_mtimes, self.settings.recordings.local_path, names)
        if times is None:
            return None
        mixed = times[0]
        return datetime.fromtimestamp(mixed if mixed is not None else max(t for t in times if t is not None), UTC)

    async def close(self, timeout: float = 10.0) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)


def _mtimes(local_dir: Path, names: tuple[str, ...]) -> list[float | None] | None:
    """Last-write times of recording files (None: absent); None if no file is there."""
    times: list[float | None] = []
    for name in names:
        try:
            times.append(recording_path(local_dir, name).stat().st_mtime)
        except (OSError, OutsideFolder):
            times.append(None)
    return times if any(t is not None for t in times) else None
