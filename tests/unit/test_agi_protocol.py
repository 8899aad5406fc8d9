"""FastAGI protocol edges against a scripted fake Asterisk over real sockets.

The fake plays Asterisk's side of the AGI conversation line by line; the call flow behind it is
the real CallSession / CallService, with small fakes for the call-log writer and AMI only.
Everything here is also proven against the real Asterisk in test_agi_e2e.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import REPO
from support.settings import SECRETS, make_settings
from support.waiting import wait_for

from callrec.asterisk.agi import (
    AgiClosed,
    AgiCommandError,
    AgiConnection,
    AgiHangup,
    AgiProtocolError,
    AgiTimeout,
    quote,
)
from callrec.asterisk.ami import AmiError
from callrec.calls.prompts import PromptCatalog
from callrec.calls.service import CallService
from callrec.config.settings import ConfigError, Settings, parse_settings
from callrec.doors.agi import ESCAPE_DIGITS, AgiDoor

PROMPTS = "/usr/share/asterisk/sounds/callrec"
# What a hand-back sets: CALLREC_CALL_ID, _CONSENT, _RECORDING, _POLICY, _REASON.
HANDBACK_VARIABLES = 5


def env_lines(uniqueid: str = "1700000000.1", *, name: str = "Test Caller", request: str = "agi://127.0.0.1/notice",
              args: tuple[str, ...] = ()) -> bytes:
    lines = [
        "agi_network: yes", "agi_network_script: notice", f"agi_request: {request}",
        f"agi_channel: Local/100@x-{uniqueid};2", "agi_language: en", "agi_type: Local", f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.10.1", "agi_callerid: 5551000", f"agi_calleridname: {name}", "agi_callingpres: 0",
        "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: 100", "agi_rdnis: unknown",
        "agi_context: from-trunk", "agi_extension: 100", "agi_priority: 3", "agi_enhanced: 0.0",
        "agi_accountcode: ", "agi_threadid: 140000",
        *(f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


# -- the connection alone ----------------------------------------------------------------------


@pytest.fixture
async def pair() -> AsyncIterator[Any]:
    """(server-side AgiConnection, client reader, client writer) over a real TCP connection."""
    accepted: asyncio.Future[AgiConnection] = asyncio.get_running_loop().create_future()

    def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(AgiConnection(r, w, 1024))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0, limit=1024)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = await accepted
    yield conn, reader, writer
    writer.close()
    await conn.close()
    server.close()


async def test_env_is_parsed_with_its_arguments(pair: Any) -> None:
    conn, _, client = pair
    client.write(env_lines(args=("mode=opt-out", "", "did=100")))
    env = await conn.read_env(2)
    assert env.get("agi_uniqueid") == "1700000000.1" and env.get("agi_context") == "from-trunk"
    assert env.args == ["mode=opt-out", "", "did=100"] and not env.tainted


async def test_a_caller_id_with_line_breaks_cannot_forge_variables(pair: Any) -> None:
    conn, _, client = pair
    forged = "Mallory\nagi_arg_9: mode=opt-in\nagi_uniqueid: 1\nagi_context: evil\nplain text"
    client.write(env_lines(name=forged, args=("lang=ru",)))
    env = await conn.read_env(2)
    assert env.tainted and env.notes
    assert env.get("agi_uniqueid") == "1700000000.1"  # Asterisk's own (sent before caller ID)
    assert env.get("agi_context") == "from-trunk"  # Asterisk's own (sent after caller ID)
    assert env.args == ["lang=ru"]  # only the trailing run of arguments


async def test_hangup_in_the_handshake(pair: Any) -> None:
    conn, _, client = pair
    client.write(env_lines()[:200] + b"\nHANGUP\n")
    with pytest.raises((AgiHangup, AgiProtocolError)):
        await conn.read_env(2)


async def test_eof_in_the_middle_of_the_handshake_ends_the_read(pair: Any) -> None:
    """panoramisk 1.4 spins here (read() returns b'' forever); one read must end it."""
    conn, _, client = pair
    client.write(env_lines()[:150])
    client.close()
    with pytest.raises(AgiClosed):
        await conn.read_env(5)
    with pytest.raises(AgiClosed):
        await conn.readline(5)  # and stays ended


@pytest.mark.parametrize("payload, error", [
    (b"agi_request: " + b"A" * 5000 + b"\n", "line longer than 1024 bytes"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", "not an AGI variable"),
    (b"GET / HTTP/1.1\r\n", "not an AGI variable"),
    (b"agi_x: 1\n" * 300, "more than 200 lines"),
    (b"\n", "empty AGI handshake"),
    (b"agi_channel: x\nagi_uniqueid: 1\n\n", "without agi_request"),
])
async def test_garbage_handshakes(pair: Any, payload: bytes, error: str) -> None:
    conn, _, client = pair
    client.write(payload)
    with pytest.raises(AgiProtocolError, match=error):
        await conn.read_env(2)


async def test_silent_peer_times_out(pair: Any) -> None:
    conn, _, client = pair
    client.write(b"agi_request: agi://x/notice\n")
    with pytest.raises(AgiTimeout):
        await conn.read_env(0.3)


async def test_replies(pair: Any) -> None:
    conn, reader, client = pair

    async def answer(*lines: str) -> None:
        await reader.readline()
        client.write("".join(f"{line}\n" for line in lines).encode())

    async def run(command: str, *lines: str) -> Any:
        task = asyncio.create_task(answer(*lines))
        try:
            return await conn.command(command, 2)
        finally:
            await task

    r = await run("STREAM FILE x \"9\"", "200 result=57 endpos=8160")
    assert (r.result, r.endpos, r.data) == (57, 8160, "")
    r = await run("GET VARIABLE X", "200 result=1 (a (b) c)")
    assert (r.result, r.data) == (1, "a (b) c")
    r = await run("WAIT FOR DIGIT 10", "200 result=0 (timeout) extra words")
    assert r.result == 0
    with pytest.raises(AgiCommandError):
        await run("NO SUCH", "510 Invalid or unknown command")
    with pytest.raises(AgiCommandError):
        await run("STREAM FILE", "520-Invalid command syntax.  Proper usage follows:",
                  "Usage: STREAM FILE <filename> <escape digits> [sample offset]", "520 End of proper usage.")
    r = await run("CHANNEL STATUS", "200 result=6")  # still usable after a 520 block
    assert r.result == 6 and not conn.hung_up
    r = await run("STREAM FILE x \"\"", "HANGUP", "200 result=-1 endpos=400")
    assert r.result == -1 and conn.hung_up
    with pytest.raises(AgiHangup):
        await run("SET VARIABLE A \"1\"", "511 Command Not Permitted on a dead channel or intercept routine")
    with pytest.raises(AgiProtocolError):
        await run("CHANNEL STATUS", "\x00\xff garbage")


async def test_a_flood_of_hangup_lines_in_a_reply_is_cut_off(pair: Any) -> None:
    """Every line of a reply counts: a peer cannot keep one reply going with HANGUP lines
    (before, the loop read all of them and then waited out the command's time limit)."""
    conn, reader, client = pair

    async def flood() -> None:
        await reader.readline()
        client.write(b"HANGUP\n" * 100_000)

    task = asyncio.create_task(flood())
    started = time.process_time()
    with pytest.raises(AgiProtocolError, match="more than 200 lines in the reply to 'CHANNEL STATUS'"):
        await conn.command("CHANNEL STATUS", 10)
    assert time.process_time() - started < 2.0
    await task


def test_quote() -> None:
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    with pytest.raises(ValueError):
        quote("x\ny")


# -- the door behind a fake Asterisk ---------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def update(self, call_id: str, changes: dict[str, Any]) -> None:
        self.rows.setdefault(call_id, {}).update(changes)


class FakeAmi:
    def __init__(self) -> None:
        self.monitors: list[tuple[str, str]] = []
        self.channels: set[str] = set()

    async def mix_monitor(self, channel: str, file: str, options: str = "") -> str:
        self.monitors.append((channel, file))
        return "mm-1"

    async def action(self, fields: dict[str, str]) -> dict[str, str]:
        if fields.get("Action") == "Status" and fields.get("Channel") not in self.channels:
            raise AmiError("Status: No such channel")
        return {"Response": "Success"}


def settings(notice: dict[str, Any] | None = None, **agi: Any) -> Settings:
    return make_settings(
        notice={"prompts_dir": PROMPTS, "local_prompts_dir": str(REPO / "sounds"), "decision_window": 0.5,
                **(notice or {})},
        agi={"listen": "127.0.0.1:0", **agi})


@pytest.fixture
async def door(request: pytest.FixtureRequest) -> AsyncIterator[AgiDoor]:
    s = settings(**getattr(request, "param", {}))  # e.g. {"max_sessions": 2} or {"notice": {...}}
    service = CallService(s, PromptCatalog.load(PROMPTS, REPO / "sounds"), FakeWriter(), FakeAmi())  # type: ignore[arg-type]
    d = AgiDoor(s.agi, service)
    await d.start()
    yield d
    await d.close(timeout=2)


class FakeAsterisk:
    """Asterisk's side of one AGI session."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def call(cls, door: AgiDoor, env: bytes) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(env)
        return cls(reader, writer)

    async def expect(self, prefix: str, reply: str | None = None) -> str:
        line = (await asyncio.wait_for(self.reader.readline(), 5)).decode().rstrip("\n")
        assert line.startswith(prefix), (line, prefix)
        if reply is not None:
            self.writer.write(reply.encode() + b"\n")
        return line

    async def ended(self) -> None:
        assert await asyncio.wait_for(self.reader.read(), 5) == b""  # the daemon closed the session
        self.writer.close()


def row(door: AgiDoor, uniqueid: str) -> dict[str, Any]:
    rows = door.service.writer.rows  # type: ignore[attr-defined]
    (r,) = [r for r in rows.values() if r.get("uniqueid") == uniqueid]
    return r


async def test_keys_are_logged_and_the_notice_resumes_where_it_stopped(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.1", args=("mode=opt-out",)))
    first = await ast.expect("STREAM FILE /usr/share/asterisk/sounds/callrec/en/notice-opt-out ",
                             "200 result=53 endpos=8000")  # "5": means nothing in opt-out mode
    assert first.endswith(quote(ESCAPE_DIGITS))
    await ast.expect(f"STREAM FILE /usr/share/asterisk/sounds/callrec/en/notice-opt-out {quote(ESCAPE_DIGITS)} 8000",
                     "200 result=57 endpos=16000")  # "9": opt out
    await ast.expect("STREAM FILE /usr/share/asterisk/sounds/callrec/en/not-recorded ", "200 result=0 endpos=24000")
    call_id = (await ast.expect("SET VARIABLE CALLREC_CALL_ID ", "200 result=1")).split('"')[1]
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "declined"'
    assert await ast.expect("SET VARIABLE CALLREC_RECORDING ", "200 result=1") == \
        'SET VARIABLE CALLREC_RECORDING ""'
    await ast.expect("SET VARIABLE CALLREC_POLICY ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_REASON ", "200 result=1")
    await ast.expect("GET VARIABLE CHANNEL(linkedid)", "200 result=1 (1.0)")
    await ast.ended()
    r = row(door, "1.1")
    assert r["id"] == call_id and r["door"] == "agi"
    assert (r["consent"], r["consent_key"], r["keys_pressed"], r["notice_completed"]) == ("declined", "9", "59", False)
    assert r["linkedid"] == "1.0" and r["called_number"] == "100" and r["context"] == "from-trunk"
    assert r["notice_started_at"] < r["notice_finished_at"] <= r["consent_at"] <= r["handed_back_at"]


async def test_hangup_during_the_notice(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.2"))
    await ast.expect("STREAM FILE ", "HANGUP\n200 result=-1 endpos=4000")
    await ast.ended()
    await wait_for(lambda: "1.2" not in door.calls)
    r = row(door, "1.2")
    assert (r["consent"], r["notice_completed"], r["state"]) == ("abandoned", False, "ended")
    assert r["finalized_at"] is not None and not door.service.ami.monitors  # type: ignore[attr-defined]


async def test_a_prompt_asterisk_cannot_play_fails_the_notice(door: AgiDoor) -> None:
    """result=-1 on a live channel (the file is missing): CHANNEL STATUS tells it from a hang-up."""
    ast = await FakeAsterisk.call(door, env_lines("1.3"))
    await ast.expect("STREAM FILE ", "200 result=-1 endpos=0")
    await ast.expect("CHANNEL STATUS", "200 result=6")
    await ast.expect("SET VARIABLE CALLREC_CALL_ID ", "200 result=1")
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "notice_failed"'
    await ast.expect("SET VARIABLE CALLREC_RECORDING ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_POLICY ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_REASON ", "200 result=1")
    await ast.expect("GET VARIABLE", "200 result=0")
    await ast.ended()
    assert row(door, "1.3")["consent"] == "notice_failed"


async def test_notice_window_recording_and_the_hangup_from_ami(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.4", args=("mode=opt-in",)))
    await ast.expect("STREAM FILE ", "200 result=0 endpos=76000")
    await ast.expect("WAIT FOR DIGIT ", "200 result=50")  # "2": not the opt-in key; the window goes on
    await ast.expect("WAIT FOR DIGIT ", "200 result=49")  # "1": opt in
    await ast.expect("SET VARIABLE CALLREC_CALL_ID ", "200 result=1")
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "granted"'
    recording = await ast.expect("SET VARIABLE CALLREC_RECORDING ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_POLICY ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_REASON ", "200 result=1")
    await ast.expect("GET VARIABLE", "HANGUP\n511 Command Not Permitted on a dead channel or intercept routine")
    await ast.ended()
    assert door.service.ami.monitors == [("Local/100@x-1.4;2", recording.split('"')[1])]  # type: ignore[attr-defined]
    door.on_ami_hangup("1.4", 16, "Normal Clearing")  # back in the dialplan: AMI reports the end
    await wait_for(lambda: "1.4" not in door.calls)
    r = row(door, "1.4")
    assert (r["consent"], r["keys_pressed"], r["state"], r["hangup_cause"]) == ("granted", "21", "ended", 16)
    assert r["recording_status"] == "finalizing"  # the file is measured in the background


@pytest.mark.parametrize("reply", ["510 Invalid or unknown command", "garbage \x00\xff", "200 result=abc"])
async def test_a_broken_session_is_closed_and_logged_unavailable(door: AgiDoor, reply: str) -> None:
    uniqueid = f"1.5{len(reply)}"
    ast = await FakeAsterisk.call(door, env_lines(uniqueid))
    await ast.expect("STREAM FILE ", reply)
    await ast.ended()  # the dialplan's fail-safe goes on
    await wait_for(lambda: uniqueid not in door.calls)  # AMI: no such channel -> ended
    r = row(door, uniqueid)
    assert (r["consent"], r["state"], r["recording_status"]) == ("unavailable", "ended", "none")
    assert any("AGI session broke" in w for w in r["warnings"])


async def test_unknown_script_passes_the_call_through(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.6", request="agi://127.0.0.1/record-everything"))
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "unavailable"'
    await ast.ended()
    assert not door.service.writer.rows  # type: ignore[attr-defined]


async def test_query_and_arguments_go_through_the_policy(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines(
        "1.7", request="agi://127.0.0.1:4573/notice?lang=ru&mode=opt-in&bogus=1", args=("mode=notice", "did=555")))
    line = await ast.expect("STREAM FILE ", "HANGUP\n200 result=-1 endpos=1")
    await ast.ended()
    assert "/ru/notice-opt-in " in line  # the query's mode= came first and won
    await wait_for(lambda: "1.7" not in door.calls)
    r = row(door, "1.7")
    assert (r["consent_mode"], r["language"], r["called_number"]) == ("opt-in", "ru", "555")
    assert any("bogus" in w for w in r["warnings"]) and any("mode= given twice" in w for w in r["warnings"])


async def test_many_sessions_at_once(door: AgiDoor) -> None:
    async def one(i: int) -> None:
        ast = await FakeAsterisk.call(door, env_lines(f"2.{i}"))
        await ast.expect("STREAM FILE ", "200 result=0 endpos=56000")
        for _ in range(HANDBACK_VARIABLES):
            await ast.expect("SET VARIABLE ", "200 result=1")
        await ast.expect("GET VARIABLE", "200 result=1 (x)")
        await ast.ended()
        door.on_ami_hangup(f"2.{i}", 16, None)

    await asyncio.gather(*(one(i) for i in range(200)))
    await wait_for(lambda: not door.calls)
    rows = door.service.writer.rows.values()  # type: ignore[attr-defined]
    assert len(rows) == 200 and all(r["consent"] == "implied" for r in rows)
    assert len(door.service.ami.monitors) == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize("door", [{"max_sessions": 2}], indirect=True)
async def test_sessions_over_the_limit_are_closed_at_once(door: AgiDoor) -> None:
    held = [await asyncio.open_connection("127.0.0.1", door.port) for _ in range(2)]
    await wait_for(lambda: door.connections == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert door.rejected == 1
    for _, w in [*held, (reader, writer)]:
        w.close()


@pytest.mark.parametrize("door", [{"max_sessions": 2}], indirect=True)
async def test_calls_back_in_the_dialplan_do_not_count_against_the_limit(door: AgiDoor) -> None:
    for i in range(3):  # each one handed back and still followed (no hang-up yet)
        ast = await FakeAsterisk.call(door, env_lines(f"3.{i}"))
        await ast.expect("STREAM FILE ", "200 result=0 endpos=56000")
        for _ in range(HANDBACK_VARIABLES):
            await ast.expect("SET VARIABLE ", "200 result=1")
        await ast.expect("GET VARIABLE", "200 result=1 (x)")
        await ast.ended()
    assert len(door.calls) == 3 and door.rejected == 0
    for i in range(3):
        door.on_ami_hangup(f"3.{i}", 16, None)
    await wait_for(lambda: not door.calls)


@pytest.mark.parametrize("door", [{"handshake_timeout": 0.3}], indirect=True)
async def test_a_silent_client_is_closed_after_the_handshake_timeout(door: AgiDoor) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"agi_network: yes\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def closed_by_the_daemon(reader: asyncio.StreamReader) -> None:
    """Until the daemon closes the connection (EOF, or a reset while data was still unread)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


@pytest.mark.parametrize("line_bytes, error", [
    (8000, "AGI handshake longer than 65536 bytes"),  # long continuation lines: the byte cap
    (1, "more than 200 lines before the blank line"),  # short ones: every line counts
])
async def test_megabytes_of_continuation_lines_are_cut_off_quickly(
        door: AgiDoor, caplog: pytest.LogCaptureFixture, line_bytes: int, error: str) -> None:
    """Lines that continue a value (a caller ID with line breaks) count against the handshake's
    limits, and are joined once: 16 MB of them cost the daemon next to no CPU, and the session
    ends long before its 5 s handshake limit (before: quadratic joining, seconds of CPU)."""
    caplog.set_level(logging.INFO, logger="callrec")
    loop = asyncio.get_running_loop()
    cpu, wall = time.process_time(), loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    line = b"x" * line_bytes + b"\n"
    chunk = line * (1048576 // len(line))

    async def send() -> None:
        writer.write(b"agi_calleridname: Mallory\n")
        try:
            for _ in range(16):  # 16 MB, never a blank line
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # the daemon hung up on us: that is the point

    sender = asyncio.create_task(send())
    await asyncio.wait_for(closed_by_the_daemon(reader), 20)
    writer.close()
    await sender
    assert loop.time() - wall < door.settings.handshake_timeout
    assert time.process_time() - cpu < 2.0  # client and daemon together; generous
    assert door.rejected == 1 and not door.calls
    assert any(error in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("door", [{"handshake_timeout": 0.5}], indirect=True)
async def test_the_handshake_time_limit_holds_over_the_whole_handshake(
        door: AgiDoor, caplog: pytest.LogCaptureFixture) -> None:
    """A peer that keeps sending lines, each in time, is still closed when the handshake as a
    whole runs past agi.handshake_timeout."""
    caplog.set_level(logging.INFO, logger="callrec")
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"agi_network: yes\n")
    closed = asyncio.create_task(closed_by_the_daemon(reader))
    while not closed.done() and loop.time() - started < 5:
        writer.write(b"agi_x: 1\n")
        await asyncio.wait([closed], timeout=0.05)  # the peer's pace: one line every 50 ms
    assert closed.done()
    assert 0.5 <= loop.time() - started < 2.0
    assert any("AGI handshake not complete within 0.5s" in r.getMessage() for r in caplog.records)
    writer.close()


async def test_a_peer_reply_reaches_the_log_escaped(door: AgiDoor, caplog: pytest.LogCaptureFixture) -> None:
    """ESC, CR and NUL in a reply would rewrite a terminal showing the log, or forge log lines."""
    caplog.set_level(logging.INFO, logger="callrec")
    ast = await FakeAsterisk.call(door, env_lines("1.10"))
    await ast.expect("STREAM FILE ", "510 bad\x1b[2J\x1b[31m\rWARNING forged line\x00 end")
    await ast.ended()
    await wait_for(lambda: "1.10" not in door.calls)
    (ended,) = [r.getMessage() for r in caplog.records if "AGI session with" in r.getMessage()]
    assert not any(c in ended for c in "\x1b\r\x00"), ended
    assert "510 bad\\x1b[2J\\x1b[31m\\rWARNING forged line\\x00 end" in ended
    warnings = row(door, "1.10")["warnings"]
    assert not any(c in w for w in warnings for c in "\x1b\r\x00"), warnings


async def test_stopping_hands_a_caller_in_the_window_back(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.8", args=("mode=opt-out",)))
    await ast.expect("STREAM FILE ", "200 result=0 endpos=60000")
    await ast.expect("WAIT FOR DIGIT ")
    closing = asyncio.create_task(door.close())
    # Asterisk ends WAIT FOR DIGIT (result=1) when a line arrives on the AGI socket.
    await ast.expect("GET FULL VARIABLE callrec-interrupt", "200 result=1\n200 result=1 (callrec-interrupt)")
    await ast.expect("SET VARIABLE CALLREC_CALL_ID ", "200 result=1")
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "unavailable"'
    await ast.expect("SET VARIABLE CALLREC_RECORDING ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_POLICY ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_REASON ", "200 result=1")
    await ast.expect("GET VARIABLE", "200 result=1 (1.8)")
    await ast.ended()
    await closing
    assert row(door, "1.8")["consent"] == "unavailable" and not door.service.ami.monitors  # type: ignore[attr-defined]


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("agi, message", [
    ({"listen": "4573"}, "agi.listen: expected host:port"),
    ({"listen": "127.0.0.1:70000"}, "agi.listen: expected host:port"),
    ({"listen": "127.0.0.1:45 73"}, "agi.listen: expected host:port"),
    ({"listen": "a b:4573"}, "agi.listen: expected host:port"),
    ({"max_sessions": 0}, "agi.max_sessions: expected 1-100000"),
    ({"handshake_timeout": 0}, "agi.handshake_timeout: expected above 0 and at most 60 seconds"),
    ({"command_timeout": 600}, "agi.command_timeout: expected above 0 and at most 60 seconds"),
    ({"max_line": 10}, "agi.max_line: expected 1024-1048576 bytes"),
    ({"max_handshake_bytes": 100}, "agi.max_handshake_bytes: expected 4096-4194304 bytes"),
    ({"enabled": "maybe"}, "agi.enabled: expected true or false"),
    ({"port": 4573}, "agi.port: unknown key"),
])
def test_bad_agi_config_names_the_key(agi: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_settings({"agi": agi}, SECRETS)


def test_agi_config_defaults_and_switches() -> None:
    s = parse_settings({}, SECRETS)
    assert (s.agi.listen, s.agi.enabled, s.agi.active) == ("127.0.0.1:4573", True, True)
    assert not parse_settings({"agi": {"enabled": False}}, SECRETS).agi.active
    assert not parse_settings({"agi": {"listen": ""}}, SECRETS).agi.active
    env = parse_settings({}, {**SECRETS, "CALLREC_AGI_LISTEN": "[::1]:4600", "CALLREC_AGI_ENABLED": "yes"})
    assert env.agi.listen == "[::1]:4600" and env.agi.active


def test_ari_can_be_off_when_agi_is_on() -> None:
    s = parse_settings({"asterisk": {"ami_password": "y", "ari_enabled": False}}, {})
    assert not s.asterisk.ari_enabled and s.agi.active  # no ARI password needed
    with pytest.raises(ConfigError, match=r"asterisk\.ari_password: not set"):
        parse_settings({"asterisk": {"ami_password": "y"}}, {})
    with pytest.raises(ConfigError, match=r"asterisk.ari_enabled: false while the FastAGI door is off"):
        parse_settings({"asterisk": {"ami_password": "y", "ari_enabled": False}, "agi": {"enabled": False}}, {})


async def test_a_port_in_use_is_an_error_at_start() -> None:
    s = settings()
    busy = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = busy.sockets[0].getsockname()[1]
    try:
        door = AgiDoor(make_settings(agi={"listen": f"127.0.0.1:{port}"}).agi,
                       CallService(s, PromptCatalog({}), FakeWriter(), FakeAmi()))  # type: ignore[arg-type]
        with pytest.raises(OSError):
            await door.start()
    finally:
        busy.close()


@pytest.mark.parametrize("door", [{"notice": {"max_notice_seconds": 1}}], indirect=True)
async def test_a_prompt_past_its_limit_is_cut_short_and_the_notice_fails(door: AgiDoor) -> None:
    ast = await FakeAsterisk.call(door, env_lines("1.9"))
    await ast.expect("STREAM FILE ")  # and Asterisk keeps playing...
    # ... until the watchdog's line, which replaces STREAM FILE (no reply of its own).
    await ast.expect("GET FULL VARIABLE callrec-interrupt", "200 result=1 (callrec-interrupt)")
    await ast.expect("SET VARIABLE CALLREC_CALL_ID ", "200 result=1")
    assert await ast.expect("SET VARIABLE CALLREC_CONSENT ", "200 result=1") == \
        'SET VARIABLE CALLREC_CONSENT "notice_failed"'
    await ast.expect("SET VARIABLE CALLREC_RECORDING ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_POLICY ", "200 result=1")
    await ast.expect("SET VARIABLE CALLREC_REASON ", "200 result=1")
    await ast.expect("GET VARIABLE", "200 result=1 (1.9)")
    await ast.ended()
    r = row(door, "1.9")
    assert (r["consent"], r["notice_completed"]) == ("notice_failed", False)
    assert any("did not finish in time" in w for w in r["warnings"])
