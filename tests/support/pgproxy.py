"""A TCP proxy in front of PostgreSQL that a test can take down and bring back: a real outage for
the daemon (its connections are cut, new ones refused) without stopping the shared server."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class PgProxy:
    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self._dsn = parts
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def dsn(self) -> str:
        """The database's DSN through this proxy."""
        netloc = self._dsn.netloc.rpartition("@")
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(self._dsn._replace(netloc=f"{netloc[0]}@{host}" if netloc[1] else host))

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """The database is gone: the listening socket closes and every open connection is cut."""
        assert self._server is not None
        self._server.close()
        for w in list(self._links):
            w.transport.abort()
        self._links.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.difference_update((writer, up_writer))
