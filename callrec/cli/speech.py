"""``callrec transcribe FILE`` and ``callrec speech status | retry | requeue | worker``: the transcription queue
from the shell (docs/speech.md).  Retry and requeue are audited as the CLI principal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from callrec.cli.common import CommandError, call_id, command, dump, group, json_default, utc
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import table

log = logging.getLogger("callrec")


def add_commands(sub: object) -> None:
    tr = command(sub, "transcribe", "print a recording's transcript with word times (offline; no database)",
                 run_transcribe)
    tr.add_argument("file", help="a WAV file (mono, or stereo: caller left, agent right)")
    tr.add_argument("--language", choices=("ru", "en", "auto"), default=None,
                    help="default: [speech] language (auto: detected)")
    tr.add_argument("--json", action="store_true", help="the transcript as JSON (tracks, segments, words)")
    speech = group(sub, "speech", "the transcription queue: status, retry, requeue, a worker")
    st = command(speech, "status", "jobs by state, audio waiting, rate, ETA, running jobs, failures", run_status)
    st.add_argument("--json", action="store_true", help="one JSON document")
    rt = command(speech, "retry", "queue failed jobs again (their tries start over)", run_retry)
    which = rt.add_mutually_exclusive_group(required=True)
    which.add_argument("--call", type=call_id, help="the call's id")
    which.add_argument("--failed", action="store_true", help="every failed job")
    rt.add_argument("--priority", type=_priority, help=PRIORITY_HELP)
    rq = command(speech, "requeue", "transcribe again (e.g. after a model change), whatever the job's state",
                 run_requeue)
    which = rq.add_mutually_exclusive_group(required=True)
    which.add_argument("--call", type=call_id, help="the call's id")
    which.add_argument("--since", type=_date, help="every recorded call that started at or after this date "
                                                   "(YYYY-MM-DD, or an ISO time; UTC unless it says)")
    rq.add_argument("--priority", type=_priority, help=PRIORITY_HELP)
    command(speech, "worker", "run a transcription worker alone (for another machine; shares the queue)",
            run_worker)


PRIORITY_HELP = ("0-100: higher is transcribed sooner, ahead of newer calls (e.g. a dispute under review); "
                 "default: a job keeps its own, a new job gets 0")


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number 0-100, got {text!r}")
    return value


def _date(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-12-01 or an ISO time, got {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def run_transcribe(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.analytics.queue import SpeechError, transcribe_once

    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"{args.file}: no such file")
    language = args.language or settings.speech.language
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # its per-file chatter is not the transcript
    try:
        transcript = transcribe_once(settings.speech, path, None if language == "auto" else language)
    except SpeechError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(dump(transcript.to_dict()))
        return 0
    detected = " (detected)" if transcript.language_detected else ""
    print(f"{path.name}: {transcript.duration_ms / 1000:.1f} s, {len(transcript.tracks)} track(s), language "
          f"{transcript.language or '-'}{detected}, model {transcript.model}"
          + (f", {transcript.redacted} redaction(s)" if transcript.redacted else ""))
    for speaker, word in transcript.words():
        print(f"{word.start_ms / 1000:8.2f} {word.end_ms / 1000:8.2f}  {speaker:6}  {_printable(word.text)}")
    return 0


def _printable(text: str) -> str:
    """Recognised text is not caller-controlled bytes, but keep control characters off the terminal anyway."""
    return "".join(c for c in text.strip() if c.isprintable())


async def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.store import speechjobs

    async with open_database(settings) as conn:
        try:
            doc = await speechjobs.status(conn)
        except asyncpg.UndefinedTableError:
            raise CommandError("database: no speech tables yet; run `callrec migrate`", 1) from None
    rate_ms = doc["done_last_hour"]["audio_ms"]  # audio transcribed per hour, over the last hour
    doc["rate_audio_hours_per_hour"] = round(rate_ms / 3_600_000, 3)
    doc["eta_s"] = (round(doc["waiting_audio_ms"] / rate_ms * 3600) if rate_ms else None) \
        if doc["waiting_audio_ms"] else 0
    if args.json:
        print(json.dumps(doc, default=json_default, ensure_ascii=True, indent=2))
        return 0
    jobs = doc["jobs"]
    print("jobs: " + ", ".join(f"{jobs[s]} {s}" for s in ("pending", "running", "done", "failed", "skipped")))
    eta = doc["eta_s"]
    print(f"audio waiting: {_audio(doc['waiting_audio_ms'])}; last hour: {doc['done_last_hour']['jobs']} "
          f"job(s), {_audio(rate_ms)} of audio; ETA: "
          + ("-" if eta is None else "now" if eta == 0 else _duration(eta))
          + (" (no rate yet: nothing finished in the last hour)" if eta is None else ""))
    if doc["running"]:
        print()
        print(table(["call id", "worker", "state", "try", "since (UTC)"],
                    [[r["call_id"], r["worker"] or "", _progress(r["progress"]), str(r["attempt"]),
                      r["started_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")] for r in doc["running"]],
                    [36, 28, 18, 3, 19]))
    if doc["failures"]:
        print()
        print(table(["failed call id", "tries", "at (UTC)", "reason"],
                    [[f["call_id"], str(f["attempts"]),
                      f["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if f["at"] else "", f["error"] or ""]
                     for f in doc["failures"]], [36, 5, 19, 80]))
    return 0


def _audio(ms: int) -> str:
    return f"{ms / 3_600_000:.2f} h" if ms >= 360_000 else f"{ms / 60_000:.1f} min"


def _progress(share: float | None) -> str:
    return f"transcribing {round((share or 0) * 100)} %"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


async def _audited(settings: Settings, action: str, change: Any, details: dict[str, Any]) -> list[str]:
    """Run ``change(conn, reason)`` and write one audit entry per call it queued, in one transaction."""
    from callrec.access import cli_principal
    from callrec.store import audit

    who = cli_principal()
    reason = f"{action.replace('speech_', '')} by {who.name}"
    async with open_database(settings) as conn:
        try:
            async with conn.transaction():
                queued: list[str] = await change(conn, reason)
                for cid in queued:
                    await audit.append(conn, actor=who.name, role=who.role, action=action, call_id=cid,
                                       details=details)
        except asyncpg.UndefinedTableError:
            raise CommandError("database: no speech tables yet; run `callrec migrate`", 1) from None
    return queued


async def run_retry(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.store import speechjobs

    ids = None if args.failed else [args.call]
    details: dict[str, Any] = {"failed": bool(args.failed)}
    if args.priority is not None:
        details["priority"] = args.priority
    queued = await _audited(settings, "speech_retry",
                            lambda conn, reason: speechjobs.retry_failed(conn, ids, reason=reason,
                                                                         priority=args.priority), details)
    if args.call and not queued:
        raise CommandError(f"call {args.call}: no failed transcription job", 1)
    print(f"{len(queued)} failed job(s) queued again")
    return 0


async def run_requeue(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.store import speechjobs

    async def change(conn: Any, reason: str) -> list[str]:
        ids = [args.call] if args.call else await speechjobs.calls_since(conn, args.since)
        return await speechjobs.requeue(conn, ids, reason=reason, priority=args.priority)

    details: dict[str, Any] = {"since": utc(args.since)} if args.since else {}
    if args.priority is not None:
        details["priority"] = args.priority
    queued = await _audited(settings, "speech_requeue", change, details)
    if args.call and not queued:
        raise CommandError(f"call {args.call}: no finalized recording, or its job is running now", 1)
    print(f"{len(queued)} call(s) queued for transcription")
    return 0


async def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    """A runner without the daemon: claims jobs from the shared queue until SIGTERM / SIGINT."""
    from callrec.analytics.alerts import AlertMatcher
    from callrec.analytics.queue import SpeechError, SpeechRunner, start_pool_factory

    try:
        factory = await asyncio.to_thread(start_pool_factory, settings.speech)
    except SpeechError as exc:
        raise CommandError(str(exc), 2) from None
    from callrec.cli.database import CONNECT_ERRORS, unreachable
    from callrec.store import connect_pool

    async with open_database(settings, current_schema=True):
        pass  # reachable, and the schema is current
    try:  # LISTEN holds one connection; claims, heartbeats and saves share the rest
        db = await connect_pool(settings.database.dsn, 1, settings.speech.workers + 3)
    except CONNECT_ERRORS as exc:
        raise unreachable(settings.database.dsn, exc) from None
    async with db:
        # Keyword alerts in the saving transaction (contract 1); the daemon's hook runner delivers them.
        runner = SpeechRunner(settings, db, factory, after_save=[AlertMatcher(settings)])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(runner.run(), name="speech-runner")
        log.info("speech worker %s: %d process(es), polling every %ds", runner.worker, settings.speech.workers,
                 settings.speech.poll_interval)
        try:
            await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await runner.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise CommandError(f"speech worker: {task.exception()}", 1)
    return 0


def check_lines(settings: Settings) -> list[tuple[str, bool, str]]:
    """``callrec check``'s speech line: off, or the model found and checked (hashing takes about a second), so a
    missing extra or a corrupt model shows before the daemon starts, not in its first worker."""
    s = settings.speech
    if not s.enabled:
        return [("speech", True, "off (speech.enabled = false: recordings are not transcribed)")]
    from callrec.analytics.queue import SpeechError, check_model

    try:
        model = check_model(s)
    except SpeechError as exc:
        return [("speech", False, str(exc))]
    return [("speech", True, f"model {model}, {s.workers} worker(s), transcribe = {s.transcribe}")]
