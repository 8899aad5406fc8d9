"""AMI through panoramisk 1.4: MixMonitor start/stop and Hangup events.

panoramisk defects this wrapper covers (tests: test_protocol_edges, test_resilience_e2e, test_cli_e2e):
- a failed login is only a flag (``authenticated = False``); we turn it into AmiAuthError;
- connect errors are only logged while it retries forever; we report them and keep retrying;
- an action sent while disconnected is queued and replayed *after* reconnecting, which for
  MixMonitor would start a recording minutes late on a stranger's call: we refuse actions while
  not logged in, and every action has a timeout that cancels its future (a cancelled future is
  never replayed);
- header values with CR/LF would inject AMI headers: refused;
- ``Manager`` calls ``asyncio.get_event_loop()``: we create it inside the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager

log = logging.getLogger("callrec.ami")

HangupHandler = Callable[[str, int | None, str | None], None]
EventHandler = Callable[[dict[str, str]], None]


class AmiError(Exception):
    pass


class AmiAuthError(AmiError):
    pass


class AmiUnavailable(AmiError):
    pass


class AmiTimeout(AmiUnavailable):
    """Sent, but no answer in time: the action may still have been carried out."""


class Ami:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 3.0,
                 on_hangup: HangupHandler | None = None) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.timeout = timeout
        self.on_hangup = on_hangup
        # More events by name (BridgeEnter, DialEnd, UserEvent for the agents' pause key), added
        # with on_event() before start().  UserEvent needs "read = call,user" in manager.conf.
        self._handlers: dict[str, list[EventHandler]] = {}
        self.manager: Manager | None = None
        self._connecting: asyncio.Task[Any] | None = None
        self._closed = False
        self.logged_in = asyncio.Event()
        self.auth_failed = False
        self.last_error: str | None = None
        self.logins = 0
        self._filter_tasks: set[asyncio.Task[None]] = set()
        self.filtered = False  # Asterisk took the event filter of this connection (_filter_events)

    async def start(self) -> None:
        """Start connecting (in the background; retries until Asterisk answers)."""
        loop = asyncio.get_running_loop()
        self.manager = Manager(
            loop=loop, host=self.host, port=self.port, username=self.user, secret=self._password,
            ping_delay=5, ping_interval=5, reconnect_timeout=1, events="call,user",
            on_connect=self._on_connect, on_disconnect=self._on_disconnect,
        )
        self.manager.log = logging.getLogger("callrec.ami.panoramisk")
        self.manager.register_event("Hangup", self._hangup_event)
        for name in self._handlers:
            self.manager.register_event(name, self._dispatch)
        connect = self.manager.connect

        def connecting(*args: Any, **kwargs: Any) -> asyncio.Task[Any] | None:
            # Kept so close() can cancel a connect still under way.  panoramisk's reconnects come here too,
            # through timers it set before close(): those must not start a connect that nobody ends.
            if self._closed:
                return None
            self._connecting = connect(*args, **kwargs)
            return self._connecting

        self.manager.connect = connecting
        self._closed = False
        first = self.manager.connect()
        assert first is not None
        first.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.last_error = f"cannot connect to {self.host}:{self.port}: {task.exception()}"

    def _on_connect(self, manager: Manager) -> None:
        fut = manager.authenticated_future
        if fut is not None:
            fut.add_done_callback(self._login_done)

    def _login_done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        resp = fut.result()
        if resp.success:
            self.logins += 1
            self.auth_failed = False
            self.last_error = None
            self.logged_in.set()
            log.info("AMI logged in to %s:%s as %s", self.host, self.port, self.user)
            self._filter_events()
        else:
            self.auth_failed = True
            self.last_error = f"AMI login refused for user {self.user!r}: {resp.get('Message', '')}"
            log.error("%s", self.last_error)

    def event_names(self) -> list[str]:
        """The AMI events callrec reads: Hangup and those registered with on_event()."""
        return ["Hangup", *sorted(set(self._handlers) - {"Hangup"})]

    def _filter_events(self) -> None:
        """Ask Asterisk for only the events callrec reads (AMI ``Filter``, this session only).

        The "call" class carries some 20 events per call (Newchannel, Newstate, VarSet...), each
        parsed by panoramisk to be dropped; the filter keeps the few used.  ``Filter`` needs the
        "system" write permission, which MixMonitor needs too.  manager.conf's ``eventfilter``
        lines (asterisk.conf.example) do the same for the user; both may be there.  Refused (an
        older Asterisk, no "system" right): every event still comes, and is ignored as before.
        """
        manager = self.manager
        self.filtered = False
        if manager is None or manager.protocol is None:
            return
        futures = [manager.send_action({"Action": "Filter", "Operation": "Add",
                                        "MatchCriteria": f"action(include),name({name})", "Filter": ""})
                   for name in self.event_names()]

        async def answered() -> None:
            try:
                replies = await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
            except (TimeoutError, OSError):
                log.info("AMI Filter unanswered: every call event is read (and ignored)")
                return
            refused = [r for r in replies if not getattr(r, "success", False)]
            self.filtered = not refused
            if refused:
                log.warning("AMI Filter refused (%s): every call event is read (and ignored); give the user "
                            "\"write = system\" or add manager.conf's eventfilter lines",
                            refused[0].get("Message", "failed"))

        task = asyncio.get_running_loop().create_task(answered(), name="ami-filter")
        self._filter_tasks.add(task)
        task.add_done_callback(self._filter_tasks.discard)

    def _on_disconnect(self, manager: Manager, exc: Any) -> None:
        if self.logged_in.is_set():
            log.warning("AMI connection lost; reconnecting")
        self.logged_in.clear()
        self.last_error = "connection lost"
        # panoramisk would replay unanswered actions after the reconnect: a MixMonitor minutes late,
        # maybe twice on one file.  Callers of action() have already been told it failed.
        manager.awaiting_actions.clear()

    async def keepalive(self, interval: float = 10.0, timeout: float = 5.0) -> None:
        """panoramisk pings but never checks the answers: a half-open connection would look
        logged in for many minutes.  Ping and drop the connection when Asterisk does not answer."""
        while True:
            await asyncio.sleep(interval)
            if self.manager is None or not self.logged_in.is_set() or self.manager.protocol is None:
                continue
            try:
                future = self.manager.send_action({"Action": "Ping"})
                await asyncio.wait_for(future, timeout)
            except (TimeoutError, OSError):
                log.warning("AMI did not answer a ping within %gs; reconnecting", timeout)
                transport = getattr(self.manager.protocol, "transport", None)
                if transport is not None:
                    transport.close()

    def _hangup_event(self, manager: Manager, event: Any) -> None:
        if self.on_hangup is None:
            return
        uniqueid = event.get("Uniqueid") or ""
        try:
            cause: int | None = int(event.get("Cause", ""))
        except ValueError:
            cause = None
        try:
            self.on_hangup(uniqueid, cause, event.get("Cause-txt"))
        except Exception:
            log.exception("handling AMI Hangup failed")

    def on_event(self, name: str, handler: EventHandler) -> None:
        """Call ``handler(fields)`` for each AMI event ``name``; register before start()."""
        self._handlers.setdefault(name, []).append(handler)

    def _dispatch(self, manager: Manager, event: Any) -> None:
        fields = {str(k): str(v) for k, v in dict(event).items()}
        for handler in self._handlers.get(fields.get("Event", ""), []):
            try:
                handler(fields)
            except Exception:
                log.exception("handling AMI %s failed", fields.get("Event"))

    async def wait_logged_in(self, timeout: float) -> None:
        """For start-up and `callrec check`: raise a clear error if login does not happen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.logged_in.is_set():
            if self.auth_failed:
                raise AmiAuthError(self.last_error or "AMI login refused")
            if loop.time() > deadline:
                raise AmiUnavailable(self.last_error or f"no answer from AMI at {self.host}:{self.port}")
            await asyncio.sleep(0.05)

    async def action(self, fields: dict[str, str]) -> Any:
        for key, value in fields.items():
            if "\r" in value or "\n" in value:
                raise AmiError(f"AMI header {key} carries a line break; refused")
        if self.manager is None or not self.logged_in.is_set() or self.manager.protocol is None:
            raise AmiUnavailable(self.last_error or "AMI not connected")
        future = self.manager.send_action(dict(fields))
        try:
            resp = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise AmiTimeout(f"{fields.get('Action')}: no answer within {self.timeout:g}s") from None
        if isinstance(resp, list):
            resp = resp[0]
        if not resp.success:
            raise AmiError(f"{fields.get('Action')}: {resp.get('Message', 'failed')}")
        return resp

    async def mix_monitor(self, channel: str, file: str, options: str = "") -> str | None:
        """Start MixMonitor on a channel; returns its MixMonitorID (for StopMixMonitor)."""
        fields = {"Action": "MixMonitor", "Channel": channel, "File": file}
        if options:
            fields["Options"] = options
        resp = await self.action(fields)
        return resp.get("MixMonitorID")

    async def stop_mix_monitor(self, channel: str, mixmonitor_id: str | None = None) -> None:
        fields = {"Action": "StopMixMonitor", "Channel": channel}
        if mixmonitor_id:
            fields["MixMonitorID"] = mixmonitor_id
        await self.action(fields)

    async def close(self) -> None:
        if self.manager is not None:
            # No reconnect after this, whatever panoramisk has already scheduled.
            self._closed = True
            self.manager.connect = lambda *args, **kwargs: None
            task = self._connecting
            if task is not None and not task.done():
                # A connect still under way (a slow or silent host): panoramisk's callback would call result()
                # on the cancelled task and log a traceback when the loop ends.
                task.remove_done_callback(self.manager.connection_made)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            self.manager.close()
            # panoramisk schedules its own reconnect on connection_lost; stop that.
            self.manager.connection_lost = lambda exc: None
            if self.manager.protocol is not None:
                self.manager.protocol.factory = None
            self.logged_in.clear()
