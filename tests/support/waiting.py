"""One way to wait for a condition that has no event to wait on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_for(predicate: Callable[[], Awaitable[T]], timeout: float = ..., *, what: str | None = ...,
                   interval: float = ..., details: Callable[[], str] | None = ...) -> T: ...
@overload
async def wait_for(predicate: Callable[[], T], timeout: float = ..., *, what: str | None = ...,
                   interval: float = ..., details: Callable[[], str] | None = ...) -> T: ...
async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, *, what: str | None = None,
                   interval: float = 0.05, details: Callable[[], str] | None = None) -> Any:
    """Call ``predicate`` (plain or async) until it returns something truthy, and return that.

    Only for state nothing announces: a row the daemon writes in the background, a file Asterisk
    writes on its own thread, a log line, the door's state after a socket reply.  Anything with an
    event (the tester's events, a Condition) waits on the event instead.  A time-out fails with
    ``what`` (by default the predicate's source line) and the last value seen (or ``details()``,
    e.g. the tail of a log).  The predicate may raise to give up early (a process that exited).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            seen = details() if details is not None else f"last value: {value!r}"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or describe(predicate)} ({seen})")
        await asyncio.sleep(interval)  # the poll interval: there is no event to wait on


def describe(predicate: Callable[..., object]) -> str:
    """The predicate as written (``lambda: not door.calls``), or its name."""
    try:
        source = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
    if predicate.__name__ == "<lambda>" and "lambda" in source:
        source = source[source.index("lambda"):]
    return " ".join(source.split())
