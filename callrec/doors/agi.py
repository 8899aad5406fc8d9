"""The FastAGI door: calls that reach ``AGI(agi://host:port/notice?...)``.

The same ``CallSession``, policy and ``CallService`` as the ARI door; only the translation
differs.  AGI is one command at a time on one TCP connection per call, so each call's actor runs
its actions in order and the replies are its inputs:

- ``PlayPrompt``  -> ``STREAM FILE <prompt> "<every DTMF key>"``.  A key stops the stream and
  comes back as the result: a key the session acts on ends the notice; any other key is logged
  (``keys_pressed``, as on the ARI door) and the stream goes on from ``endpos``.
- ``StartTimer``  -> ``WAIT FOR DIGIT <ms>`` until a key the session acts on or the window ends.
- ``StartRecording`` -> ``CallService.start_recording`` (MixMonitor over AMI).
- ``HandBack``    -> ``SET VARIABLE`` for each ``CALLREC_*``, then the AGI session ends (we close
  the connection and ``AGI()`` returns).  The call is followed to its hang-up through AMI.
- ``HANGUP`` / ``511`` / ``result=-1`` on a dead channel -> ``session.hangup``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from urllib.parse import parse_qsl, urlsplit

from callrec.asterisk.agi import (
    AgiClosed,
    AgiCommandError,
    AgiConnection,
    AgiEnv,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiTimeout,
    quote,
)
from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.calls.actor import CallActor, Input, stop_actors
from callrec.calls.policy import CallFacts, parse_args
from callrec.calls.recovery import Whereabouts, recover_lost
from callrec.calls.service import CallService, utcnow
from callrec.calls.session import (
    Action,
    CallSession,
    CancelTimer,
    HandBack,
    PlayPrompt,
    StartTimer,
    State,
    StopPrompt,
    prompt_time_limit,
)
from callrec.config.settings import AgiSettings, is_loopback
from callrec.store.record import CallRecord

log = logging.getLogger("callrec.agi")

ESCAPE_DIGITS = "0123456789*#ABCD"  # every key stops a prompt, so every key is seen and logged
SCRIPTS = ("notice",)  # agi://host:port/notice
# Stopping: callers in the notice or the window are interrupted and handed back at once; a session
# still busy after this is closed, and the dialplan's fail-safe takes over.
STOP_GRACE = 5.0
FOLLOW_CHECK = 30.0  # seconds between checks that calls back in the dialplan still exist


class Detached:
    """The "connection" of a call followed without an AGI session (taken up from the call log)."""

    closed = True
    busy = False
    hung_up = False

    def interrupt(self) -> None:
        pass

    async def close(self, timeout: float = 2.0) -> None:
        pass


class AgiLink:
    """One call's channel, spoken to through its FastAGI session (one command at a time)."""

    def __init__(self, door: AgiDoor, conn: AgiConnection | Detached, uniqueid: str, channel: str) -> None:
        self.door = door
        self.conn = conn
        self.uniqueid = uniqueid
        self.channel = channel
        self.actor: CallActor | None = None
        self.failing = False  # handing back after a failure: short time limits, no retries

    @property
    def session(self) -> CallSession:
        assert self.actor is not None
        return self.actor.session

    @property
    def settings(self) -> AgiSettings:
        return self.door.settings

    async def do(self, action: Action) -> list[Action]:
        s = self.session
        try:
            if isinstance(action, PlayPrompt):
                return await self._play(action)
            if isinstance(action, StartTimer):
                return await self._window(action.seconds)
            if isinstance(action, HandBack):
                return await self._hand_back(action.variables)
            if isinstance(action, StopPrompt | CancelTimer):
                return []  # AGI is one command at a time: the prompt / wait is already over
        except AgiHangup:
            return s.hangup(utcnow())
        except (AgiClosed, AgiProtocolError, AgiTimeout, AgiCommandError) as exc:
            return await self._broken(exc)
        raise TypeError(f"not an AGI action: {action!r}")

    def translate(self, item: Input) -> list[Action] | None:
        return None  # everything AGI tells comes back as command replies

    async def resync(self) -> list[Action]:
        return []

    async def release(self, reason: str) -> None:
        await self._end_session()

    def interrupt(self) -> None:
        self.failing = True
        self.conn.interrupt()  # a running prompt or window ends now; the caller is handed back

    async def _end_session(self) -> None:
        """Closing the connection ends ``AGI()``: the dialplan goes on."""
        await self.conn.close()
        self.door.open.discard(self.conn)  # the AGI session is over; the call may go on for long

    async def _broken(self, exc: AgiError) -> list[Action]:
        """The AGI session cannot go on (a prompt past its time limit, a peer that broke the
        protocol).  Closing it returns the channel to the dialplan, whose fail-safe sets
        CALLREC_CONSENT=unavailable; the row says the same.  A channel that is gone is ended by
        AMI's Hangup, or found gone here."""
        assert self.actor is not None
        # The peer's text is escaped where it enters the error (callrec.asterisk.agi); the channel
        # name came from the peer too.
        log.warning("call %s: AGI session with %r ended: %s", self.actor.id, self.channel, exc)
        await self._end_session()
        s = self.session
        if s.state in (State.IN_DIALPLAN, State.ENDED, State.STARTING_RECORDING):
            return []  # in STARTING_RECORDING MixMonitor's answer decides; its hand-back fails the same way
        now = utcnow()
        s.abort(now, f"AGI session broke during the notice ({exc}); the call went on unrecorded")
        s.handed_back(now)  # closing the connection is what returns the channel to the dialplan
        if not s.ended and await self.door.channel_gone(self.channel):
            self.actor.post("gone")
        return []

    async def _play(self, action: PlayPrompt) -> list[Action]:
        conn = self.conn
        assert isinstance(conn, AgiConnection)
        kind = "notice" if self.session.state is State.NOTIFYING else "confirm"
        file = action.prompt.media.removeprefix("sound:")
        limit = prompt_time_limit(action.prompt, self.door.service.settings.notice.max_notice_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # The watchdog: cut the prompt short at its limit (see AgiConnection.interrupt).
        watchdog = loop.call_later(limit, conn.interrupt)
        try:
            return await self._stream(kind, file, deadline)
        finally:
            watchdog.cancel()

    async def _stream(self, kind: str, file: str, deadline: float) -> list[Action]:
        s, conn = self.session, self.conn
        assert isinstance(conn, AgiConnection)
        loop = asyncio.get_running_loop()
        offset = 0
        while True:
            if offset and loop.time() >= deadline:  # the watchdog fired between two commands
                return s.prompt_timed_out(utcnow())
            command = f"STREAM FILE {file} {quote(ESCAPE_DIGITS)}" + (f" {offset}" if offset else "")
            if kind == "notice":
                s.notice_started(utcnow())  # the first one counts: STREAM FILE goes out now
            reply = await conn.command(command, max(deadline - loop.time(), 0.0) + self.settings.command_timeout)
            now = utcnow()
            if reply.result == 0 and not reply.interrupted:
                return s.notice_finished(now) if kind == "notice" else s.confirm_finished(now)
            if reply.result < 0:
                if conn.hung_up or not await self._alive():
                    return s.hangup(now)
                if kind == "notice":
                    return s.notice_failed(now, f"Asterisk could not play {file} ({reply.line[:60]})")
                return s.confirm_finished(now)
            digit = _digit(reply.result)
            if kind == "notice" and digit:
                actions = s.dtmf(digit, now)
                if s.state is not State.NOTIFYING:
                    return actions  # the consent key: the notice stops here
            if self.failing:
                return []  # stopping: the actor hands the caller back next
            if loop.time() >= deadline:
                return s.prompt_timed_out(now)
            # Any other key: on from where it stopped.
            if reply.endpos is not None:
                offset = max(reply.endpos, 0)

    async def _window(self, seconds: float) -> list[Action]:
        s, conn = self.session, self.conn
        assert isinstance(conn, AgiConnection)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while s.state is State.AWAITING_KEY and not self.failing:
            remaining = deadline - loop.time()
            if remaining <= 0.005:
                return s.window_expired(utcnow())
            ms = math.ceil(remaining * 1000)
            reply = await conn.command(f"WAIT FOR DIGIT {ms}", remaining + self.settings.command_timeout)
            now = utcnow()
            if reply.result < 0:
                if conn.hung_up or not await self._alive():
                    return s.hangup(now)
                return s.window_expired(now)
            digit = _digit(reply.result)
            if digit:
                actions = s.dtmf(digit, now)
                if s.state is not State.AWAITING_KEY:
                    return actions
        return []

    async def _alive(self) -> bool:
        """After ``result=-1``: a dead channel answers 511 (or HANGUP); a live one its state."""
        assert isinstance(self.conn, AgiConnection)
        try:
            reply = await self.conn.command("CHANNEL STATUS", self.settings.command_timeout)
        except AgiHangup:
            return False
        return reply.result >= 0

    async def _hand_back(self, variables: dict[str, str]) -> list[Action]:
        conn = self.conn
        if not isinstance(conn, AgiConnection) or conn.closed:
            return []  # no AGI session (any more): the dialplan already went on
        # After a failure the peer may be slow or gone: a short limit, then the fail-safe covers it.
        timeout = min(self.settings.command_timeout, 1.0) if self.failing else self.settings.command_timeout
        for name, value in variables.items():
            await conn.command(f"SET VARIABLE {name} {quote(value)}", timeout)
        actions = self.session.handed_back(utcnow())
        try:
            reply = await conn.command("GET VARIABLE CHANNEL(linkedid)", timeout)
            if reply.result == 1 and reply.data:
                actions += self.session.linkedid_known(reply.data)
        except AgiError:
            pass  # the hand-back is done; the linkedid is a nicety
        await self._end_session()  # AGI() returns: the dialplan goes on
        return actions


class AgiDoor:
    def __init__(self, settings: AgiSettings, service: CallService) -> None:
        self.settings = settings
        self.service = service
        self.server: asyncio.Server | None = None
        self.calls: dict[str, AgiLink] = {}  # by uniqueid: in the AGI session or back in the dialplan
        self.sessions: set[asyncio.Task[None]] = set()  # every call's task (AGI session, then following it)
        self.open: set[AgiConnection | Detached] = set()  # AGI sessions in progress (agi.max_sessions)
        self.closing = False
        self.connections = 0  # accepted so far (tests, logs)
        self.rejected = 0  # closed without a call: garbage, hang-up in the handshake, over the limit
        self._follower: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        assert self.server is not None and self.server.sockets
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        host, port = split_listen(self.settings.listen)
        self.server = await asyncio.start_server(self._accept, host, port, limit=self.settings.max_line,
                                                 reuse_address=True)
        log.info("FastAGI listening on %s", self.address)
        if not is_loopback(host):
            log.warning("agi.listen %s is not a loopback address: FastAGI has no authentication, so anyone "
                        "who reaches it can have notices played and recordings started; firewall it", self.address)
        self._follower = asyncio.create_task(self._follow(), name="agi-follow")

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AgiConnection(reader, writer, self.settings.max_line)
        self.connections += 1
        self.open.add(conn)
        try:
            if len(self.open) > self.settings.max_sessions:
                self.rejected += 1
                log.error("FastAGI %s: more than agi.max_sessions=%d sessions; closed (the dialplan's "
                          "fail-safe goes on unrecorded)", conn.peer, self.settings.max_sessions)
                return
            try:
                env = await conn.read_env(self.settings.handshake_timeout, self.settings.max_handshake_bytes)
            except AgiHangup as exc:
                self.rejected += 1
                log.info("FastAGI %s: %s; connection closed", conn.peer, exc)
                return
            except AgiError as exc:
                self.rejected += 1
                log.warning("FastAGI %s: %s; connection closed", conn.peer, exc)
                return
            await self._begin(conn, env)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("FastAGI %s: session failed", conn.peer)
        finally:
            await conn.close()
            self.open.discard(conn)

    async def _begin(self, conn: AgiConnection, env: AgiEnv) -> None:
        uniqueid, channel = env.get("agi_uniqueid"), env.get("agi_channel")
        request = urlsplit(env.get("agi_request"))
        script = request.path.strip("/")
        if self.closing:
            await self._pass_through(conn, channel, "callrec is stopping")
            return
        if script not in SCRIPTS:
            log.error("FastAGI %s: unknown script %r in %s (expected agi://host:port/notice); %r goes on "
                      "unrecorded", conn.peer, script[:60], "AGI()", channel)
            await self._pass_through(conn, channel, "unknown AGI script")
            return
        known = self.calls.get(uniqueid)
        if known is not None:
            # A second AGI() on a call already handled: the same answer, no second notice.
            log.info("call %s: AGI again on %r; same answer", known.session.record.id, channel)
            try:
                for name, value in known.session.variables().items():
                    await conn.command(f"SET VARIABLE {name} {quote(value)}", self.settings.command_timeout)
            except AgiError as exc:
                log.warning("call %s: second pass on %r: %s", known.session.record.id, channel, exc)
            return
        raw_args = [f"{k}={v}" for k, v in parse_qsl(request.query, keep_blank_values=True)] + env.args
        args, arg_warnings = parse_args(raw_args)
        caller, caller_name = _unknown(env.get("agi_callerid")), _unknown(env.get("agi_calleridname"))
        facts = CallFacts(
            did=args.get("did") or env.get("agi_extension"),
            caller=caller,
            context=args.get("context") or env.get("agi_context"),
            channel_language=env.get("agi_language"),
            args=args,
        )
        if env.tainted:
            # Caller ID with a line break: read it again, exactly, before the policy sees it.
            try:
                again = await reread_caller(conn, self.settings.command_timeout)
            except AgiHangup:
                log.info("FastAGI %s: %r hung up before the notice", conn.peer, channel)
                return
            if again is not None:
                caller, caller_name = again
                facts = CallFacts(did=facts.did, caller=caller, context=facts.context,
                                  channel_language=facts.channel_language, args=facts.args)
        session = self.service.open_call(door="agi", uniqueid=uniqueid, channel=channel, facts=facts,
                                         caller_name=caller_name, started_at=utcnow())
        for warning in arg_warnings + env.notes:
            session.warn(warning)
        if conn.hung_up:
            first = session.hangup(utcnow())
        else:
            first = session.start()  # the notice: the first thing that happens
        self.service.save(session)
        actor = self._actor(session, conn, uniqueid, channel)
        await actor.run(first)

    async def _pass_through(self, conn: AgiConnection, channel: str, why: str) -> None:
        try:
            await conn.command(f"SET VARIABLE CALLREC_CONSENT {quote('unavailable')}", self.settings.command_timeout)
        except AgiError as exc:
            log.warning("FastAGI %s: could not pass %r through (%s): %s", conn.peer, channel, why, exc)

    async def channel_gone(self, channel: str) -> bool:
        """AMI's Status: False while it exists or AMI cannot tell."""
        try:
            await self.service.ami.action({"Action": "Status", "Channel": channel})
        except AmiUnavailable:
            return False
        except AmiError:
            return True  # "No such channel" (or a name AMI refuses: no such channel either)
        return False

    async def _follow(self) -> None:
        """AMI's Hangup ends calls back in the dialplan; if AMI was down at that moment, this
        finds the channels that are gone."""
        while True:
            await asyncio.sleep(FOLLOW_CHECK)
            for link in list(self.calls.values()):
                if link.actor is not None and link.session.state is State.IN_DIALPLAN and link.conn.closed \
                        and await self.channel_gone(link.channel):
                    link.actor.post("gone")

    def _actor(self, session: CallSession, conn: AgiConnection | Detached, uniqueid: str, channel: str) -> CallActor:
        link = AgiLink(self, conn, uniqueid, channel)
        actor = CallActor(session, self.service, link, self)
        link.actor = actor
        self.calls[uniqueid] = link
        return actor

    # -- calls an earlier run left open, when the ARI door is off (callrec.calls.recovery) --

    def recover(self, records: list[CallRecord]) -> None:
        """Open rows from an earlier run, followed up through AMI."""
        task = asyncio.create_task(self._recover(records), name="agi-recover")
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _recover(self, records: list[CallRecord]) -> None:
        await self.service.ami.logged_in.wait()
        await recover_lost(records, self.service, self)

    async def whereabouts(self, record: CallRecord) -> Whereabouts:
        # An AGI call is never waiting for us again: the earlier run's AGI session ended with it.
        # If AMI cannot tell, the call is followed, and _follow() finds it gone later.
        return Whereabouts.GONE if await self.channel_gone(record.channel) else Whereabouts.IN_DIALPLAN

    async def before_retaking(self, record: CallRecord) -> None:
        pass  # never asked: whereabouts() does not say WAITING

    def follow(self, session: CallSession) -> None:
        actor = self._actor(session, Detached(), session.record.uniqueid, session.record.channel)
        self.sessions.add(actor.start([]))
        assert actor.task is not None
        actor.task.add_done_callback(self.sessions.discard)

    def on_ami_hangup(self, uniqueid: str, cause: int | None, cause_text: str | None) -> None:
        link = self.calls.get(uniqueid)
        if link is not None and link.actor is not None:
            link.actor.post("hangup", cause=cause, cause_text=cause_text)

    def forget(self, actor: CallActor) -> None:
        for key, link in list(self.calls.items()):
            if link.actor is actor:
                del self.calls[key]

    async def close(self, timeout: float = STOP_GRACE) -> None:
        """Stop accepting; hand callers still in the notice back; leave calls in the dialplan
        recording (the next start follows them up from the call log)."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        if self._follower is not None:
            self._follower.cancel()
        await stop_actors([link.actor for link in self.calls.values() if link.actor is not None], timeout)
        if self.sessions:  # connections still in their handshake
            _, late = await asyncio.wait(list(self.sessions), timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*self.sessions, return_exceptions=True)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except TimeoutError:
                pass


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:4573"`` / ``"[::1]:4573"`` -> (host, port).  Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number < 65536:
        raise ValueError(f"port {number} out of range")
    return host, number


def _digit(result: int) -> str:
    """``result=57`` -> ``"9"``; anything that is not a DTMF key -> ``""``."""
    if 0 < result < 128 and chr(result) in ESCAPE_DIGITS:
        return chr(result)
    return ""


def _unknown(value: str) -> str:
    """Asterisk sends ``unknown`` for a caller ID that is not there (ARI gives '')."""
    return "" if value == "unknown" else value


async def reread_caller(conn: AgiConnection, timeout: float) -> tuple[str, str] | None:
    """Caller ID through BASE64_ENCODE: exact even when it holds line breaks."""
    out = []
    for what in ("num", "name"):
        reply = await conn.command(f"GET FULL VARIABLE ${{BASE64_ENCODE(${{CALLERID({what})}})}}", timeout)
        try:
            out.append(base64.b64decode(reply.data, validate=True).decode("utf-8", errors="replace")
                       if reply.result == 1 else "")
        except ValueError:
            return None
    return out[0], out[1]
