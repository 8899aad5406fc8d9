"""Several Asterisk nodes on one call log (issue 12, item 1): two sandbox Asterisks, a `callrec serve` beside
each, one PostgreSQL.  A node killed mid-call (SIGKILL) and started again follows up its own calls only; the
other node's calls in flight are untouched; `callrec nodes retire` closes out a node gone for good."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from caller import Tester
from sandbox import SandboxInfo, callrec_config
from support.cli import run_cli
from support.daemon_proc import CALLREC, wait_finalized, wait_row
from support.waiting import wait_for


@pytest.fixture
async def tester2(asterisk2: SandboxInfo) -> AsyncIterator[Tester]:
    t = Tester(asterisk2.ari_url, asterisk2.tester_ari_user, asterisk2.tester_ari_password)
    try:
        await t.start()
        yield t
    finally:
        await t.close()


def node_config(path: Path, info: SandboxInfo, database: str, name: str) -> Path:
    path.write_text(callrec_config(info, database, asterisk={"request_timeout": 2}, notice={"decision_window": 1},
                                   node={"name": name, "heartbeat_interval": 5}))
    return path


class Node:
    """One `callrec serve` process with its config and log."""

    def __init__(self, tmp_path: Path, info: SandboxInfo, database: str, name: str) -> None:
        self.name, self.tmp_path = name, tmp_path
        self.config = node_config(tmp_path / f"{name}.toml", info, database, name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.tmp_path / f"{self.name}-{self.runs}.log", "w")
        self.proc = subprocess.Popen([*CALLREC, "-c", str(self.config), "serve"], stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.tmp_path / f"{self.name}-{self.runs}.log").read_text()

    async def registered(self, tester: Tester) -> None:
        """Until the node's ARI app is registered on its Asterisk (two daemons starting at once on a busy
        machine take a while); fails at once, with the log, if the process exited."""
        async def registered() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            apps = await tester.ari.request("GET", "/applications")
            return any(a.get("name") == "callrec" for a in apps)

        await wait_for(registered, 60, what=f"{self.name}'s ARI application to register", interval=0.1,
                       details=self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


async def test_a_node_killed_mid_call_recovers_only_its_own_calls(
        tmp_path: Path, asterisk: SandboxInfo, asterisk2: SandboxInfo, database: str, tester: Tester,
        tester2: Tester) -> None:
    a = Node(tmp_path, asterisk, database, "pbx-a")
    b = Node(tmp_path, asterisk2, database, "pbx-b")
    a.start()
    b.start()
    conn = await asyncpg.connect(database)
    try:
        await a.registered(tester)
        await b.registered(tester2)
        # Calls on both nodes: a1 ends while its node is down, a2 goes on across the restart; b1 goes on.
        a1, a2, b1 = await tester.place_call(), await tester.place_call(), await tester2.place_call()
        for call in (a1, a2, b1):
            assert (await call.handed_back())["recording"]
        for call in (a1, a2, b1):
            await call.spoken(await call.speak())
        for call in (a1, a2, b1):
            await wait_row(database, call.callee_id)
        nodes = {r["uniqueid"]: r["node"] for r in await conn.fetch("SELECT uniqueid, node FROM calls")}
        assert nodes == {a1.callee_id: "pbx-a", a2.callee_id: "pbx-a", b1.callee_id: "pbx-b"}

        a.kill()
        await wait_for(lambda: conn.fetchval("SELECT recording_status = 'recording' FROM calls WHERE uniqueid = $1",
                                             b1.callee_id), 10, what="b1 recording on node B")
        before_b1 = dict(await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", b1.callee_id))
        await a1.hang_up()
        await tester.log.wait_for(lambda e: e.get("type") == "ChannelDestroyed"
                                  and e["channel"]["id"] == a1.callee_id, 10, "a1's unseen hang-up")

        a.start()
        await a.registered(tester)
        await wait_finalized(database, a1.callee_id, timeout=60)
        await wait_for(lambda: "following them up" in a.log(), 10, what="node A's recovery log line",
                       details=a.log)
        # Node A said how many of *its* calls it follows up: two (a1 and a2), not B's.
        assert "2 call(s) from an earlier run are unfinished" in a.log(), a.log()
        after_b1 = dict(await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", b1.callee_id))
        for column in ("state", "finalized_at", "ended_at", "warnings", "recording_status", "node", "consent"):
            assert after_b1[column] == before_b1[column], column
        # a2 is followed again by A; b1 still by B: both end normally when they hang up.
        await a2.spoken(await a2.speak())
        await b1.spoken(await b1.speak())
        await a2.hang_up()
        await b1.hang_up()
        await wait_finalized(database, a2.callee_id)
        await wait_finalized(database, b1.callee_id)
    finally:
        codes = (a.stop(), b.stop())
        rows = {r["uniqueid"]: r for r in await conn.fetch("SELECT * FROM calls")}
        await conn.close()
    assert codes == (0, 0)
    r = rows[a1.callee_id]
    assert (r["state"], r["recording_status"], r["node"]) == ("ended", "ready", "pbx-a")
    assert any("ended while callrec was down" in w for w in r["warnings"])
    r = rows[a2.callee_id]
    assert (r["state"], r["recording_status"]) == ("ended", "ready")
    assert any("followed again" in w for w in r["warnings"])
    r = rows[b1.callee_id]
    assert (r["state"], r["recording_status"], r["node"]) == ("ended", "ready", "pbx-b")
    assert r["warnings"] == [], r["warnings"]  # B never lost it, A never touched it
    assert r["hangup_cause"] is not None


async def test_nodes_list_and_retire_close_out_a_dead_node(
        tmp_path: Path, asterisk: SandboxInfo, asterisk2: SandboxInfo, database: str, tester: Tester,
        tester2: Tester) -> None:
    a = Node(tmp_path, asterisk, database, "pbx-a")
    b = Node(tmp_path, asterisk2, database, "pbx-b")
    a.start()
    b.start()
    conn = await asyncpg.connect(database)
    calls = []
    try:
        await a.registered(tester)
        await b.registered(tester2)
        a1, b1 = await tester.place_call(), await tester2.place_call()
        calls = [a1, b1]
        for call in (a1, b1):
            assert (await call.handed_back())["recording"]
            await wait_row(database, call.callee_id)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 2 FROM nodes"), 10, what="both heartbeats")
        listed = run_cli(b.config, "nodes", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        by_name = {n["name"]: n for n in map(json.loads, listed.stdout.splitlines())}
        assert set(by_name) == {"pbx-a", "pbx-b"}
        assert by_name["pbx-b"]["open_calls"] == 1 and by_name["pbx-b"]["kind"] == "pbx"
        assert by_name["pbx-b"]["seen_s_ago"] < 30 and by_name["pbx-b"]["version"]
        table = run_cli(a.config, "nodes", "list")
        assert table.returncode == 0 and "pbx-a" in table.stdout and "pbx-b" in table.stdout

        b.kill()  # node B is gone for good (its Asterisk too, as far as the call log knows)
        refused = run_cli(a.config, "nodes", "retire", "pbx-b")
        assert refused.returncode == 1
        assert "seen" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert await conn.fetchval("SELECT finalized_at FROM calls WHERE uniqueid = $1", b1.callee_id) is None
        unknown = run_cli(a.config, "nodes", "retire", "pbx-z", "--force")
        assert unknown.returncode == 1 and "no node 'pbx-z'" in unknown.stderr
        bad = run_cli(a.config, "nodes", "retire", "pbx b")
        assert bad.returncode == 2

        done = run_cli(a.config, "nodes", "retire", "pbx-b", "--force", "--json")
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        b1_id = str(await conn.fetchval("SELECT id FROM calls WHERE uniqueid = $1", b1.callee_id))
        assert outcome == {"node": "pbx-b", "calls_closed": 1, "call_ids": [b1_id]}
        r = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", b1.callee_id)
        assert r["finalized_at"] is not None and r["state"] == "ended"
        assert r["consent"] == "implied"  # what was known stays; nothing is invented
        assert r["recording_status"] == "unclosed" and "retired" in r["recording_error"]
        assert any("node pbx-b was retired" in w for w in r["warnings"])
        # Node A's call is untouched.
        assert await conn.fetchval("SELECT finalized_at FROM calls WHERE uniqueid = $1", a1.callee_id) is None
        entry = await conn.fetchrow("SELECT * FROM audit_log WHERE action = 'node_retire'")
        details = json.loads(entry["details"])
        assert entry["actor"].startswith("cli:") and details["node"] == "pbx-b" and details["calls_closed"] == 1
        assert details["forced"] is True
        assert await conn.fetchval("SELECT retired_at IS NOT NULL FROM nodes WHERE name = 'pbx-b'")
        again = run_cli(a.config, "nodes", "list", "--json")
        by_name = {n["name"]: n for n in map(json.loads, again.stdout.splitlines())}
        assert by_name["pbx-b"]["open_calls"] == 0 and by_name["pbx-b"]["retired_at"]
        await a1.hang_up()
        await wait_finalized(database, a1.callee_id, timeout=60)
    finally:
        for call in calls:
            await call.hang_up()
        codes = a.stop()
        await conn.close()
    assert codes == 0
