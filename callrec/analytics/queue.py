"""The transcription queue: which recordings are queued, and the runner that transcribes them.

    finalized call (status ready) -> SpeechQueue: policy ([speech] transcribe, a rule's `transcribe`),
    backlog cap -> speech_jobs row (pending | skipped) + NOTIFY callrec_speech
    -> SpeechRunner (one per `callrec serve` / `callrec speech worker`, any machine): claim (SKIP LOCKED),
    lease + heartbeats, sha256 of the file = the call log's, SpeechPool (niced child processes),
    redaction, talk statistics, save + job done + after_save callbacks in one transaction.

Nothing here runs on the call path: the finalize callback only notes the call id; the database work and
the transcription happen in background tasks and child processes.  See docs/speech.md#the-queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from callrec.config.settings import Settings
from callrec.config.speech import SpeechSettings
from callrec.recording.files import OutsideFolder, in_files
from callrec.speech.engine import AudioError
from callrec.speech.model import ModelError
from callrec.speech.pool import SpeechPool
from callrec.speech.redact import redact_transcript
from callrec.speech.stats import transcript_stats
from callrec.speech.transcript import Segment, Transcript, Word
from callrec.storage import BadCiphertext, Storage, WrongMasterKey
from callrec.store import speechjobs
from callrec.store.calllog import CallLogWriter
from callrec.store.db import Conn
from callrec.store.record import CallRecord
from callrec.store.transcripts import save_transcript

__all__ = [
    "AfterSave", "Redactor", "SpeechQueue", "SpeechRunner", "backlog_skip", "backoff", "job_language",
    "policy_skip", "queue_finalized", "worker_id",
]

log = logging.getLogger("callrec.speech")

# After a transcript is saved, in the same transaction: (conn, call_id).  Alerts match here (contract 1).
AfterSave = Callable[[Conn, str], Awaitable[None]]
MAX_BACKOFF = 3600.0
PROGRESS_EVERY = 5.0  # seconds between heartbeats (lease and progress) of a running job
MASK = "****"


def worker_id() -> str:
    """``host:pid``: who holds a job (shown by `callrec speech status`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempt: int, initial: float) -> float:
    """Seconds before try ``attempt + 1`` after try ``attempt`` (1, 2, ...) failed: doubling, at most an hour."""
    return min(MAX_BACKOFF, initial * 2 ** min(max(attempt, 1) - 1, 30))


def job_language(call_language: str | None, default: str) -> str | None:
    """``ru``/``en`` from the call row (``ru``, ``ru_RU``, ``en-GB``...), else ``[speech] language``; None: detect."""
    if call_language:
        code = call_language.strip().lower()[:2]
        if code in ("ru", "en"):
            return code
    return None if default == "auto" else default


def policy_skip(settings: Settings, policy_rule: str | None) -> str | None:
    """Why a call's recording is not to be transcribed, or None when it is (``[speech] transcribe`` and the
    call's policy rule's ``transcribe``)."""
    mode = settings.speech.transcribe
    rule = next((r for r in settings.policy.rules if r.name == policy_rule), None)
    if mode == "none":
        return "[speech] transcribe = none"
    if mode == "all":
        if rule is not None and rule.transcribe is False:
            return f"policy rule {rule.name}: transcribe = false"
        return None
    if rule is not None and rule.transcribe:
        return None
    return f"[speech] transcribe = rules and policy rule {policy_rule or '(none)'} does not ask for it"


def selected_rules(settings: Settings) -> tuple[list[str] | None, list[str]]:
    """The policy rules whose calls are queued (None: any) and those whose calls are not, for the sweep's SQL."""
    rules = settings.policy.rules
    if settings.speech.transcribe == "rules":
        return [r.name for r in rules if r.transcribe], []
    return None, [r.name for r in rules if r.transcribe is False]


def backlog_skip(waiting_ms: int, audio_ms: int, cap_hours: float, keep_percent: float, draw: float) -> str | None:
    """The backlog policy: under the cap (or no cap) every recording is queued; over it, a ``keep_percent``
    share is (``draw`` in [0, 1)), the rest skipped with this reason."""
    if cap_hours <= 0 or (waiting_ms + audio_ms) / 3_600_000 <= cap_hours:
        return None
    if draw * 100 < keep_percent:
        return None
    return (f"backlog: {waiting_ms / 3_600_000:.1f} h of audio waiting, over [speech] backlog_hours = "
            f"{cap_hours:g}; {keep_percent:g}% of new recordings kept, this one sampled out")


class Redactor:
    """Card numbers (Luhn, callrec.speech.redact) and ``[speech] redact_patterns``: every word a match touches
    is masked (its time kept), before anything is stored."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [re.compile(p) for p in patterns]

    def __call__(self, transcript: Transcript) -> Transcript:
        transcript = redact_transcript(transcript)
        if not self.patterns:
            return transcript
        count = 0
        tracks = []
        for track in transcript.tracks:
            segments = []
            for seg in track.segments:
                seg, n = self._segment(seg)
                segments.append(seg)
                count += n
            tracks.append(replace(track, segments=tuple(segments)) if count else track)
        return transcript.with_tracks(tuple(tracks), redacted=transcript.redacted + count)

    def _segment(self, seg: Segment) -> tuple[Segment, int]:
        text = "".join(w.text for w in seg.words) if seg.words else seg.text
        spans = [m.span() for p in self.patterns for m in p.finditer(text) if m.end() > m.start()]
        if not spans:
            return seg, 0
        if not seg.words:
            return Segment(seg.start_ms, seg.end_ms, MASK, ()), len(spans)
        words: list[Word] = []
        at = 0
        for w in seg.words:
            start, end = at, at + len(w.text)
            at = end
            if any(a < end and b > start for a, b in spans):
                lead = w.text[:len(w.text) - len(w.text.lstrip())]
                w = replace(w, text=lead + MASK)
            words.append(w)
        return Segment(seg.start_ms, seg.end_ms, "".join(w.text for w in words), tuple(words)), len(spans)


async def queue_finalized(db: Any, settings: Settings, call_ids: Sequence[str] | None = None,
                          draw: Callable[[], float] = random.random) -> dict[str, int]:
    """Queue the given finalized calls (or, without ``call_ids``, the sweep: those of the last
    ``backfill_days`` days) that have no job yet, under the policy and the backlog cap.  Idempotent."""
    s = settings.speech
    counts = {"queued": 0, "skipped": 0}
    if s.transcribe == "none":
        return counts
    found = await speechjobs.candidates(db, call_ids=call_ids, since_days=s.backfill_days)
    if not found:
        return counts
    waiting = await speechjobs.waiting_ms(db)
    for c in found:
        if policy_skip(settings, c["policy_rule"]) is not None:
            continue  # not wanted: no job at all (it shows as "none")
        reason = backlog_skip(waiting, c["audio_ms"], s.backlog_hours, s.backlog_keep_percent, draw())
        state = "skipped" if reason else "pending"
        if await speechjobs.enqueue(db, c["call_id"], audio_ms=c["audio_ms"], call_at=c["ended_at"],
                                    language=job_language(c["language"], s.language), state=state,
                                    reason=reason or "recording finalized"):
            counts["skipped" if reason else "queued"] += 1
            if not reason:
                waiting += c["audio_ms"]
    return counts


class SpeechQueue:
    """The daemon's side: the finalize callback notes the call (no I/O); a background task writes the job once
    the call log has the row, and sweeps for finalized calls without a job at start and every poll."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, writer: CallLogWriter | None) -> None:
        self.settings = settings
        self.db = db
        self.writer = writer
        self._incoming: list[str] = []
        self._wake = asyncio.Event()
        self._stop = False
        self.queued: list[Callable[[dict[str, int]], None]] = []  # observers (tests, benchmarks)

    def on_call_finalized(self, record: CallRecord) -> None:
        if record.recording_status == "ready" and record.recording_path:
            self._incoming.append(record.id)
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while not self._stop:
            self._wake.clear()
            try:
                if loop.time() >= next_sweep:
                    done = await queue_finalized(self.db, self.settings)
                    if sum(done.values()):
                        log.info("speech: sweep queued %(queued)d recording(s), skipped %(skipped)d", done)
                    next_sweep = loop.time() + self.settings.speech.poll_interval
                if self._incoming:
                    if self.writer is not None:
                        await self.writer.flush()  # the job's row references the call's
                    ids, self._incoming = self._incoming, []
                    done = await queue_finalized(self.db, self.settings, ids)
                    for observer in self.queued:
                        observer(done)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # The sweep finds these calls again once the database is back.
                log.warning("speech: could not queue recordings (%s); trying again later", _brief(exc))
                next_sweep = loop.time() + self.settings.speech.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.speech.poll_interval)

    def stop(self) -> None:
        self._stop = True
        self._wake.set()


class _Lost(Exception):
    """The job is no longer this worker's (lease ran out and another took it, or it was requeued)."""


class SpeechRunner:
    """Claims jobs and transcribes them in a :class:`SpeechPool`, ``[speech] workers`` at a time."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, pool_factory: Callable[[], SpeechPool], *,
                 after_save: Sequence[AfterSave] = (), worker: str | None = None,
                 storage: Storage | None = None) -> None:
        self.settings = settings
        self.storage = storage if storage is not None else Storage.of(settings)
        self.speech: SpeechSettings = settings.speech
        self.db = db
        self.pool_factory = pool_factory
        self.pool: SpeechPool | None = None
        self.after_save: list[AfterSave] = list(after_save)
        self.worker = worker or worker_id()
        self.redact = Redactor(self.speech.redact_patterns)
        self.on_job: list[Callable[[str, str], None]] = []  # (call_id, outcome) observers: tests, benchmarks
        self._wake = asyncio.Event()
        self._stop = False
        self._running: dict[asyncio.Task[None], str] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="callrec-speech-"))
        self._listener: Any = None

    # -- lifecycle --

    async def run(self) -> None:
        """Until :meth:`close`: claim due jobs while a worker is free; wake on NOTIFY, a finished job or the poll."""
        if self.pool is None:
            self.pool = await asyncio.to_thread(self.pool_factory)
        await self._listen()
        while not self._stop:
            self._wake.clear()
            try:
                for lost in await speechjobs.expire_leases(self.db, self.speech.max_attempts):
                    log.warning("speech: call %s: %s; %s", lost["call_id"], lost["error"],
                                "failed for good" if lost["state"] == "failed" else "queued again")
                while len(self._running) < self.speech.workers and not self._stop:
                    job = await speechjobs.claim(self.db, self.worker, self.speech.lease)
                    if job is None:
                        break
                    task = asyncio.create_task(self._run_job(job), name=f"speech-{job['call_id']}")
                    self._running[task] = job["call_id"]
                    task.add_done_callback(self._job_ended)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("speech: queue unreachable (%s); trying again in %ds", _brief(exc),
                            self.speech.poll_interval)
            if self._listener is None or self._listener.is_closed():
                await self._relisten()  # the database restarted: notifications stopped, polling goes on
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.speech.poll_interval)

    def _job_ended(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; without it the runner still polls."""
        try:
            conn = await self.db.acquire()
            await conn.add_listener(speechjobs.CHANNEL, self._notified)
            self._listener = conn
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("speech: LISTEN %s failed (%s); polling every %ds", speechjobs.CHANNEL, _brief(exc),
                        self.speech.poll_interval)

    async def _relisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self.db.release(self._listener)
            self._listener = None
        await self._listen()

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop claiming; jobs still running are given back (pending, the try not counted), the pool stopped."""
        self._stop = True
        self._wake.set()
        running = dict(self._running)
        if running and self.pool is not None:
            # A transcription may take minutes: end the worker processes instead of waiting for them.
            await asyncio.to_thread(self.pool.terminate)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for call_id in running.values():
            with contextlib.suppress(Exception):
                await speechjobs.release(self.db, call_id, self.worker)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(speechjobs.CHANNEL, self._notified)
            with contextlib.suppress(Exception):
                await self.db.release(self._listener)
            self._listener = None
        if self.pool is not None:
            await asyncio.to_thread(self.pool.terminate if running else self.pool.close)
            self.pool = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- one job --

    async def _run_job(self, job: dict[str, Any]) -> None:
        call_id = job["call_id"]
        outcome = "error"
        try:
            outcome = await self._transcribe(job)
        except asyncio.CancelledError:
            raise
        except _Lost:
            outcome = "lost"
            log.warning("speech: call %s: the job was taken over (lease ran out or requeued); result dropped",
                        call_id)
        except Exception as exc:
            outcome = await self._failed(job, exc)
        finally:
            for observer in self.on_job:
                observer(call_id, outcome)

    async def _transcribe(self, job: dict[str, Any]) -> str:
        call_id = job["call_id"]
        call = await self.db.fetchrow(
            "SELECT recording_path, recording_sha256, recording_status, language FROM calls WHERE id = $1::uuid",
            call_id)
        if call is None or call["recording_status"] != "ready" or not call["recording_sha256"]:
            raise _Permanent(f"no ready recording (status {call['recording_status'] if call else 'no call'})")
        try:
            # The plain audio wherever it is stored: the local file, or a copy decrypted or fetched from the bucket.
            path, sha, copied = await in_files(self.storage.plain_file, call["recording_path"], self._tmp)
        except (OutsideFolder, FileNotFoundError, BadCiphertext, WrongMasterKey) as exc:
            raise _Permanent(f"recording file: {exc}") from None
        try:
            return await self._transcribe_file(job, call, call_id, path, sha)
        finally:
            if copied:
                path.unlink(missing_ok=True)

    async def _transcribe_file(self, job: dict[str, Any], call: Any, call_id: str, path: Path, sha: str) -> str:
        if sha != call["recording_sha256"]:
            raise _Permanent(f"recording file changed since it was finalized: sha256 {sha[:16]}..., the call log "
                             f"says {call['recording_sha256'][:16]}...; not transcribed")
        language = job_language(job.get("language") or call["language"], self.speech.language)
        progress = self._tmp / f"{call_id}.progress"
        beat = asyncio.create_task(self._heartbeats(call_id, progress), name=f"speech-beat-{call_id}")
        try:
            pool = self.pool
            assert pool is not None
            job["pool"] = pool  # a BrokenProcessPool replaces this one, not a newer one
            transcript = await pool.transcribe(path, language, progress)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            progress.unlink(missing_ok=True)
        transcript = self.redact(transcript)
        stats = transcript_stats(transcript)
        assert self.pool is not None
        try:
            async with self.db.acquire() as conn, conn.transaction():
                await save_transcript(conn, call_id, transcript.to_dict(), stats.to_dict(), recording_sha256=sha,
                                      model_sha256=self.pool.model.sha256,
                                      decode_s=transcript.timing.get("decode_s"))
                if not await speechjobs.finish(conn, call_id, self.worker):
                    raise _Lost()
                for callback in self.after_save:
                    await callback(conn, call_id)
        except asyncpg.CheckViolationError:
            # The audio was deleted while it was being transcribed (retention, erase, a manual delete): the
            # database refuses its transcript (migration 011) and the deletion took the job with it.
            if await self.db.fetchval("SELECT audio_deleted_at IS NOT NULL FROM calls WHERE id = $1::uuid", call_id):
                log.info("speech: call %s: its audio was deleted while it was transcribed; transcript dropped",
                         call_id)
                return "dropped"
            raise
        log.info("speech: call %s transcribed (%s, %.1f s of audio, %d word(s), %d redaction(s))", call_id,
                 transcript.language or "no speech", transcript.duration_ms / 1000,
                 sum(1 for _ in transcript.words()), transcript.redacted)
        return "done"

    async def _heartbeats(self, call_id: str, progress: Path) -> None:
        # Renew the lease well before it runs out, and keep the progress shown ("transcribing 40 %") fresh.
        every = max(1.0, min(self.speech.lease / 3, PROGRESS_EVERY))
        while True:
            await asyncio.sleep(every)
            share: float | None = None
            with contextlib.suppress(OSError, ValueError):
                share = float(await asyncio.to_thread(progress.read_text))
            try:
                if not await speechjobs.heartbeat(self.db, call_id, self.worker, self.speech.lease, share):
                    if await speechjobs.job(self.db, call_id) is None:  # the audio's deletion took the job
                        log.info("speech: call %s: its job was removed (the audio was deleted)", call_id)
                    else:
                        log.warning("speech: call %s: lost the job's lease", call_id)
                    return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("speech: heartbeat for call %s failed (%s)", call_id, _brief(exc))

    async def _failed(self, job: dict[str, Any], exc: Exception) -> str:
        call_id = job["call_id"]
        attempt = int(job["attempts"])
        if isinstance(exc, BrokenProcessPool):
            error = "a transcription worker process died (killed, or out of memory)"
            await self._new_pool(job.get("pool"))
        elif isinstance(exc, _Permanent | AudioError):
            error = str(exc)
        else:
            error = _brief(exc)
        final = isinstance(exc, _Permanent | AudioError) or attempt >= self.speech.max_attempts
        retry_in = None if final else backoff(attempt, self.speech.retry_delay)
        if isinstance(exc, BrokenProcessPool):
            retry_in = None if attempt >= self.speech.max_attempts else 0.0  # not the recording's fault
        try:
            state = await speechjobs.fail(self.db, call_id, self.worker, error, retry_in)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as db_exc:
            log.error("speech: call %s failed (%s) and the queue could not be told (%s); its lease will run out",
                      call_id, error, _brief(db_exc))
            return "error"
        if state is None:  # taken over after its lease ran out, or removed with the audio: not ours to count
            log.info("speech: call %s: %s; the job is no longer this worker's", call_id, error)
            return "lost"
        level = logging.ERROR if state == "failed" or isinstance(exc, ModelError) else logging.WARNING
        log.log(level, "speech: call %s, try %d: %s; %s", call_id, attempt, error,
                "failed for good" if state == "failed" else f"trying again in {retry_in:.0f}s")
        return "failed" if state == "failed" else "retry"

    async def _new_pool(self, broken: SpeechPool | None) -> None:
        """A worker process died: the executor is broken for every job on it; start a fresh pool (once, however
        many jobs saw it break)."""
        if broken is None or self.pool is not broken:
            return
        self.pool = await asyncio.to_thread(self.pool_factory)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(broken.close, True)


class _Permanent(Exception):
    """A job that trying again would not help (no file, a changed file): failed at once."""


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


# -- for `callrec transcribe` and `callrec speech worker` (cli/ reaches the engine only through this room) --

SpeechError = (ModelError, AudioError)


def transcribe_once(settings: SpeechSettings, path: str | Path, language: str | None) -> Transcript:
    """One file, in this process (the CLI): the model checked, the file transcribed and redacted as the queue
    would store it.  Raises ModelError (names the setting) or AudioError."""
    from callrec.speech.engine import EngineOptions, load_engine, transcribe_file
    from callrec.speech.model import prepare_model

    engine = load_engine(prepare_model(settings), EngineOptions.from_settings(settings))
    return Redactor(settings.redact_patterns)(transcribe_file(engine, path, language))


def check_model(settings: SpeechSettings) -> str:
    """``callrec check``: the model the settings name, found and hash-checked (joined first when needed); its id
    and folder.  Raises ModelError (names the setting)."""
    from callrec.speech.model import prepare_model

    info = prepare_model(settings)
    return f"{info.model_id} in {info.path}"


def start_pool_factory(settings: SpeechSettings) -> Callable[[], SpeechPool]:
    """Check (or join) the model now, blocking; then a factory of pools that reuse it.  Raises ModelError."""
    from callrec.speech.model import prepare_model

    model = prepare_model(settings)
    return lambda: SpeechPool(settings, model)
