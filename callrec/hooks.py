"""Post-recording hooks: a command and/or an HTTP webhook, run once a recording is finalized.

"Finalized" means Asterisk closed the file and callrec measured and hashed it
(``CallService.on_call_finalized`` with recording status ``ready`` or ``unclosed``): a hook
never sees a file Asterisk is still writing.

The hooks go through an outbox table, ``hook_jobs``, so they survive a daemon restart:

    on_call_finalized (no I/O) -> in memory -> writer.flush(), INSERT ... ON CONFLICT DO NOTHING
    -> the runner claims due rows (FOR UPDATE SKIP LOCKED, with a lease) -> at most
    ``hooks.concurrency`` runs at once -> done | retry with backoff | failed after max_attempts

Keyword alerts (callrec/analytics/alerts.py) use the same outbox: ``queue_alert`` writes one job per
alert hook (``[hooks] alert_webhook_url`` / ``alert_command``, event ``alert.matched``, key
``alert:<id>``) in the transaction that stores the alert, and this runner delivers them.

Delivery is at least once: a run whose outcome could not be recorded (crash, database away) is
run again after its lease.  Webhooks carry ``Idempotency-Key: <call id>:webhook`` (an alert:
``<alert id>:webhook``) so a receiver can drop a repeat.  Secrets (the Authorization value, the
HMAC key) never reach the log, and a hook command gets none of the daemon's ``CALLREC_*`` / ``PG*`` environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from callrec import __version__
from callrec.config.settings import ALERT_HOOK_PLACEHOLDERS, HOOK_PLACEHOLDERS, HookSettings, Settings
from callrec.store.calllog import CallLogWriter, is_transient
from callrec.store.db import Conn, record_from_row
from callrec.store.record import CallRecord

log = logging.getLogger("callrec.hooks")

HOOKED_STATUSES = ("ready", "unclosed")  # a file exists and Asterisk is done with it
LEASE_MARGIN = 30.0  # seconds past a hook's own timeout before another run may take the job
POLL_SECONDS = 30.0  # look for due jobs at least this often (other processes may add some)
ERROR_CHARS = 500
SWEEP_WINDOW = 3600.0  # seconds: how far back the start-up sweep looks for unqueued hooks
RECORDING_EVENT = "recording.finalized"
ALERT_EVENT = "alert.matched"
# NOTIFY'd by queue_alert in the alert's transaction, so PostgreSQL delivers it at commit, to the runner
# of whatever process or machine: the alert's hooks run at once instead of at the next poll.
ALERT_CHANNEL = "callrec_alert_hooks"


class HookError(Exception):
    """One failed attempt, worded for the log and hook_jobs.last_error (no secrets)."""


@dataclass(frozen=True)
class Job:
    id: int
    call_id: str
    hook: str  # command | webhook
    payload: dict[str, Any]
    attempt: int  # this attempt's number, from 1
    event: str = RECORDING_EVENT  # or ALERT_EVENT
    key: str = ""  # "alert:<id>" for an alert

    @property
    def what(self) -> str:
        """How the log names the job: the call, or the alert and its call."""
        return f"call {self.call_id}" if not self.key else f"{self.key.replace(':', ' ')} (call {self.call_id})"


@dataclass(frozen=True)
class Attempt:
    """What one run did; the runner's on_attempt observers get it (tests wait on these)."""

    job_id: int
    call_id: str
    hook: str
    attempt: int
    ok: bool
    error: str | None
    final: bool  # done, or failed for good


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def call_facts(r: CallRecord) -> dict[str, Any]:
    """The call as every hook payload describes it.  Caller-supplied text is passed verbatim."""
    iso = _iso
    return {
        "uniqueid": r.uniqueid,
        "linkedid": r.linkedid,
        "door": r.door,
        "direction": r.direction,
        "caller_number": r.caller_number,
        "caller_name": r.caller_name,
        "called_number": r.called_number,
        "context": r.context,
        "language": r.language,
        "started_at": iso(r.started_at),
        "ended_at": iso(r.ended_at),
        "hangup_cause": r.hangup_cause,
    }


def build_payload(record: CallRecord, settings: Settings) -> dict[str, Any]:
    """What a hook learns about a finished recording.  Caller-supplied text is passed verbatim."""
    r = record
    file = r.recording_path or ""
    iso = _iso

    return {
        "event": "recording.finalized",
        "call_id": r.id,
        "recording": {
            "path": str(settings.recordings.local_path / file),  # as callrec (and the hook) sees it
            "asterisk_path": f"{settings.recordings.dir.rstrip('/')}/{file}",
            "file": file,  # relative to recordings.dir
            "status": r.recording_status,
            "duration": r.recording_duration,
            "bytes": r.recording_bytes,
            "sha256": r.recording_sha256,
            "rms_dbfs": r.recording_rms_dbfs,
            "peak_dbfs": r.recording_peak_dbfs,
            "started_at": iso(r.recording_started_at),
        },
        "call": call_facts(r),
        "consent": {
            "mode": r.consent_mode,
            "consent": r.consent,
            "key": r.consent_key,
            "at": iso(r.consent_at),
            "notice_prompt": r.notice_prompt,
            "notice_prompt_sha256": r.notice_prompt_sha256,
            "notice_completed": r.notice_completed,
        },
        "policy": {
            "rule": r.policy_rule,
            "record": r.record_policy,
            "reason": r.policy_reason,
            "sampled": r.sampled,
        },
    }


def alert_payload(alert: dict[str, Any], record: CallRecord) -> dict[str, Any]:
    """What an alert hook learns: the alert (the rule's own phrase, never words of the transcript) and the
    call's facts, the same a recording hook gets for the call."""
    return {
        "event": ALERT_EVENT,
        "call_id": record.id,
        "alert": {
            "id": alert["id"], "rule": alert["rule"], "kind": alert["kind"], "phrase": alert["phrase"],
            "speaker": alert["speaker"], "offset_ms": alert["offset_ms"], "created_at": _iso(alert["created_at"]),
        },
        "call": call_facts(record),
        "recording": {"sha256": record.recording_sha256, "duration": record.recording_duration},
    }


def alert_hook_kinds(hooks: HookSettings) -> list[str]:
    return [k for k, on in (("command", bool(hooks.alert_command)), ("webhook", bool(hooks.alert_webhook_url))) if on]


async def queue_alert(conn: Conn, hooks: HookSettings, alert: dict[str, Any], record: CallRecord) -> int:
    """Queue the alert's hooks in the caller's transaction (the one that stores the alert); returns how many.
    The daemon's runner delivers them (within ``POLL_SECONDS``, or at once when it is woken)."""
    kinds = alert_hook_kinds(hooks)
    payload = json.dumps(alert_payload(alert, record), ensure_ascii=False)
    for kind in kinds:
        await conn.execute("INSERT INTO hook_jobs (call_id, hook, event, key, payload) "
                           "VALUES ($1::uuid, $2, $3, $4, $5::jsonb) ON CONFLICT (call_id, hook, key) DO NOTHING",
                           record.id, kind, ALERT_EVENT, f"alert:{alert['id']}", payload)
    if kinds:
        await conn.execute("SELECT pg_notify($1, '')", ALERT_CHANNEL)
    return len(kinds)


_PLACEHOLDER = re.compile(r"{(" + "|".join(HOOK_PLACEHOLDERS) + r")}")
_ALERT_PLACEHOLDER = re.compile(r"{(" + "|".join(ALERT_HOOK_PLACEHOLDERS) + r")}")


def command_argv(template: tuple[str, ...], payload: dict[str, Any]) -> list[str]:
    """The hook's argv: each placeholder replaced inside its own argument (no shell, no splitting)."""
    if payload.get("event") == ALERT_EVENT:
        a = payload["alert"]
        found = {"alert_id": str(a["id"]), "call_id": payload["call_id"], "rule": a["rule"], "kind": a["kind"]}
        return [_ALERT_PLACEHOLDER.sub(lambda m: found[m.group(1)], arg) for arg in template]
    rec = payload["recording"]
    values = {
        "call_id": payload["call_id"], "path": rec["path"], "file": rec["file"], "status": rec["status"],
        "duration": "" if rec["duration"] is None else f"{rec['duration']:.3f}", "sha256": rec["sha256"] or "",
    }
    return [_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), arg) for arg in template]


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped."""
    return min(maximum, initial * 2 ** min(attempt - 1, 30))


def redacted_url(url: str) -> str:
    """scheme://host[:port]/path: what may be logged of the webhook URL (a query may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def hook_environment(payload: dict[str, Any], attempt: int) -> dict[str, str]:
    """The daemon's environment without its secrets, plus the call's facts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLREC_", "PG"))}
    env.update(CALLREC_CALL_ID=payload["call_id"], CALLREC_HOOK_ATTEMPT=str(attempt))
    if payload.get("event") == ALERT_EVENT:
        env.update(CALLREC_EVENT=ALERT_EVENT, CALLREC_ALERT_ID=str(payload["alert"]["id"]))
    else:
        env.update(CALLREC_RECORDING=payload["recording"]["path"])
    return env


class HookRunner:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, writer: CallLogWriter | None,
                 retry_delay: float = 1.0) -> None:
        self.settings = settings
        self.hooks = settings.hooks
        self.pool = pool
        self.writer = writer
        self.retry_delay = retry_delay
        self.kinds = [k for k, on in (("command", bool(self.hooks.command)),
                                      ("webhook", bool(self.hooks.webhook_url))) if on]
        self.alert_kinds = alert_hook_kinds(self.hooks)
        self.on_attempt: list[Callable[[Attempt], None]] = []
        self._incoming: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], Job] = {}
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._listener: asyncpg.Connection | None = None
        self._closing = False
        self._stop_loop = False
        self._last_warning = -1e9
        self._url_for_log = redacted_url(self.hooks.webhook_url) if self.hooks.webhook_url else ""
        self._alert_url_for_log = redacted_url(self.hooks.alert_webhook_url) if self.hooks.alert_webhook_url else ""

    @property
    def enabled(self) -> bool:
        return bool(self.kinds or self.alert_kinds)

    @property
    def listening(self) -> bool:
        """Woken by alert jobs' NOTIFY (else they are found by the poll)."""
        return self._listener is not None and not self._listener.is_closed()

    def wake(self) -> None:
        """Look for due jobs now (alerts queued by another connection or process are otherwise found
        within ``POLL_SECONDS``)."""
        self._wake.set()

    # -- in --

    def on_call_finalized(self, record: CallRecord) -> None:
        """The call-finalized callback: queue the hooks for a finished recording (no I/O)."""
        if not self.kinds or record.recording_status not in HOOKED_STATUSES or not record.recording_path:
            return
        self._incoming.append((record.id, build_payload(record, self.settings)))
        self._wake.set()

    # -- lifecycle --

    def start(self) -> None:
        if not self.enabled:
            return
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.hooks.webhook_timeout))
        self._task = asyncio.create_task(self._run(), name="hooks")
        log.info("post-recording hooks: %s", ", ".join(
            [(f"command {self.hooks.command[0]}" if k == "command" else f"webhook {self._url_for_log}")
             for k in self.kinds]
            + [(f"alert command {self.hooks.alert_command[0]}" if k == "command"
                else f"alert webhook {self._alert_url_for_log}") for k in self.alert_kinds]))

    async def close(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; give running hooks ``timeout`` seconds, then release them for the next start."""
        if self._task is None:
            if self._incoming:  # never started: the database stayed away for this whole run
                log.error("hooks: %d finished recording(s) could not be queued (the database was unreachable); "
                          "the start-up sweep of the next start queues them if it is within the hour: calls %s",
                          len(self._incoming), ", ".join(c for c, _ in self._incoming))
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Ask the loop to end rather than cancel it mid-query; cancel only if it does not.
        self._stop_loop = True
        self._wake.set()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._incoming and loop.time() < deadline:
            if not await self._enqueue_incoming():
                await asyncio.sleep(min(self.retry_delay, max(0.0, deadline - loop.time())))
        if self._incoming:
            log.error("hooks: %d finished recording(s) could not be queued before shutdown; their hooks will "
                      "not run: calls %s", len(self._incoming), ", ".join(c for c, _ in self._incoming))
        running = dict(self._running)
        if running:
            _, late = await asyncio.wait(list(running), timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            if late:
                await self._release([running[t].id for t in late])
        if self._http is not None:
            await self._http.close()
        if self._listener is not None:
            await self._listener.close(timeout=2)

    # -- the loop --

    async def _run(self) -> None:
        swept = False
        while not self._stop_loop:
            try:
                self._wake.clear()
                if not swept:
                    await self._sweep()
                    swept = True
                await self._listen()
                if self._incoming:
                    await self._enqueue_incoming()
                free = self.hooks.concurrency - len(self._running)
                if free > 0 and not self._closing:
                    for job in await self._claim(free):
                        task = asyncio.create_task(self._attempt(job), name=f"hook-{job.hook}-{job.key or job.call_id}")
                        self._running[task] = job
                        task.add_done_callback(self._finished)
                wait = self.retry_delay if self._incoming else POLL_SECONDS
                if len(self._running) < self.hooks.concurrency:
                    due = await self._seconds_to_next_due()
                    if due is not None:
                        wait = min(wait, max(due, 0.01))
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("hooks: runner error; continuing")
                elif time.monotonic() - self._last_warning > 30:  # once per outage, not every second
                    self._last_warning = time.monotonic()
                    log.warning("hooks: database unavailable (%s); hooks wait and are retried", type(exc).__name__)
                await asyncio.sleep(self.retry_delay)

    async def _listen(self) -> None:
        """LISTEN for alert jobs on a connection of its own (not one of the pool's, held for good), opened
        again after it was lost; meanwhile the poll finds the jobs."""
        if not self.alert_kinds or (self._listener is not None and not self._listener.is_closed()):
            return
        try:
            self._listener = await asyncpg.connect(self.settings.database.dsn, timeout=5,
                                                   server_settings={"application_name": "callrec hooks"})
            await self._listener.add_listener(ALERT_CHANNEL, lambda *_: self._wake.set())
        except Exception as exc:
            log.debug("hooks: cannot listen for alert jobs (%s); polling every %gs", type(exc).__name__, POLL_SECONDS)
            if self._listener is not None:
                self._listener.terminate()
            self._listener = None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    async def _enqueue_incoming(self) -> bool:
        """Write queued hooks into the outbox, after the call rows they refer to.  True: all written."""
        if self.writer is not None:
            await self.writer.flush(timeout=5.0)
        batch, self._incoming = self._incoming, []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for call_id, payload in batch:
                    await self._insert(conn, call_id, payload)
            return True
        except asyncpg.ForeignKeyViolationError:
            # A call row the database refused: queue the others one by one.
            for call_id, payload in batch:
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await self._insert(conn, call_id, payload)
                except asyncpg.ForeignKeyViolationError:
                    log.error("hooks: call %s has no call-log row; its hooks are dropped", call_id)
            return True
        except Exception as exc:
            if not is_transient(exc):
                log.error("hooks: could not queue hooks for %d call(s) (%s); dropped", len(batch), exc)
                return True
            self._incoming[:0] = batch  # keep them, in order, for the next try
            return False

    async def _sweep(self) -> None:
        """At start: recordings finalized after the newest queued hook but never queued themselves
        (the process died between the call's last write and its hook's).  Looks back at most
        SWEEP_WINDOW, and not at all before the first hook was ever queued: turning hooks on does
        not hook old recordings.  (Alert jobs are written with their alert: nothing to sweep.)"""
        if not self.kinds:
            return
        rows = await self.pool.fetch(
            """SELECT c.* FROM calls c
               WHERE c.recording_status = ANY($2::text[]) AND c.recording_path IS NOT NULL
                 AND c.finalized_at > greatest(
                       coalesce((SELECT max(created_at) FROM hook_jobs WHERE hook = ANY($1::text[]) AND key = '')
                                - interval '1 minute', 'infinity'),  -- no job ever: nothing to catch up
                       now() - make_interval(secs => $3))
                 AND NOT EXISTS (SELECT 1 FROM hook_jobs j WHERE j.call_id = c.id AND j.hook = ANY($1::text[])
                                 AND j.key = '')
               ORDER BY c.finalized_at""",
            self.kinds, list(HOOKED_STATUSES), SWEEP_WINDOW)
        for r in rows:
            record = record_from_row(r)
            log.warning("hooks: call %s was finalized but its hooks were never queued; queuing them now", record.id)
            self._incoming.append((record.id, build_payload(record, self.settings)))

    async def _insert(self, conn: Conn, call_id: str, payload: dict[str, Any]) -> None:
        for kind in self.kinds:
            # Unique per (call, hook, key ''): a recording finalized twice is hooked once.
            await conn.execute("INSERT INTO hook_jobs (call_id, hook, payload) VALUES ($1, $2, $3::jsonb) "
                               "ON CONFLICT (call_id, hook, key) DO NOTHING", call_id, kind, json.dumps(payload))

    async def _claim(self, limit: int) -> list[Job]:
        lease = max(self.hooks.command_timeout, self.hooks.webhook_timeout) + LEASE_MARGIN
        rows = await self.pool.fetch(
            """UPDATE hook_jobs SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $3)
               WHERE id IN (SELECT id FROM hook_jobs WHERE state = 'pending' AND next_attempt_at <= now()
                            AND """ + _MINE + """ ORDER BY next_attempt_at, id LIMIT $2
                            FOR UPDATE SKIP LOCKED)
               RETURNING id, call_id, hook, payload, attempts, event, key""",
            self.kinds, limit, lease, self.alert_kinds)
        return [Job(r["id"], str(r["call_id"]), r["hook"], json.loads(r["payload"]), r["attempts"], r["event"],
                    r["key"]) for r in rows]

    async def _seconds_to_next_due(self) -> float | None:
        value = await self.pool.fetchval(
            "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM hook_jobs "
            "WHERE state = 'pending' AND " + _MINE.replace("$4", "$2"), self.kinds, self.alert_kinds)
        return float(value) if value is not None else None

    # -- one attempt --

    async def _attempt(self, job: Job) -> None:
        error: str | None = None
        try:
            if job.hook == "webhook":
                await self._post(job)
            else:
                await self._command(job)
        except asyncio.CancelledError:
            raise
        except HookError as exc:
            error = str(exc)[:ERROR_CHARS]
        except Exception as exc:  # a bug must not lose the job: it counts as a failed attempt
            log.exception("hooks: %s for %s crashed", job.hook, job.what)
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        ok = error is None
        final = ok or job.attempt >= self.hooks.max_attempts
        delay = backoff(job.attempt, self.hooks.retry_initial, self.hooks.retry_max)
        if ok:
            log.info("hook %s for %s done (attempt %d)", job.hook, job.what, job.attempt)
        elif final:
            log.error("hook %s for %s failed for good after %d attempt(s): %s", job.hook, job.what,
                      job.attempt, error)
        else:
            log.warning("hook %s for %s: attempt %d of %d failed: %s; next in %gs", job.hook, job.what,
                        job.attempt, self.hooks.max_attempts, error, delay)
        await self._settle(job, ok, final, error, delay)
        result = Attempt(job.id, job.call_id, job.hook, job.attempt, ok, error, final)
        for observer in list(self.on_attempt):
            try:
                observer(result)
            except Exception:
                log.exception("hooks: on_attempt observer failed")

    async def _settle(self, job: Job, ok: bool, final: bool, error: str | None, delay: float) -> None:
        """Record the outcome; if the database is away, the lease runs out and the job runs again."""
        for _ in range(5):
            try:
                if ok:
                    await self.pool.execute("UPDATE hook_jobs SET state = 'done', done_at = now(), last_error = NULL "
                                            "WHERE id = $1", job.id)
                elif final:
                    await self.pool.execute("UPDATE hook_jobs SET state = 'failed', done_at = now(), "
                                            "last_error = $2 WHERE id = $1", job.id, error)
                else:
                    await self.pool.execute("UPDATE hook_jobs SET next_attempt_at = now() + make_interval(secs => $3),"
                                            " last_error = $2 WHERE id = $1", job.id, error, delay)
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.error("hooks: cannot record the outcome of job %d: %s", job.id, exc)
                    return
                await asyncio.sleep(self.retry_delay)
        log.error("hooks: the outcome of job %d (call %s) was not recorded; it runs again after its lease",
                  job.id, job.call_id)

    async def _release(self, job_ids: list[int]) -> None:
        """Jobs cut short at shutdown: due again at once for the next start (the attempt is not counted)."""
        try:
            await self.pool.execute("UPDATE hook_jobs SET next_attempt_at = now(), attempts = attempts - 1 "
                                    "WHERE id = ANY($1::bigint[]) AND state = 'pending'", job_ids)
        except Exception as exc:
            log.warning("hooks: %d interrupted job(s) run again after their lease (%s)", len(job_ids), exc)

    async def _post(self, job: Job) -> None:
        assert self._http is not None
        alert = job.event == ALERT_EVENT
        url = self.hooks.alert_webhook_url if alert else self.hooks.webhook_url
        url_for_log = self._alert_url_for_log if alert else self._url_for_log
        body = json.dumps(job.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"callrec/{__version__}",
            "Idempotency-Key": f"{job.key.removeprefix('alert:') if alert else job.call_id}:webhook",
            "X-Callrec-Event": job.event,
            "X-Callrec-Delivery": str(job.id),
            "X-Callrec-Attempt": str(job.attempt),
        }
        if self.hooks.webhook_auth:
            headers["Authorization"] = self.hooks.webhook_auth
        if self.hooks.webhook_hmac_key:
            stamp = str(int(time.time()))
            mac = hmac.new(self.hooks.webhook_hmac_key.encode(), stamp.encode() + b"." + body, hashlib.sha256)
            headers["X-Callrec-Timestamp"] = stamp
            headers["X-Callrec-Signature"] = f"sha256={mac.hexdigest()}"
        try:
            async with self._http.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(4096)  # let the connection be reused; the body is not used
                if not 200 <= resp.status < 300:
                    raise HookError(f"webhook {url_for_log}: HTTP {resp.status}")
        except TimeoutError:
            raise HookError(f"webhook {url_for_log}: no answer within {self.hooks.webhook_timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # aiohttp may quote the full URL; keep the query (a token, maybe) out of the log.
            text = str(exc).replace(url, url_for_log)
            raise HookError(f"webhook {url_for_log}: {type(exc).__name__}: {text}") from None

    async def _command(self, job: Job) -> None:
        argv = command_argv(self.hooks.alert_command if job.event == ALERT_EVENT else self.hooks.command, job.payload)
        body = json.dumps(job.payload, ensure_ascii=False).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=hook_environment(job.payload, job.attempt),
                start_new_session=True)  # its own process group: a timeout kills its children too
        except OSError as exc:
            raise HookError(f"command {argv[0]}: cannot run: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self.hooks.command_timeout):
                _, stderr = await proc.communicate(body)
        except (TimeoutError, asyncio.CancelledError) as exc:
            _kill_group(proc.pid)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise HookError(f"command {argv[0]}: killed after {self.hooks.command_timeout:g}s") from None
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-300:]
            raise HookError(f"command {argv[0]}: exit status {proc.returncode}" + (f": {tail}" if tail else ""))


# The jobs this runner may claim: recording hooks of its kinds ($1), alert hooks of its alert kinds ($4).
_MINE = ("((event = 'recording.finalized' AND hook = ANY($1::text[])) "
         "OR (event = 'alert.matched' AND hook = ANY($4::text[])))")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
