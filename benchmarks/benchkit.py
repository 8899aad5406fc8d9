"""What the benchmarks share: a database of their own and the HTTP API served in the benchmark's process.

    from benchkit import bench_database, api_server

    async with bench_database() as db:                    # db.name, db.dsn, db.existed
        ...fill...
        async with api_server(db.dsn) as base:            # "http://127.0.0.1:PORT"
            ...time requests to base + "/api/v1/..."...

The database is made on the PostgreSQL that tools/testdb.py finds (or starts) and dropped at the end, even after an
error, unless ``drop=False`` keeps it (by name, to measure again).
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO / "tools", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import testdb  # noqa: E402

from callrec.config.settings import parse_settings  # noqa: E402
from callrec.web.server import HttpServer  # noqa: E402


@dataclass(frozen=True)
class BenchDatabase:
    name: str
    dsn: str
    existed: bool  # only with ``keep``: it was filled by an earlier run


@asynccontextmanager
async def bench_database(name: str | None = None, *, drop: bool = True,
                         must_exist: bool = False) -> AsyncIterator[BenchDatabase]:
    """``name``: a database to use, made if missing unless ``must_exist`` (default: a new
    ``callrec_bench_<random>``); ``drop``: drop it at the end (False keeps it to measure again)."""
    admin_dsn = testdb.ensure_postgres()
    name = name or f"callrec_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        existed = bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        if must_exist and not existed:
            raise SystemExit(f"database {name}: not found (fill one first and keep it)")
        if not existed:
            await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield BenchDatabase(name, urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}")), existed)
        finally:
            if drop:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def api_server(dsn: str, **sections: dict[str, Any]) -> AsyncIterator[str]:
    """The API as `callrec serve --api-only` runs it, on a free local port; yields its base URL.  ``sections``
    add or override settings (e.g. ``search={...}``)."""
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp:
        raw: dict[str, dict[str, Any]] = {
            "asterisk": {"ari_password": "x", "ami_password": "y"}, "database": {"dsn": dsn},
            "recordings": {"dir": "/var/spool/x", "local_dir": tmp}, "http": {"listen": "127.0.0.1:0"}}
        for key, values in sections.items():
            raw[key] = {**raw.get(key, {}), **values}
        server = HttpServer(parse_settings(raw, {}))
        await server.start()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            await server.stop()
