"""FastAGI protocol: one TCP connection per call, Asterisk speaks first.

Our own small layer on asyncio streams instead of panoramisk's FastAGI server, which spins at
90 % CPU when Asterisk hangs up before the AGI variables end (its ``read()`` keeps returning
``b''``).  Here every read is bounded in length and time, and EOF ends the session.

The exchange::

    Asterisk -> agi_network: yes / agi_request: agi://host/notice?... / agi_channel: ... / ... / <blank>
    callrec  -> STREAM FILE /path/notice "0123456789*#"
    Asterisk -> 200 result=0 endpos=72000
    ...
    Asterisk -> HANGUP                  (the channel hung up; may come before any reply)
    Asterisk -> 511 Command Not Permitted on a dead channel or intercept routine
    Asterisk -> 510 Invalid or unknown command
    Asterisk -> 520-Invalid command syntax.  Proper usage follows: ... 520 End of proper usage.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

# Keys Asterisk sends before any caller-controlled value (caller ID, DNID, RDNIS): their first
# occurrence is genuine.  Keys sent after them: their last occurrence is.  A caller ID holding a
# line break cannot forge the request, the channel or the dialplan arguments this way.
KNOWN_KEYS = {"agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
              "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname", "agi_callingpres",
              "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context",
              "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid"}
EARLY_KEYS = ("agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
              "agi_uniqueid", "agi_version")
MAX_ENV_LINES = 200  # every line of the handshake counts, continuation lines included
MAX_ENV_BYTES = 65536  # the handshake in all (agi.max_handshake_bytes); Asterisk's own is ~1 KB
MAX_REPLY_LINES = 200  # lines read for one reply (HANGUP notes, a 520 usage block)
# Sent to cut a running command short; its reply ("200 result=1 (callrec-interrupt)") is told
# apart from every other by its data.
INTERRUPT_MARK = "callrec-interrupt"
INTERRUPT_COMMAND = f"GET FULL VARIABLE {INTERRUPT_MARK}"
_KEY_RE = re.compile(r"^agi_[a-z0-9_]{1,40}$")
_ARG_RE = re.compile(r"^agi_arg_([1-9][0-9]{0,2})$")
_REPLY_RE = re.compile(r"^200 result=(-?\d+)(?: \((.*)\))?(?: endpos=(-?\d+))?\s*$")
_RESULT_RE = re.compile(r"^200 result=(-?\d+)")


log = logging.getLogger("callrec.agi.protocol")


class AgiError(Exception):
    """The session cannot go on: the peer broke the protocol, went away or timed out."""


class AgiClosed(AgiError):
    """End of stream: the peer closed the connection."""


class AgiHangup(AgiError):
    """The channel hung up (a ``HANGUP`` line, ``511``, or ``result=-1`` where that means it)."""


class AgiCommandError(AgiError):
    """``510`` / ``520``: Asterisk refused the command (a bug on our side, or an old Asterisk)."""


class AgiProtocolError(AgiError):
    """Lines that are not AGI: garbage, binary, too long, too many."""


class AgiTimeout(AgiError):
    """No complete line in time."""


@dataclass
class AgiEnv:
    values: dict[str, str]
    args: list[str]
    # Some line did not fit the protocol (a caller-controlled value with a line break in it):
    # values that come after caller ID are not to be trusted blindly.
    tainted: bool = False
    notes: list[str] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: int
    data: str
    endpos: int | None
    line: str
    interrupted: bool = False  # Asterisk dropped the command for our interrupt (no reply of its own)


class AgiConnection:
    """One FastAGI session over asyncio streams (created by ``asyncio.start_server``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_line: int) -> None:
        self.reader = reader
        self.max_line = max_line  # the reader's limit (asyncio.start_server(limit=...))
        self.writer = writer
        self.hung_up = False  # Asterisk said HANGUP (or 511): the channel is gone
        self.closed = False
        self.busy = False  # a command is out and its reply not in yet
        self._interrupts = 0  # NOOPs sent to cut a command short, whose replies are still to come
        self.received = 0  # bytes read so far (line ends included)

    @property
    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"

    async def readline(self, timeout: float) -> str:
        """One line without its end; bounded by the reader's limit and ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise AgiClosed(f"connection closed in the middle of a line ({len(exc.partial)} bytes)") from None
            raise AgiClosed("connection closed") from None
        except asyncio.LimitOverrunError:
            raise AgiProtocolError(f"line longer than {self.max_line} bytes") from None
        except TimeoutError:
            raise AgiTimeout(f"no complete line within {timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise AgiClosed(f"connection lost: {exc}") from None
        self.received += len(raw)
        text = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
        return text

    async def _line_before(self, deadline: float, what: str) -> str:
        """One line, if ``deadline`` has not passed.  Lines already buffered are returned without
        waiting, so a fast peer would never meet the read's own timeout: the deadline is checked
        before every line."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AgiTimeout(f"{what} not complete in time")
        return await self.readline(remaining)

    async def read_env(self, timeout: float, max_bytes: int = MAX_ENV_BYTES) -> AgiEnv:
        """The variables Asterisk sends first, up to the blank line: within ``timeout``, at most
        ``MAX_ENV_LINES`` lines (continuation lines too) and ``max_bytes`` bytes, all in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start = self.received
        # (key, parts of the value): a value continued over several lines is joined once, at the end.
        pieces: list[tuple[str, list[str]]] = []
        count = 0
        tainted = False
        notes: list[str] = []
        while True:
            try:
                line = await self._line_before(deadline, "AGI handshake")
            except AgiTimeout:
                raise AgiTimeout(f"AGI handshake not complete within {timeout:g}s") from None
            if line == "":
                break
            count += 1
            if count > MAX_ENV_LINES:
                raise AgiProtocolError(f"more than {MAX_ENV_LINES} lines before the blank line")
            if self.received - start > max_bytes:
                raise AgiProtocolError(f"AGI handshake longer than {max_bytes} bytes")
            if line == "HANGUP":
                self.hung_up = True
                raise AgiHangup("the channel hung up during the AGI handshake")
            key, sep, value = line.partition(": ")
            if not sep and line.endswith(":"):
                key, sep, value = line[:-1], ":", ""
            if sep and _KEY_RE.match(key):
                pieces.append((key, [value]))
                continue
            if not pieces:
                raise AgiProtocolError(f"not an AGI variable: {line[:60]!r}")
            # A value with a line break (Asterisk sends caller ID verbatim): keep it with the
            # previous value, and trust nothing that a forged line could have set.
            pieces[-1][1].append(line)
            tainted = True
        lines = [(key, "\n".join(parts)) for key, parts in pieces]
        if not lines:
            raise AgiProtocolError("empty AGI handshake")
        values: dict[str, str] = {}
        seen: set[str] = set()
        for key, value in lines:
            if key in seen:
                tainted = True
                if key in EARLY_KEYS:
                    continue  # the first is Asterisk's own
            seen.add(key)
            if key not in KNOWN_KEYS and not _ARG_RE.match(key):
                tainted = True  # a line a caller ID could have forged
            values[key] = value
        args = _trailing_args(lines)
        if tainted:
            notes.append("the AGI variables carried a line break (in caller ID?); caller ID re-read")
        for key in ("agi_request", "agi_channel", "agi_uniqueid"):
            if not values.get(key):
                raise AgiProtocolError(f"AGI handshake without {key}")
        return AgiEnv(values, args, tainted, notes)

    def interrupt(self) -> None:
        """Cut a running STREAM FILE / WAIT FOR DIGIT short.  Asterisk watches the AGI socket
        during both and ends them as soon as a line arrives: WAIT FOR DIGIT replies
        ``result=1``, STREAM FILE gives no reply of its own (the new command replaces it).  The
        line is a harmless command whose reply is recognised by its data and dropped."""
        if self.closed or not self.busy or self._interrupts:
            return
        self._interrupts += 1
        try:
            self.writer.write(INTERRUPT_COMMAND.encode() + b"\n")
        except (ConnectionError, OSError):
            pass

    async def command(self, text: str, timeout: float) -> AgiReply:
        """Send one command and read its reply.  Raises AgiHangup, AgiCommandError, AgiError."""
        if "\n" in text or "\r" in text:
            raise ValueError("an AGI command must be one line")
        if self.closed:
            raise AgiClosed("session already closed")
        self.busy = True
        try:
            try:
                self.writer.write(text.encode() + b"\n")
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                raise AgiClosed(f"connection lost: {exc}") from None
            loop = asyncio.get_running_loop()
            try:
                reply = await self._reply(text, loop.time() + timeout)
            except (AgiHangup, AgiCommandError):
                self.busy = False
                await self._drain_interrupts(loop)
                raise
            self.busy = False
            if self._interrupts and reply.result == 1 and reply.data == INTERRUPT_MARK:
                self._interrupts -= 1  # the command was dropped for ours
                return AgiReply(200, 1, "", None, reply.line, interrupted=True)
            await self._drain_interrupts(loop)
            return reply
        finally:
            self.busy = False

    async def _drain_interrupts(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reply to an interrupt that came after the command's own one."""
        while self._interrupts and not self.closed:
            self._interrupts -= 1
            try:
                await self._reply(INTERRUPT_COMMAND, loop.time() + 5.0)
            except (AgiHangup, AgiCommandError):
                pass
            except AgiError:
                return

    async def _reply(self, text: str, deadline: float) -> AgiReply:
        """The reply to ``text``: HANGUP lines noted on the way, a 520 usage block read to its end."""
        for _ in range(MAX_REPLY_LINES):
            line = await self._line_before(deadline, f"reply to {text[:40]!r}")
            log.debug("%s: %s -> %r", self.peer, text[:80], line[:120])
            if line == "HANGUP":
                # The channel is gone; the reply to the command follows (result=-1 or 511).
                self.hung_up = True
                continue
            if line.startswith("200 "):
                m = _REPLY_RE.match(line)
                if m is not None:
                    endpos = int(m.group(3)) if m.group(3) is not None else None
                    return AgiReply(200, int(m.group(1)), m.group(2) or "", endpos, line)
                m = _RESULT_RE.match(line)
                if m is None:
                    raise AgiProtocolError(f"unreadable reply {line[:80]!r}")
                return AgiReply(200, int(m.group(1)), "", None, line)
            if line.startswith("511"):
                self.hung_up = True
                raise AgiHangup(repr(line[:120]))
            if line.startswith("510"):
                raise AgiCommandError(f"{text.split(' ')[0:2]}: {line[:120]!r}")
            if line.startswith("520-"):
                # Multi-line usage text up to "520 End of proper usage."
                for _ in range(MAX_REPLY_LINES):
                    more = await self._line_before(deadline, f"reply to {text[:40]!r}")
                    if more.startswith("520 "):
                        break
                raise AgiCommandError(f"{text[:40]!r}: invalid command syntax")
            if line.startswith("520"):
                raise AgiCommandError(f"{text[:40]!r}: {line[:120]!r}")
            raise AgiProtocolError(f"unexpected reply {line[:80]!r}")
        raise AgiProtocolError(f"more than {MAX_REPLY_LINES} lines in the reply to {text[:40]!r}")

    async def close(self, timeout: float = 2.0) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            pass


def _trailing_args(lines: list[tuple[str, str]]) -> list[str]:
    """The dialplan arguments: the run of ``agi_arg_1 .. agi_arg_N`` at the very end, which is
    where Asterisk puts them (an ``agi_arg_*`` a caller ID smuggled in comes earlier)."""
    run: list[tuple[int, str]] = []
    for key, value in reversed(lines):
        m = _ARG_RE.match(key)
        if m is None:
            break
        run.append((int(m.group(1)), value))
    run.reverse()
    if [n for n, _ in run] != list(range(1, len(run) + 1)):
        return []
    return [value for _, value in run]


def quote(value: str) -> str:
    """An AGI command argument in double quotes (Asterisk's parser honours backslash escapes)."""
    if "\n" in value or "\r" in value:
        raise ValueError("line break in an AGI argument")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
