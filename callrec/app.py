"""Wiring: builds the pieces, runs them under one supervisor, shuts them down in order.

``Daemon`` is a node beside an Asterisk; ``ApiOnly`` (`callrec serve --api-only`) the HTTP API and console
without Asterisk: no ARI, AMI or FastAGI, no call-log writer, no follow-up of open calls.  Several of those can
stand behind a load balancer (sessions, the log-in throttle and the per-user export limit live in PostgreSQL);
their readiness needs only the database."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

from callrec import __version__, systemd
from callrec.asterisk.ami import Ami
from callrec.asterisk.ari import Ari
from callrec.calls.policy import DEFAULT_PROMPTS
from callrec.calls.prompts import PromptCatalog
from callrec.calls.service import CallService
from callrec.config.node import node_name
from callrec.config.settings import Settings
from callrec.dataops.retention import RetentionJob
from callrec.doors.agi import AgiDoor
from callrec.doors.ari import AriDoor
from callrec.hooks import HookRunner
from callrec.metrics import Metrics, MetricsServer
from callrec.recording.control import RecordingControl
from callrec.storage import KeyProblem, Storage, StorageUnavailable
from callrec.storage.outbox import Uploader, outbox_figures
from callrec.store import CallLogWriter, connect_pool, migrate
from callrec.store.calllog import DB_ERRORS, is_transient
from callrec.store.db import adopt_open_calls, fetch_open_calls
from callrec.store.journal import Journal, JournalError
from callrec.store.migrate import pending
from callrec.store.nodes import heartbeat
from callrec.store.record import CallRecord
from callrec.store.users import sync_confidential_rules
from callrec.web.server import HttpServer

log = logging.getLogger("callrec")
# Started without the database: how often to try it.
DATABASE_RETRY_S = 2.0


class FatalError(Exception):
    """Start-up cannot go on (bad credentials, schema missing): one clear line, non-zero exit."""

    exit_code = 1  # systemd restarts the daemon


class SettingFatal(FatalError):
    """A setting is wrong (a corrupt or missing speech model): restarting would not help."""

    exit_code = 2


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # This node's name: its rows in the call log ([node] name, default the host name).
        self.node = node_name(settings.node)
        self.pool: asyncpg.Pool | None = None
        self.writer: CallLogWriter | None = None
        self.ami: Ami | None = None
        self.ari: Ari | None = None
        self.door: AriDoor | None = None
        self.agi: AgiDoor | None = None
        self.service: CallService | None = None
        self.http: HttpServer | None = None
        self.retention: RetentionJob | None = None
        self.hooks: HookRunner | None = None
        # Where recordings live after finalization, and the outbox that encrypts/uploads them (callrec/storage/).
        self.storage: Storage | None = None
        self.uploader: Uploader | None = None
        # Pause/resume for the HTTP API (``await daemon.recording_control.pause(call_id, by=user)``).
        self.recording_control: RecordingControl | None = None
        # Speech analytics ([speech] enabled): the queue's enqueue side and the runner (callrec/analytics/queue.py).
        # ``speech_after_save`` is handed to the runner: callbacks awaited in the transaction that saves a transcript.
        self.speech_queue: Any = None
        self.speech_runner: Any = None
        self.speech_after_save: list[Callable[[Any, str], Awaitable[None]]] = []
        # Counters and live figures for /metrics (served when [metrics] listen is set).
        self.metrics = Metrics(__version__)
        self.metrics_server: MetricsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._journal: Journal | None = None
        self.stopping = asyncio.Event()
        self.signals_ready = asyncio.Event()
        self._stopped = False

    async def start(self, run_migrations: bool = False) -> None:
        s = self.settings
        prompts = PromptCatalog.load(s.notice.prompts_dir, s.notice.local_prompts_path)
        try:
            prompts.require(s.notice.default_language, sorted(set(DEFAULT_PROMPTS.values())))
        except Exception as exc:
            raise FatalError(str(exc)) from None
        too_long = [p for p in prompts.prompts.values() if p.duration > s.notice.max_notice_seconds]
        if too_long:
            raise FatalError(f"notice.max_notice_seconds: {s.notice.max_notice_seconds:g}s is shorter than prompt "
                             f"{too_long[0].file} ({too_long[0].duration:g}s): every such notice would fail")
        try:
            self.storage = Storage.of(s)
            if s.storage.remote:
                self.storage.bucket  # noqa: B018 -- credentials from the environment, checked now (no request)
        except (KeyProblem, StorageUnavailable) as exc:
            raise FatalError(str(exc)) from None
        # The journal first: what an earlier run did not write is replayed whatever the database does.
        journal = Journal(Path(s.database.journal_dir), s.database.journal_max_bytes)
        try:
            replay = await asyncio.to_thread(journal.open)
        except JournalError as exc:
            raise FatalError(str(exc)) from None
        self._journal = journal
        db_up = True
        try:
            self.pool = await connect_pool(s.database.dsn, s.database.pool_min, s.database.pool_max)
        except DB_ERRORS as exc:
            if not is_transient(exc):  # refused credentials, no such database: the config is wrong
                journal.close()
                raise FatalError(f"database.dsn: cannot connect to PostgreSQL: {_brief(exc)}") from None
            # Down: calls are still recorded (else the dialplan's fail-safe leaves them unrecorded),
            # their call-log changes journaled; the rest waits for the database (``_watch_database``).
            log.warning("database unreachable at start (%s); recording calls and journaling their call log in %s; "
                        "the schema check%s, follow-up of earlier calls, hooks, retention and the HTTP API start "
                        "when it is back", _brief(exc), journal.path, " and migrations" if run_migrations else "")
            self.pool = await connect_pool(s.database.dsn, 0, s.database.pool_max)  # connects on first use
            db_up = False
        self.writer = CallLogWriter(self.pool, journal=journal, ready=False, node=self.node,
                                    default_country=self.settings.search.default_country)
        self.writer.replay(replay)
        if replay:
            log.info("call log journal: changes of %d call(s) from an earlier run to write", len(replay))
        self.writer.start()
        unfinished: list[CallRecord] = []
        if db_up:
            unfinished = await self._setup_database(run_migrations)
        else:
            self.writer.down_since = asyncio.get_running_loop().time()
        self.ami = Ami(s.asterisk.ami_host, s.asterisk.ami_port, s.asterisk.ami_user, s.asterisk.ami_password,
                       timeout=min(3.0, s.asterisk.request_timeout))
        self.service = CallService(s, prompts, self.writer, self.ami)
        self.service.on_call_finalized.append(self.metrics.observe_call)
        if s.asterisk.ari_enabled:
            self.ari = Ari(s.asterisk.ari_url, s.asterisk.ari_user, s.asterisk.ari_password, s.asterisk.app,
                           timeout=s.asterisk.request_timeout)
            self.door = AriDoor(self.ari, self.service)
            # Bridged-only reasons follow the ARI door's calls (AMI BridgeEnter / DialEnd).
            self.ami.on_event("BridgeEnter", self.door.on_bridge_enter)
            self.ami.on_event("DialEnd", self.door.on_dial_end)
        # Post-recording hooks (outbox in PostgreSQL): jobs left by an earlier run are taken up too.
        self.hooks = HookRunner(s, self.pool, self.writer)
        self.service.on_call_finalized.append(self.hooks.on_call_finalized)
        self.hooks.on_attempt.append(self.metrics.observe_hook)
        if db_up:
            self.hooks.start()
        self.uploader = Uploader(self.storage, self.pool, node=self.node)
        self.service.on_call_finalized.append(self.uploader.on_call_finalized)
        if db_up:
            self.uploader.start()
            if s.speech.enabled:
                await self._start_speech()
        self.recording_control = RecordingControl(self.ami, self.pool, dtmf=s.recordings.pause_dtmf,
                                                  node=self.node)
        self.ami.on_event("UserEvent", self.recording_control.on_user_event)
        self.service.on_call_finalized.append(self.recording_control.on_call_finalized)
        if s.agi.active:
            self.agi = AgiDoor(s.agi, self.service)
            try:
                await self.agi.start()
            except (OSError, ValueError) as exc:
                raise FatalError(f"agi.listen: cannot listen on {s.agi.listen}: {_brief(exc)}") from None
        self.ami.on_hangup = _both(*(d.on_ami_hangup for d in (self.door, self.agi) if d is not None))
        if unfinished:
            log.warning("%d call(s) from an earlier run are unfinished; following them up", len(unfinished))
            if self.door is not None:
                self.door.expect_recovery(unfinished)
            elif self.agi is not None:
                self.agi.recover(unfinished)  # no ARI: through AMI
        await self.ami.start()
        if db_up:
            await self._start_http()
        if self.door is not None:
            self._tasks.append(asyncio.create_task(self.door.stream.run(), name="ari-events"))
            self._tasks.append(asyncio.create_task(self.door.sweep(s.asterisk.sweep_interval), name="ari-sweep"))
        self._tasks.append(asyncio.create_task(self.ami.keepalive(), name="ami-keepalive"))
        if db_up:
            self._start_retention()
        else:
            self._tasks.append(asyncio.create_task(self._watch_database(run_migrations), name="database-watch"))
        await self.setup_metrics()
        systemd.notify("READY=1", "STATUS=calls are taken; waiting for Asterisk if it is not up")
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(systemd.watchdog(interval), name="systemd-watchdog"))
        log.info("callrec started as node %s: ARI %s app %s, AMI %s:%s, %d prompt(s) in %s",
                 self.node, self.ari.base if self.ari else "off", s.asterisk.app,
                 s.asterisk.ami_host, s.asterisk.ami_port, len(prompts.prompts), ", ".join(sorted(prompts.available())))

    async def _setup_database(self, run_migrations: bool) -> list[CallRecord]:
        """Migrations (when asked), the schema check, the confidential rules; then the writer may
        write, the journal's replay is written, and the open rows of earlier runs are read (those
        this run already follows left out).  FatalError when the schema is not current."""
        s = self.settings
        assert self.pool is not None and self.writer is not None
        async with self.pool.acquire() as conn:
            if run_migrations:
                await migrate(conn)
            missing = await pending(conn)
            if missing:
                raise FatalError(
                    f"database: schema not up to date ({', '.join(missing)} pending); run `callrec migrate`")
            await sync_confidential_rules(conn, [r.name for r in s.policy.rules if r.confidential])
        self.writer.ready.set()
        if self.writer.replayed and not await self.writer.flush(30):
            log.warning("call log journal: the earlier run's changes are not all written yet; its open calls are "
                        "followed up with what the database holds")
        async with self.pool.acquire() as conn:
            adopted = await adopt_open_calls(conn, self.node)
            if adopted:
                log.info("node %s: %d open call(s) from before calls had a node are followed up here", self.node,
                         adopted)
            # This node's calls only (other nodes share the call log).  AGI calls an earlier run left open:
            # followed up through ARI like the others.
            unfinished = (await fetch_open_calls(conn, node=self.node)
                          + await fetch_open_calls(conn, "agi", node=self.node))
        # Read after the rows: a call this run took meanwhile is noted before its first write.
        own = self.writer.own_calls(done=True)
        return [r for r in unfinished if r.id not in own]

    async def _watch_database(self, run_migrations: bool) -> None:
        """Started without the database: try it every few seconds; when it answers, set it up
        and start what needs it."""
        assert self.pool is not None
        failed_setup = False
        while True:
            await asyncio.sleep(DATABASE_RETRY_S)
            try:
                unfinished = await self._setup_database(run_migrations)
            except FatalError as exc:  # reachable, but not usable yet: say so once, keep journaling
                if not failed_setup:
                    log.error("%s; the call log keeps journaling until it is", exc)
                    failed_setup = True
                continue
            except DB_ERRORS as exc:
                if not is_transient(exc):
                    log.error("database: %s; retrying", _brief(exc))
                continue
            break
        log.info("database reachable: schema checked%s; follow-up of %d earlier call(s), hooks, retention and "
                 "the HTTP API starting", " and migrated" if run_migrations else "", len(unfinished))
        if unfinished:
            if self.door is not None:
                self.door.recover_later(unfinished)
            elif self.agi is not None:
                self.agi.recover(unfinished)
        assert self.hooks is not None
        self.hooks.start()
        if self.uploader is not None:
            self.uploader.start()
        if self.settings.speech.enabled:
            try:
                await self._start_speech()
            except SettingFatal as exc:  # found only now: the daemon records on without transcription
                log.error("%s", exc)
        try:
            await self._start_http()
        except FatalError as exc:
            log.error("%s", exc)
        self._start_retention()

    async def _start_http(self) -> None:
        s = self.settings
        if s.http.active:
            self.http = HttpServer(s, recording_control=self.recording_control,
                                   on_request=self.metrics.observe_request, storage=self.storage)
            try:
                await self.http.start()
            except OSError as exc:
                self.http = None
                raise FatalError(str(exc)) from None

    def _start_retention(self) -> None:
        """Retention, and this node's heartbeat (both once the database is there)."""
        s = self.settings
        assert self.pool is not None
        self._tasks.append(asyncio.create_task(
            heartbeat(self.pool, self.node, "pbx", __version__, s.node.heartbeat_interval), name="node-heartbeat"))
        if s.retention.enabled and s.retention.active:
            self.retention = RetentionJob(self.pool, s.retention, self.storage or Storage.of(s))
            self._tasks.append(asyncio.create_task(self.retention.run(), name="retention"))

    async def _start_speech(self) -> None:
        """The transcription queue: finalized recordings queued (a background task, never on the call path) and
        the runner with its niced worker processes.  A bad model is a setting error (exit 2)."""
        from callrec.analytics.alerts import AlertMatcher
        from callrec.analytics.queue import SpeechError, SpeechQueue, SpeechRunner, start_pool_factory

        s = self.settings
        assert self.pool is not None and self.service is not None
        try:
            factory = await asyncio.to_thread(start_pool_factory, s.speech)
        except SpeechError as exc:
            raise SettingFatal(str(exc)) from None
        # Contract 1: keyword alerts are matched in the transaction that saves each transcript.
        self.speech_after_save.insert(0, AlertMatcher(s))
        self.speech_queue = SpeechQueue(s, self.pool, self.writer)
        self.service.on_call_finalized.append(self.speech_queue.on_call_finalized)
        self.speech_runner = SpeechRunner(s, self.pool, factory, after_save=self.speech_after_save)
        self.speech_runner.after_save = self.speech_after_save  # the same list: callbacks added later count
        self._tasks.append(asyncio.create_task(self.speech_queue.run(), name="speech-queue"))
        self._tasks.append(asyncio.create_task(self.speech_runner.run(), name="speech-runner"))
        log.info("speech analytics: %d worker(s), transcribe = %s", s.speech.workers, s.speech.transcribe)

    def ready(self) -> dict[str, bool]:
        """What /ready reports: each part this daemon needs, up or not."""
        parts = {"ami": self.ami is not None and self.ami.logged_in.is_set(),
                 "database": self.writer is not None and self.writer.down_since is None}
        if self.settings.asterisk.ari_enabled:
            parts["ari"] = self.door is not None and self.door.stream.connected.is_set()
        return parts

    async def setup_metrics(self) -> None:
        m = self.metrics
        m.probe("callrec_calllog_pending_calls", "calls with changes not yet written to the call log",
                lambda: self.writer.pending_calls if self.writer is not None else None)
        m.probe("callrec_journal_bytes", "bytes in the local call-log journal (changes not yet confirmed written)",
                lambda: self._journal.size if self._journal is not None else None)
        m.probe("callrec_journal_full", "1 when the journal reached database.journal_max_bytes (changes kept in "
                                        "memory only)",
                lambda: float(self._journal.full) if self._journal is not None else None)
        m.probe("callrec_database_up", "1 while the call log's database is reachable",
                lambda: float(self.writer.down_since is None) if self.writer is not None else None)
        m.probe("callrec_ami_connected", "1 while logged in to AMI",
                lambda: float(self.ami.logged_in.is_set()) if self.ami is not None else None)
        m.probe("callrec_ami_logins", "AMI log-ins since start (more than 1: reconnects)",
                lambda: self.ami.logins if self.ami is not None else None, kind="counter")
        m.probe("callrec_calls_active", "calls callrec follows now, by door", self._active_calls, label="door")
        m.probe("callrec_ari_connected", "1 while the ARI events websocket is connected (absent: ARI off)",
                lambda: float(self.door.stream.connected.is_set()) if self.door is not None else None)
        m.probe("callrec_ari_connections", "ARI websocket connections since start (more than 1: reconnects)",
                lambda: self.door.stream.connections if self.door is not None else None, kind="counter")
        m.describe_db("callrec_hook_jobs", "post-recording hook jobs by state (the outbox)", label="state")
        m.describe_db("callrec_speech_jobs", "transcription jobs by state", label="state")
        m.describe_db("callrec_speech_waiting_audio_seconds", "audio waiting to be transcribed")
        m.describe_db("callrec_storage_outbox", "recordings in the storage outbox by state (pending: to encrypt or "
                                                "upload; verified: uploaded, local copy in its grace)", label="state")
        m.describe_db("callrec_storage_outbox_pending_bytes", "bytes of audio waiting to be uploaded or encrypted")
        m.describe_db("callrec_storage_outbox_oldest_pending_seconds", "age of the oldest recording waiting in the "
                                                                       "storage outbox (0: none)")
        m.probe("callrec_storage_uploads", "recordings uploaded and verified since start",
                lambda: self.uploader.counters.uploaded if self.uploader is not None else None, kind="counter")
        m.probe("callrec_storage_upload_failures", "failed outbox steps since start (each retried with backoff)",
                lambda: self.uploader.counters.failures if self.uploader is not None else None, kind="counter")
        m.probe("callrec_storage_local_removed", "local copies removed after their object was verified, since start",
                lambda: self.uploader.counters.local_removed if self.uploader is not None else None, kind="counter")
        m.db_figures(self._db_figures)
        if self.settings.metrics.listen:
            self.metrics_server = MetricsServer(self.settings.metrics.host_port(), m, self.ready)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                raise FatalError(str(exc)) from None

    def _active_calls(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.door is not None:
            out["ari"] = len(self.door.calls)
        if self.agi is not None:
            out["agi"] = len(self.agi.calls)
        return out

    async def _db_figures(self) -> dict[str, float | dict[str, float]]:
        if self.pool is None:
            return {}
        async with self.pool.acquire(timeout=1.0) as conn:
            hooks = await conn.fetch("SELECT state, count(*) AS n FROM hook_jobs GROUP BY state")
            speech = await conn.fetch("SELECT state, count(*) AS n, sum(audio_ms) AS ms FROM speech_jobs "
                                      "GROUP BY state")
            outbox = await outbox_figures(conn)
        waiting = sum(int(r["ms"] or 0) for r in speech if r["state"] in ("pending", "running"))
        figures: dict[str, float | dict[str, float]] = {
                "callrec_hook_jobs": {st: 0.0 for st in ("pending", "done", "failed")}
                | {r["state"]: float(r["n"]) for r in hooks},
                "callrec_speech_jobs": {st: 0.0 for st in ("pending", "running", "done", "failed", "skipped")}
                | {r["state"]: float(r["n"]) for r in speech},
                "callrec_speech_waiting_audio_seconds": waiting / 1000}
        figures.update(outbox)
        return figures

    async def wait_ready(self, timeout: float) -> None:
        """Wait until both ARI and AMI are up; raise FatalError at once on refused credentials."""
        assert self.ami is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ((self.door is None or self.door.stream.connected.is_set()) and self.ami.logged_in.is_set()):
            self.check_credentials()
            if loop.time() > deadline:
                ari_error = self.door.stream.last_error if self.door is not None else "off"
                raise TimeoutError(f"not connected within {timeout:g}s: ARI {ari_error}, "
                                   f"AMI {self.ami.last_error}")
            await asyncio.sleep(0.05)

    def check_credentials(self) -> None:
        assert self.ami is not None
        if self.door is not None and self.door.stream.auth_failed and self.door.stream.connections == 0:
            raise FatalError("asterisk.ari_password: ARI refused the credentials of user "
                             f"{self.settings.asterisk.ari_user!r} (HTTP 401)")
        if self.ami.auth_failed and self.ami.logins == 0:
            raise FatalError(f"asterisk.ami_password: {self.ami.last_error}")

    async def reload_prompts(self) -> bool:
        """Re-read the prompts (SIGHUP): an admin replaced or added a file.  On a problem the old
        set stays in use, so a half-copied folder never breaks the notice."""
        s = self.settings
        assert self.service is not None
        try:
            catalog = await asyncio.to_thread(PromptCatalog.load, s.notice.prompts_dir, s.notice.local_prompts_path)
            catalog.require(s.notice.default_language, sorted(set(DEFAULT_PROMPTS.values())))
        except Exception as exc:
            log.error("prompts not reloaded, the previous set stays in use: %s", exc)
            return False
        self.service.prompts = catalog
        log.info("prompts reloaded: %d file(s) in %s", len(catalog.prompts), ", ".join(sorted(catalog.available())))
        return True

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hangup_signal() -> None:
            task = asyncio.create_task(self.reload_prompts())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup_signal)
        self.signals_ready.set()
        # Refused credentials at start are fatal; an Asterisk that is down is waited for.
        await watch_until_stopped(self.stopping, self._tasks, self.check_credentials)

    async def stop(self) -> None:
        """Hand back callers still in the notice, flush the call log, close connections.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        systemd.notify("STOPPING=1")
        if self.retention is not None:
            self.retention.stop.set()
        if self.speech_queue is not None:
            self.speech_queue.stop()
        if self.speech_runner is not None:
            await self.speech_runner.close()
        if self.http is not None:
            await self.http.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        # Both doors hand their callers back at the same time.
        await asyncio.gather(*(d.close() for d in (self.agi, self.door) if d is not None))
        if self.door is not None:
            await self.door.stream.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.service is not None:
            await self.service.close()
        if self.hooks is not None:
            await self.hooks.close()
        if self.uploader is not None:
            await self.uploader.close()
        if self.recording_control is not None:
            await self.recording_control.close()
        if self.writer is not None:
            await self.writer.close()
        elif self._journal is not None:
            self._journal.close()
        if self.ami is not None:
            await self.ami.close()
        if self.ari is not None:
            await self.ari.close()
        if self.pool is not None:
            await self.pool.close()


# -- serve --api-only: the HTTP API and console without Asterisk ----------------------------------------

async def watch_until_stopped(stopping: asyncio.Event, tasks: Iterable[asyncio.Task[Any]],
                              each_round: Callable[[], None] | None = None) -> None:
    """Until ``stopping`` is set: a background task that died is fatal (its error ends the process, not a silent
    half-working daemon); ``each_round`` runs four times a second."""
    while not stopping.is_set():
        if each_round is not None:
            each_round()
        try:
            await asyncio.wait_for(stopping.wait(), 0.25)
        except TimeoutError:
            pass
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise FatalError(f"internal task {task.get_name()} died: {task.exception()}")


def api_node_name(settings: Settings) -> str:
    """The name in the `nodes` table: `[node] name` when set, else `<host>-api` (an API-only process on a PBX
    host keeps the PBX daemon's row apart)."""
    return settings.node.name or f"{node_name(settings.node)}-api"[:63]


class ApiOnly:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = api_node_name(settings)
        self.pool: asyncpg.Pool | None = None
        self.http: HttpServer | None = None
        self.metrics = Metrics(__version__)
        self.metrics_server: MetricsServer | None = None
        self.database_up = False
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, run_migrations: bool = False) -> None:
        s = self.settings
        if not s.http.active:
            raise FatalError("http.enabled: `serve --api-only` serves the HTTP API; set http.enabled = true and "
                             "http.listen")
        try:
            self.pool = await connect_pool(s.database.dsn, 1, 2)
            async with self.pool.acquire() as conn:
                if run_migrations:
                    await migrate(conn)
                missing = await pending(conn)
                if missing:
                    raise FatalError(f"database: schema not up to date ({', '.join(missing)} pending); "
                                     "run `callrec migrate`")
                await sync_confidential_rules(conn, [r.name for r in s.policy.rules if r.confidential])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise FatalError(f"database.dsn: cannot connect to PostgreSQL: {_brief(exc)}") from None
        self.database_up = True
        self.http = HttpServer(s, on_request=self.metrics.observe_request)
        try:
            await self.http.start()
        except OSError as exc:
            self.http = None
            raise FatalError(str(exc)) from None
        self._tasks.append(asyncio.create_task(
            heartbeat(self.pool, self.node, "api", __version__, s.node.heartbeat_interval, self._beat),
            name="node-heartbeat"))
        if s.metrics.listen:
            self.metrics_server = MetricsServer(s.metrics.host_port(), self.metrics, self.ready)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                raise FatalError(str(exc)) from None
        systemd.notify("READY=1", "STATUS=serving the HTTP API (no Asterisk)")
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(systemd.watchdog(interval), name="systemd-watchdog"))
        log.info("callrec started as API-only node %s: no ARI, AMI or FastAGI", self.node)

    def _beat(self, ok: bool) -> None:
        self.database_up = ok

    def ready(self) -> dict[str, bool]:
        """What /ready reports: only the database (no Asterisk here)."""
        return {"database": self.database_up}

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        await watch_until_stopped(self.stopping, self._tasks)

    async def stop(self) -> None:
        systemd.notify("STOPPING=1")
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _both(*handlers: Callable[[str, int | None, str | None], None]) -> Callable[[str, int | None, str | None], None]:
    """AMI's Hangup to every door (each ignores channels it does not follow)."""

    def dispatch(uniqueid: str, cause: int | None, cause_text: str | None) -> None:
        for handler in handlers:
            handler(uniqueid, cause, cause_text)

    return dispatch
