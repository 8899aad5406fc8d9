"""Recording policies and post-recording hooks end to end: real Asterisk 22 calls, real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from caller import Finished, PlacedCall, Tester
from sandbox import SandboxInfo
from support.daemon_proc import call_row as row
from support.daemon_proc import running_daemon
from support.hookprobe import PROBE, Attempts, Receiver
from support.settings import make_settings

from callrec.app import Daemon
from callrec.config.settings import Settings

CONTEXT = "callrec-test-policy"
RULES = [
    {"name": "vip-force", "caller": "5550001", "record": "force"},
    {"name": "support-yes", "did": "201", "record": "yes"},
    {"name": "lobby-dontcare", "did": "202", "record": "dontcare"},
    {"name": "internal-no", "did": "203", "record": "no"},
    {"name": "partner-yes", "caller": "5550005", "record": "yes"},
    {"name": "legal-never", "queue": "legal", "record": "never"},
    {"name": "qa-sample", "did": "3*", "record": "yes", "sample_percent": 50},
]


async def place(tester: Tester, exten: str, caller: str, args: str = "") -> PlacedCall:
    """A call into the policy test context (the tester's own helper dials callrec-test-in)."""
    caller_leg, callee_leg = f"t-{uuid.uuid4()}", f"c-{uuid.uuid4()}"
    await tester.ari.originate(f"Local/{exten}@{CONTEXT}/n", app=tester.app, caller_id=f'"Policy" <{caller}>',
                               channel_id=caller_leg, other_channel_id=callee_leg,
                               variables={"_CALLREC_TEST_LANG": "en", "_CALLREC_TEST_ARGS": args})
    call = PlacedCall(caller_leg, callee_leg, tester)
    tester.calls.append(call)
    return call


def notices_played(tester: Tester, call: PlacedCall) -> int:
    return sum(1 for e in tester.log.events if e.get("type") == "PlaybackStarted"
               and e["playback"].get("target_uri") == f"channel:{call.callee_id}")


running = running_daemon


def policy_settings(asterisk: SandboxInfo, database: str, **more: Any) -> Settings:
    return make_settings(asterisk, database, policy={"mode": "opt-out", "sample_seed": 1128, "rules": RULES},
                         **more)


async def finish(daemon: Daemon, finished: Finished, call: PlacedCall, dsn: str) -> asyncpg.Record:
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    return await row(dsn, call.callee_id)


async def test_each_policy_word_through_a_real_call(asterisk: SandboxInfo, database: str, tester: Tester,
                                                   finished: Finished) -> None:
    async with running(policy_settings(asterisk, database), finished) as daemon:
        force = await place(tester, "100", "5550001")  # force meets opt-out: the 9 does not count
        yes = await place(tester, "201", "5551000")
        dontcare = await place(tester, "202", "5551000")  # nobody decides: policy.record = yes
        no = await place(tester, "203", "5551000")
        never = await place(tester, "204", "5550005", args="queue=legal")  # caller says yes; never wins

        await force.notice_started()
        await force.press("9")
        backs = {name: await call.handed_back() for name, call in
                 (("no", no), ("never", never), ("force", force), ("yes", yes), ("dontcare", dontcare))}
        for name, call in (("no", no), ("never", never)):
            assert notices_played(tester, call) == 0, f"{name}: a call that is not recorded hears no notice"
            assert backs[name]["consent"] == "not_asked" and backs[name]["recording"] == ""
        assert backs["no"]["policy"] == "no" and backs["no"]["reason"] == "no: rule internal-no (callee side)"
        assert backs["never"]["policy"] == "never"
        assert backs["never"]["reason"] == "never: rule legal-never (callee side) over yes"
        for name in ("force", "yes", "dontcare"):
            call = {"force": force, "yes": yes, "dontcare": dontcare}[name]
            assert notices_played(tester, call) == 1
            assert backs[name]["consent"] == "implied" and backs[name]["recording"].endswith(".wav")
            assert backs[name]["policy"] == ("force" if name == "force" else "yes")
        assert backs["force"]["reason"] == "force: rule vip-force (caller side)"
        assert backs["dontcare"]["reason"] == "yes: policy.record (no rule decided)"
        for call in (force, yes, dontcare):
            await call.spoken(await call.speak())

        rows = {name: await finish(daemon, finished, call, database) for name, call in
                (("force", force), ("yes", yes), ("dontcare", dontcare), ("no", no), ("never", never))}
    f = rows["force"]
    assert (f["consent_mode"], f["consent"], f["record_policy"], f["policy_rule"]) == (
        "notice", "implied", "force", "vip-force")
    assert "9" in f["keys_pressed"] and f["consent_key"] is None and f["notice_completed"] is True
    y = rows["yes"]
    assert (y["consent_mode"], y["consent"], y["record_policy"], y["policy_rule"]) == (
        "opt-out", "implied", "yes", "support-yes")
    d = rows["dontcare"]
    assert (d["record_policy"], d["policy_rule"], d["policy_reason"]) == (
        "yes", "lobby-dontcare", "yes: policy.record (no rule decided)")
    for name in ("force", "yes", "dontcare"):
        r = rows[name]
        assert r["recording_status"] == "ready" and r["sampled"] is None, name
        assert (Path(asterisk.local_recordings_dir) / r["recording_path"]).exists()
    for name, rule in (("no", "internal-no"), ("never", "legal-never")):
        r = rows[name]
        assert (r["consent"], r["record_policy"], r["policy_rule"], r["recording_status"]) == (
            "not_asked", name, rule, "none")
        assert r["notice_prompt"] is None and r["notice_started_at"] is None and r["recording_path"] is None
        assert r["policy_reason"] == backs[name]["reason"]
        assert r["state"] == "ended" and r["finalized_at"] is not None
        assert not list(Path(asterisk.local_recordings_dir).rglob(f"{r['id']}*"))


async def test_sampling_over_a_batch_of_real_calls(asterisk: SandboxInfo, database: str, tester: Tester,
                                                   finished: Finished) -> None:
    batch = 8
    # The daemon draws once per call that "yes" would record, in the order the calls arrive; the
    # number kept depends only on the seed, not on that order.
    draws = random.Random(1128)
    expected = sum(draws.random() * 100 < 50 for _ in range(batch))
    assert 0 < expected < batch, "pick a seed that keeps some calls and drops others"
    async with running(policy_settings(asterisk, database, notice={"decision_window": 0.5}), finished) as daemon:
        calls = [await place(tester, f"30{i}", "5551000") for i in range(batch)]
        backs = await asyncio.gather(*(c.handed_back() for c in calls))
        for call in calls:
            await call.hang_up()
        await finished.wait_count(batch)
        assert daemon.writer is not None and await daemon.writer.flush()
        rows = [await row(database, c.callee_id) for c in calls]
    kept = [r for r in rows if r["sampled"]]
    dropped = [r for r in rows if r["sampled"] is False]
    assert (len(kept), len(dropped)) == (expected, batch - expected)
    for back, call, r in zip(backs, calls, rows, strict=True):
        assert r["policy_rule"] == "qa-sample" and r["record_policy"] == "yes"
        if r["sampled"]:
            assert back["consent"] == "implied" and back["recording"] and notices_played(tester, call) == 1
            assert r["recording_status"] in ("ready", "empty")  # hung up right away: maybe no audio yet
            assert back["reason"] == "yes: rule qa-sample (callee side); sampled in at 50%"
        else:
            assert back["consent"] == "not_asked" and back["recording"] == "" and notices_played(tester, call) == 0
            assert r["recording_status"] == "none" and r["consent"] == "not_asked"
            assert back["reason"] == r["policy_reason"] == "yes: rule qa-sample (callee side); sampled out at 50%"


async def test_hooks_run_once_per_finished_recording(asterisk: SandboxInfo, database: str, tester: Tester,
                                                     finished: Finished, tmp_path: Path) -> None:
    receiver = Receiver()  # down at first: the first delivery is refused and retried
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = tmp_path / "command.jsonl"
    hooks = {"webhook_url": receiver.url, "webhook_auth": "Bearer e2e-secret",
             "command": [sys.executable, str(script), "{call_id}", "{path}", "{sha256}", str(out)],
             "retry_initial": 0.3, "retry_max": 1.0}
    attempts = Attempts()
    settings = make_settings(asterisk, database, hooks=hooks,
                             policy={"rules": [{"name": "quiet", "did": "203", "record": "never"}]})
    try:
        async with running(settings, finished) as daemon:
            assert daemon.hooks is not None
            daemon.hooks.on_attempt.append(attempts)
            recorded = [await place(tester, "100", "5551000"), await place(tester, "101", "5551001")]
            quiet = await place(tester, "203", "5551002")
            for call in recorded:
                await call.handed_back()
                await call.spoken(await call.speak())
            assert (await quiet.handed_back())["consent"] == "not_asked"
            for call in (*recorded, quiet):
                await call.hang_up()
            await finished.wait_count(3)
            await attempts.wait(lambda a: any(x.hook == "webhook" and not x.ok for x in a),
                                what="a refused webhook delivery")
            await receiver.start()
            await attempts.wait(lambda a: sum(x.ok for x in a) == 4, timeout=30,
                                what="two webhooks and two commands")
            assert daemon.writer is not None and await daemon.writer.flush()
            rows = {c.callee_id: await row(database, c.callee_id) for c in (*recorded, quiet)}
            conn = await asyncpg.connect(database)
            try:
                jobs = await conn.fetch("SELECT call_id, hook, state, attempts FROM hook_jobs ORDER BY id")
            finally:
                await conn.close()
    finally:
        await receiver.stop()
    ids = {str(rows[c.callee_id]["id"]) for c in recorded}
    # Exactly once per recording, none for the call that was not recorded.
    assert sorted(r["json"]["call_id"] for r in receiver.requests) == sorted(ids)
    assert {(str(j["call_id"]), j["hook"], j["state"]) for j in jobs} == {
        (i, h, "done") for i in ids for h in ("webhook", "command")}
    assert any(j["hook"] == "webhook" and j["attempts"] >= 2 for j in jobs)
    for req in receiver.requests:
        body = req["json"]
        r = next(r for r in rows.values() if str(r["id"]) == body["call_id"])
        path = Path(body["recording"]["path"])
        # The hook saw the finished file: the hash it was given is the file's hash.
        assert body["recording"]["status"] == "ready" and path == asterisk.local_recordings_dir / r["recording_path"]
        assert body["recording"]["sha256"] == r["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert req["headers"]["Authorization"] == "Bearer e2e-secret"
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == 2
    for run in runs:
        call_id, path, sha, _ = run["argv"]
        r = next(r for r in rows.values() if str(r["id"]) == call_id)
        assert path == str(asterisk.local_recordings_dir / r["recording_path"]) and sha == r["recording_sha256"]
        assert run["stdin"]["call_id"] == call_id and "CALLREC_ASTERISK_ARI_PASSWORD" not in run["env"]


async def test_a_pending_hook_survives_a_daemon_restart(asterisk: SandboxInfo, database: str, tester: Tester,
                                                        finished: Finished) -> None:
    receiver = Receiver(statuses=[503])  # the first delivery is refused; the retry is due after the stop
    await receiver.start()
    settings = make_settings(asterisk, database, hooks={"webhook_url": receiver.url, "retry_initial": 8,
                                                        "retry_max": 8})
    first = Attempts()
    try:
        async with running(settings, finished) as daemon:
            assert daemon.hooks is not None
            daemon.hooks.on_attempt.append(first)
            call = await place(tester, "100", "5551000")
            await call.handed_back()
            await call.spoken(await call.speak())
            await call.hang_up()
            await finished.wait(call.callee_id)
            await first.wait(lambda a: len(a) == 1, what="the refused first delivery")
        conn = await asyncpg.connect(database)
        try:
            job = await conn.fetchrow("SELECT state, attempts FROM hook_jobs")
        finally:
            await conn.close()
        assert tuple(job) == ("pending", 1)  # the daemon stopped; the job waits in the outbox
        second = Attempts()
        async with running(settings, Finished()) as daemon:
            assert daemon.hooks is not None
            daemon.hooks.on_attempt.append(second)
            await second.wait(lambda a: any(x.ok for x in a), what="the restarted daemon to deliver")
    finally:
        await receiver.stop()
    assert [r["status"] for r in receiver.requests] == [503, 200]
    assert receiver.requests[0]["json"] == receiver.requests[1]["json"]
    assert second.items[-1].attempt == 2


async def test_dialplan_arguments_set_the_callee_word(asterisk: SandboxInfo, database: str, tester: Tester,
                                                      finished: Finished) -> None:
    async with running(policy_settings(asterisk, database), finished) as daemon:
        quiet = await place(tester, "201", "5551000", args="record=no")  # the support-yes rule is overruled
        forced = await place(tester, "203", "5551000", args="extension=777,record=force")  # two Gosub arguments
        back_quiet = await quiet.handed_back()
        back_forced = await forced.handed_back()
        assert (back_quiet["consent"], back_quiet["policy"]) == ("not_asked", "no")
        assert back_quiet["reason"] == "no: dialplan argument (callee side)"
        assert notices_played(tester, quiet) == 0
        assert (back_forced["consent"], back_forced["policy"]) == ("implied", "force")
        assert back_forced["reason"] == "force: dialplan argument (callee side)"
        await forced.spoken(await forced.speak())
        r = await finish(daemon, finished, forced, database)
        assert (r["consent_mode"], r["recording_status"]) == ("notice", "ready")
        r = await finish(daemon, finished, quiet, database)
        assert (r["consent"], r["record_policy"], r["recording_status"]) == ("not_asked", "no", "none")
