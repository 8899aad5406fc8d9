"""Availability of the ops API (issue 10, items 8 and 12): no principal holds every export slot,
a stalled reader is dropped and frees its slot and database connection, slow request headers
are cut off."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.opsapi import AGENT_EXT, T0, Bench, call, running_bench
from support.waiting import wait_for

WRITE_TIMEOUT = 1.5
READ_TIMEOUT = 1.0
EXPORT_ROWS = 30_000  # JSON of these is far more than the kernel's socket buffers hold


@pytest.fixture
async def bench(database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Bench]:
    caplog.set_level(logging.DEBUG)
    async with running_bench(database, tmp_path, write_timeout=WRITE_TIMEOUT,
                             read_timeout=READ_TIMEOUT) as b:
        yield b


async def add_agent_calls(bench: Bench, n: int) -> None:
    await bench.pool.execute(
        """INSERT INTO calls (id, door, uniqueid, channel, caller_number, caller_name, called_number, direction,
               consent_mode, state, consent, started_at, ended_at, finalized_at, recording_status, agent,
               notice_prompt, notice_completed)
           SELECT gen_random_uuid(), 'ari', 'bulk.' || i, 'PJSIP/x-1', '+4930' || i, 'Bulk caller ' || i, '100',
                  'inbound', 'notice', 'ended', 'implied', $1::timestamptz + i * interval '1 second',
                  $1::timestamptz + i * interval '1 second' + interval '5 seconds',
                  $1::timestamptz + i * interval '1 second' + interval '5 seconds', 'none', $2,
                  'callrec/en/notice', true
           FROM generate_series(1, $3) AS i""", T0, AGENT_EXT, n)


async def stalled_export(bench: Bench, role: str) -> socket.socket:
    """An export request from a client that never reads (a tiny receive buffer, nothing read)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", bench.server.port))
    await loop.sock_sendall(sock, (f"GET /api/v1/calls/export?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   f"Connection: close\r\nAuthorization: Bearer {bench.tokens[role]}\r\n\r\n").encode())
    return sock


async def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        try:
            data = await loop.sock_recv(sock, 65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out)


async def api_export_open(conn: asyncpg.Connection) -> int:
    """API connections holding a stalled export: a COPY blocked on its reader (or a transaction left idle)."""
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'callrec-api' AND (state = 'idle in transaction' "
        "OR (state = 'active' AND query LIKE 'COPY %'))")


async def test_a_stalled_agent_holds_one_slot_and_is_dropped(bench: Bench, http: aiohttp.ClientSession,
                                                             conn: asyncpg.Connection,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    await add_agent_calls(bench, EXPORT_ROWS)
    # The API's connections end a transaction left idle (a backstop to the write timeout).
    async with bench.pool.acquire() as c:
        assert await c.fetchval("SHOW idle_in_transaction_session_timeout") == "11500ms"
    stalled = await stalled_export(bench, "agent")
    try:
        # The export stalls on the unread socket with its transaction open.
        await wait_for(lambda: api_export_open(conn), 20, what="the agent's export to stall")
        # A second export by the same agent is refused at once: one export per principal.
        second = await stalled_export(bench, "agent")
        try:
            answer = await asyncio.wait_for(read_to_end(second), 10)
        finally:
            second.close()
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert b"you already have an export running; wait for it to finish" in answer
        # An admin's export still runs at once (the other global slot), and completes.
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv", "admin")
        assert st == 200
        assert body.count(b"\n") == EXPORT_ROWS + 6 + 1  # the bench's six calls, the header line
        # After the write timeout the stalled reader is dropped: its transaction and slot are gone.
        await wait_for(lambda: any("took no data for 1.5 s; dropped" in r.getMessage() for r in caplog.records),
                       WRITE_TIMEOUT + 15, what="the stalled reader to be dropped")
        await wait_for(lambda: _no_idle(conn), 5, what="the stalled export's transaction to end")
        received = await asyncio.wait_for(read_to_end(stalled), 30)
        assert received.startswith(b"HTTP/1.1 200")
        assert not received.rstrip().endswith(b"0\r\n\r\n")  # cut off: no end of the chunked body
    finally:
        stalled.close()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # The agent's slot is free again.
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv", "agent")
    assert st == 200 and body.count(b"\n") > EXPORT_ROWS


async def _no_idle(conn: asyncpg.Connection) -> bool:
    return await api_export_open(conn) == 0


# --- item 12: read timeouts for request headers and bodies ------------------------------------------

async def test_slowloris_headers_are_dropped(bench: Bench) -> None:
    """Headers sent one byte at a time never complete a request: the connection is closed
    READ_TIMEOUT after it opened, however steadily the bytes come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bench.server.port)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    request = (b"GET /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + b"".join(f"X-Slow-{i}: {'a' * 20}\r\n".encode() for i in range(1000)))

    async def trickle() -> None:
        for i in range(len(request)):
            writer.write(request[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0.02)  # the attacker's pace: a byte every 20 ms

    sender = asyncio.create_task(trickle())
    try:
        got = await asyncio.wait_for(reader.read(), READ_TIMEOUT + 10)  # until the server closes
        assert not sender.done()  # the client was still sending its headers
    finally:
        sender.cancel()
        writer.close()
    assert got == b""  # no response: the request never completed
    assert READ_TIMEOUT * 0.9 <= loop.time() - opened < READ_TIMEOUT + 5


async def test_a_stalled_body_is_a_408_and_closed(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bench.server.port)
    writer.write(b"POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"user\": \"adm")
    await writer.drain()
    try:
        got = await asyncio.wait_for(reader.read(), READ_TIMEOUT + 10)  # the 408, then the server closes
    finally:
        writer.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'{"error": "request body not received within 1 s"}' in got
    assert any("did not arrive within 1 s; dropped" in r.getMessage() for r in caplog.records)
