#!/usr/bin/env python3
"""``callrec serve`` with round-trip counters, for ``make bench`` (never used in production).

    CALLREC_BENCH_COUNTS=/path/counts.json .venv/bin/python benchmarks/counted_serve.py -c callrec.toml serve

Counts, in-process, every ARI REST request (``Ari.request``) and every PostgreSQL round trip the
daemon's asyncpg connections make: each query sent and awaited (``execute``, ``fetch*``; a
transaction's BEGIN and COMMIT are such queries too) and each ``executemany`` (asyncpg pipelines its
rows: one round trip), and every ARI and AMI event read, by kind.  On SIGUSR2 the totals are written
to ``$CALLREC_BENCH_COUNTS`` (JSON); the benchmark reads them before and after a scenario.  The
wrappers cost a function call per request or event.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import wraps
from typing import Any

import asyncpg.connection
from panoramisk.manager import Manager

from callrec.asterisk import ari
from callrec.cli.main import main
from callrec.doors.ari import AriDoor

COUNTS: dict[str, Any] = {"ari_requests": 0, "db_round_trips": 0, "by_query": {}, "events": {}}


def note(key: str, args: tuple[Any, ...]) -> None:
    COUNTS[key] += 1
    if len(args) > 1:  # which request or statement: (self, method, path) or (self, query)
        what = " ".join(str(a) for a in args[1:3]) if key == "ari_requests" else str(args[1])
        what = " ".join(what.split())[:70]
        if key == "ari_requests":
            what = "/".join(part if len(part) < 30 else "{id}" for part in what.split("/"))
        COUNTS["by_query"][what] = COUNTS["by_query"].get(what, 0) + 1


def counting(func: Any, key: str, only_without_args: bool = False) -> Any:
    @wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Connection.execute with arguments goes through _execute (counted there).
        if not only_without_args or len(args) <= 2:
            note(key, args)
        return await func(*args, **kwargs)
    return wrapper


def counting_events(func: Any, source: str, kind: Any) -> Any:
    """Events read, per source and kind (ARI's ``type``, AMI's ``Event``), before the handler."""
    @wraps(func)
    def wrapper(self: Any, event: Any, *args: Any) -> Any:
        key = f"{source} {kind(event)}"
        COUNTS["events"][key] = COUNTS["events"].get(key, 0) + 1
        return func(self, event, *args)
    return wrapper


def dump(signum: int, frame: Any) -> None:
    path = os.environ["CALLREC_BENCH_COUNTS"]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(COUNTS, f)
    os.replace(tmp, path)


ari.Ari.request = counting(ari.Ari.request, "ari_requests")  # type: ignore[method-assign]
conn_cls = asyncpg.connection.Connection
conn_cls.execute = counting(conn_cls.execute, "db_round_trips", only_without_args=True)  # type: ignore[method-assign]
conn_cls._execute = counting(conn_cls._execute, "db_round_trips")  # type: ignore[attr-defined]
conn_cls._executemany = counting(conn_cls._executemany, "db_round_trips")  # type: ignore[attr-defined]
AriDoor.on_event = counting_events(AriDoor.on_event, "ARI", lambda e: e.get("type"))  # type: ignore[method-assign]
Manager.dispatch = counting_events(Manager.dispatch, "AMI", lambda e: e.get("Event"))  # type: ignore[method-assign]
signal.signal(signal.SIGUSR2, dump)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
