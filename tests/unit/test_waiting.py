"""support.waiting.wait_for: returns what the predicate found, fails naming what was awaited."""

from __future__ import annotations

import asyncio

import pytest
from support.waiting import wait_for


async def test_returns_the_first_truthy_value_of_a_plain_or_async_predicate() -> None:
    calls = []

    def plain() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_for(plain, 5, what="three calls", interval=0.001) == 3

    written: list[dict[str, int]] = []
    asyncio.get_running_loop().call_later(0.05, written.append, {"id": 7})  # the "daemon" writes later

    async def row() -> dict[str, int] | None:
        return written[0] if written else None

    assert await wait_for(row, 5, what="the row") == {"id": 7}


async def test_a_time_out_names_what_was_awaited_and_what_was_seen() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the row to show 'recording' "
                                             r"\(last value: 'paused'\)"):
        await wait_for(lambda: None, 0.1, what="the row to show 'recording'",
                       details=lambda: "last value: 'paused'")
    door_calls = {"1.2": object()}
    with pytest.raises(AssertionError, match=r"waiting for lambda: not door_calls"):
        await wait_for(lambda: not door_calls, 0.05)


async def test_a_predicate_may_give_up_early() -> None:
    def exited() -> bool:
        raise AssertionError("callrec serve exited (1)")

    with pytest.raises(AssertionError, match="exited"):
        await wait_for(exited, 5, what="a log line")
