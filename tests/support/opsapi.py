"""Test bench of the ops API: a server on a free port over a fresh database, users and tokens of
every role, call rows written straight into the database, and real WAV files for their audio."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import soundfile

from callrec.access import ROLES
from callrec.asterisk.ami import Ami
from callrec.config.settings import Settings
from callrec.recording.control import RecordingControl
from callrec.store import users
from callrec.web.server import HttpServer, api_pool_settings
from support.settings import local_recordings as local_recordings_keys
from support.settings import make_settings

PASSWORD = "correct horse battery"
AGENT_EXT = "201"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def api_settings(dsn: str, local_recordings: Path, sections: dict[str, Any] | None = None, **http: Any) -> Settings:
    """The ops API's settings: on a free port, recordings in ``local_recordings`` (no Asterisk);
    ``sections``: more config sections (e.g. ``{"alerts": {...}}``)."""
    return make_settings(None, dsn, recordings=local_recordings_keys(local_recordings),
                         http={"listen": "127.0.0.1:0", **http}, **(sections or {}))


def write_wav(path: Path, seconds: float = 1.0, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="PCM_16")


async def insert_call(conn: asyncpg.Connection, rec_dir: Path | None, *, started: datetime, agent: str | None,
                      caller: str = "+4930123456", called: str = "100", caller_name: str = "Alice",
                      recorded: bool = True, confidential: bool = False, audio_deleted: bool = False,
                      parties: list[str] | None = None, seconds: float = 1.0, consent: str = "implied",
                      direction: str = "inbound") -> str:
    call_id = str(uuid.uuid4())
    rel = f"{started:%Y/%m/%d}/{call_id}.wav" if recorded else None
    size = None
    if recorded and rec_dir is not None and not audio_deleted:
        write_wav(rec_dir / rel, seconds)
        size = (rec_dir / rel).stat().st_size
    await conn.execute(
        """INSERT INTO calls (id, door, uniqueid, channel, caller_number, caller_name, called_number, direction,
               consent_mode, state, consent, started_at, ended_at, finalized_at, recording_status, recording_path,
               recording_bytes, recording_duration, recording_sha256, agent, confidential, audio_deleted_at,
               audio_deleted_by, notice_prompt, notice_completed)
           VALUES ($1, 'ari', $2, 'PJSIP/x-1', $3, $4, $5, $6, 'notice', 'ended', $7, $8, $9, $9, $10, $11, $12,
                   $13, $14, $15, $16, $17, $18, 'callrec/en/notice', true)""",
        uuid.UUID(call_id), f"{started.timestamp():.0f}.{call_id[:4]}", caller, caller_name, called, direction,
        consent, started, started + timedelta(seconds=seconds + 5), "ready" if recorded else "none", rel, size,
        seconds if recorded else None, "ab" * 32 if recorded else None, agent, confidential,
        started + timedelta(hours=1) if audio_deleted else None, "retention" if audio_deleted else None)
    for seq, number in enumerate(parties or []):
        await conn.execute("INSERT INTO call_parties (call_id, seq, number, name, role, joined_at) "
                           "VALUES ($1, $2, $3, 'Bob', 'agent', $4)", uuid.UUID(call_id), seq, number, started)
    return call_id


@dataclass
class Bench:
    base: str
    dsn: str
    rec_dir: Path
    settings: Settings
    pool: asyncpg.Pool
    server: HttpServer
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer secret
    calls: dict[str, str] = field(default_factory=dict)  # label -> call id

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


async def start_bench(dsn: str, tmp_path: Path, sections: dict[str, Any] | None = None, **http: Any) -> Bench:
    rec_dir = tmp_path / "recordings"
    rec_dir.mkdir()
    settings = api_settings(dsn, rec_dir, sections, **http)
    # The API's pool settings, as the daemon's HttpServer opens its own pool with them.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6, server_settings=api_pool_settings(settings))
    # Pause/resume as in the daemon; AMI is never reached: none of these calls is being recorded.
    control = RecordingControl(Ami("127.0.0.1", 9, "nobody", "x"), pool)
    bench = Bench("", dsn, rec_dir, settings, pool, HttpServer(settings, pool, recording_control=control))
    async with pool.acquire() as conn:
        for role in ROLES:
            ext = AGENT_EXT if role == "agent" else None
            await users.add_user(conn, f"{role}1", role, PASSWORD, ext)
            _, bench.tokens[role] = await users.create_token(conn, f"{role}-token", user=f"{role}1")
        c = bench.calls
        c["mine"] = await insert_call(conn, rec_dir, started=T0, agent=AGENT_EXT, caller="+4930111")
        c["other"] = await insert_call(conn, rec_dir, started=T0 + timedelta(minutes=1), agent="202",
                                       caller="+4930222", caller_name="Carol")
        c["party"] = await insert_call(conn, rec_dir, started=T0 + timedelta(minutes=2), agent="203",
                                       parties=["203", AGENT_EXT], caller="+4930333")
        c["confidential"] = await insert_call(conn, rec_dir, started=T0 + timedelta(minutes=3), agent=AGENT_EXT,
                                              confidential=True, caller="+4930444", caller_name="Secret")
        c["unrecorded"] = await insert_call(conn, rec_dir, started=T0 + timedelta(minutes=4), agent="202",
                                            recorded=False, consent="declined", caller="+4930555")
        c["deleted"] = await insert_call(conn, rec_dir, started=T0 + timedelta(minutes=5), agent=AGENT_EXT,
                                         audio_deleted=True, caller="+4930666")
    await bench.server.start()
    bench.base = f"http://127.0.0.1:{bench.server.port}"
    return bench


@contextlib.asynccontextmanager
async def running_bench(dsn: str, tmp_path: Path, sections: dict[str, Any] | None = None,
                        **http: Any) -> AsyncIterator[Bench]:
    """``start_bench`` (``http``: keys of the ``[http]`` section; ``sections``: other sections), stopped
    (server, then pool) on the way out."""
    b = await start_bench(dsn, tmp_path, sections, **http)
    try:
        yield b
    finally:
        await b.server.stop()
        await b.pool.close()


async def call(http: aiohttp.ClientSession, bench: Bench, method: str, path: str, role: str | None = None,
               **kw: object) -> tuple[int, bytes, aiohttp.ClientResponse]:
    """One request to the bench, as ``role`` (its bearer token) or with the session's cookies."""
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if role is not None:
        headers.update(bench.auth(role))
    async with http.request(method, bench.base + path, headers=headers, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.read(), resp


async def audit_rows(bench: Bench, **where: object) -> list[asyncpg.Record]:
    """The bench's audit entries (``column=value`` filters), oldest first."""
    sql = "SELECT * FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ${i + 1}" for i, k in enumerate(where))
    return await bench.pool.fetch(sql + " ORDER BY id", *where.values())


def visible(role: str, bench: Bench) -> set[str]:
    """Which seeded calls a role sees (search, counts, export, detail)."""
    c = bench.calls
    everything = set(c.values())
    if role in ("admin", "security"):
        return everything
    if role in ("supervisor", "auditor"):
        return everything - {c["confidential"]}
    return {c["mine"], c["party"], c["deleted"]}
