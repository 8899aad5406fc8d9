"""Test helpers for the post-recording hooks: a webhook receiver and a command probe.

``Receiver`` is a real aiohttp server on 127.0.0.1.  ``PROBE`` is a hook command (run with the
test's Python) that appends what it got (argv, stdin, a few environment variables) as one JSON
line to the file named by its last argument, and fails while ``<out>.fail`` holds a number > 0.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from callrec.hooks import Attempt

PROBE = r'''
import json, os, sys
out = sys.argv[-1]
fail_file = out + ".fail"
stdin = sys.stdin.read()
with open(out, "a") as fh:
    fh.write(json.dumps({"argv": sys.argv[1:], "stdin": json.loads(stdin),
                         "env": {k: v for k, v in os.environ.items() if k.startswith(("CALLREC_", "PG"))}}) + "\n")
if os.path.exists(fail_file):
    left = int(open(fail_file).read() or 0)
    if left > 0:
        open(fail_file, "w").write(str(left - 1))
        print("probe: told to fail", file=sys.stderr)
        sys.exit(3)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver: records each POST; answers ``statuses`` in turn (then 200)."""

    def __init__(self, port: int | None = None, statuses: list[int] | None = None) -> None:
        self.port = port or free_port()
        self.statuses = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold: asyncio.Event | None = None  # set: requests wait on it before answering
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._changed.notify_all()
        try:
            if self.hold is not None:
                await self.hold.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            async with self._changed:
                self.requests.append({"headers": dict(request.headers), "body": body, "json": json.loads(body),
                                      "status": status, "query": request.query_string})
                self._changed.notify_all()
            return web.Response(status=status, text="ok" if status < 300 else "not now")
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def wait_until(self, check: Callable[[Receiver], bool], timeout: float = 15.0, what: str = "") -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: check(self))

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"receiver: timed out waiting for {what or check}") from None


class Attempts:
    """Collects HookRunner attempts (its on_attempt observer) and waits on them."""

    def __init__(self) -> None:
        self.items: list[Attempt] = []
        self._changed = asyncio.Event()

    def __call__(self, attempt: Attempt) -> None:
        self.items.append(attempt)
        self._changed.set()

    async def wait(self, check: Callable[[list[Attempt]], bool], timeout: float = 20.0, what: str = "") -> None:
        async def _wait() -> None:
            while not check(self.items):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"hook attempts: timed out waiting for {what}; got {self.items}") from None
