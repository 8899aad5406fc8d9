"""One run per sandbox slot (tools/sandbox.py): a second run on a busy slot fails at once and names the
first; the lock goes with the process that holds it, even on SIGKILL.  No Asterisk is needed: the
slot's cache folder is a temporary one, and the holder is a plain process that only claims it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import demo as demo_mod
import pytest
import sandbox as sandbox_mod
import testdb
from support import REPO

SLOT = "7"  # any slot: the cache folder is a temporary one, nothing runs in it
HOLD = "import sys, sandbox; sandbox.Sandbox().claim(); print('held', flush=True); sys.stdin.read()"


@pytest.fixture
def slot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    cache = tmp_path / "sandbox-cache"
    monkeypatch.setenv("CALLREC_SANDBOX_CACHE", str(cache))  # for Sandbox() in this process
    # Not an xdist worker's variables: the child pytest below would take its slot from them (tests/conftest.py).
    inherited = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "CALLREC_SANDBOX_SLOTS")}
    return {**inherited, "CALLREC_SANDBOX_CACHE": str(cache), "CALLREC_SANDBOX_SLOT": SLOT,
            "PYTHONPATH": os.pathsep.join([str(REPO / "tools"), str(REPO / "tests")])}


@pytest.fixture
def holder(slot_env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Another run holding the slot: a process that claimed it and waits on its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD], env=slot_env, cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"  # blocks until it holds the lock
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def sandbox_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tools" / "sandbox.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def assert_names_the_holder(message: str, holder: subprocess.Popen[str]) -> None:
    assert f"sandbox slot {SLOT} is busy" in message, message
    assert f"pid {holder.pid} " in message, message
    assert f"checkout {REPO}" in message, message
    assert "sandbox.Sandbox().claim()" in message, message  # the holder's command line
    assert "set CALLREC_SANDBOX_SLOT to another number" in message, message


def test_a_second_run_on_a_busy_slot_fails_at_once_naming_the_first(
        slot_env: dict[str, str], holder: subprocess.Popen[str]) -> None:
    for command in ("up", "down", "kill", "reload"):
        t0 = time.monotonic()
        result = sandbox_cli(slot_env, command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert time.monotonic() - t0 < 10  # at once: it never waits for the slot
        assert_names_the_holder(result.stderr, holder)
        assert result.stderr.count("\n") == 1  # one line
    # Read-only commands do not need the slot.
    assert sandbox_cli(slot_env, "info").returncode == 0
    # Nothing was built or started in the busy slot.
    assert sorted(p.name for p in Path(slot_env["CALLREC_SANDBOX_CACHE"]).iterdir()) == ["slot.lock"]


def test_the_slot_is_free_again_when_the_holder_is_killed(slot_env: dict[str, str],
                                                           holder: subprocess.Popen[str]) -> None:
    claim = [sys.executable, "-c", "import sandbox; sandbox.Sandbox().claim(); print('claimed')"]
    busy = subprocess.run(claim, env=slot_env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert busy.returncode == 1 and "SlotBusy" in busy.stderr
    holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the flock with the process
    holder.wait(timeout=10)
    free = subprocess.run(claim, env=slot_env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert (free.returncode, free.stdout) == (0, "claimed\n"), free.stderr


def test_a_claim_is_held_for_the_process_and_released_on_request(slot_env: dict[str, str]) -> None:
    box = sandbox_mod.Sandbox()
    box.claim()
    try:
        box.claim()  # the same process again (the bench restarting Asterisk): no-op
        other = subprocess.run([sys.executable, "-c", "import sandbox; sandbox.Sandbox().claim()"], env=slot_env,
                               cwd=REPO, capture_output=True, text=True, timeout=30)
        assert other.returncode == 1 and f"pid {os.getpid()} " in other.stderr
    finally:
        box.release()
    again = subprocess.run([sys.executable, "-c", "import sandbox; sandbox.Sandbox().claim()"], env=slot_env,
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr


def test_a_test_session_on_a_busy_slot_stops_before_the_first_test(
        slot_env: dict[str, str], holder: subprocess.Popen[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "tests/e2e/test_calls_e2e.py"], env=slot_env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert_names_the_holder(out, holder)
    assert " passed" not in out and " failed" not in out  # no test ran


async def test_the_demo_fails_at_once_on_a_busy_slot(holder: subprocess.Popen[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert await demo_mod.demo(argparse.Namespace(keep=False)) == 1
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "FAILED at step 'sandbox Asterisk'" in err
    assert "is busy" in err and f"pid {holder.pid} " in err and "CALLREC_SANDBOX_SLOT" in err


async def test_the_demo_never_stops_an_asterisk_it_did_not_start(slot_env: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An Asterisk already running when the demo begins (``sandbox.py up``, a ``--keep`` run) is reused
    and left running, also when the demo fails.  The Asterisk side is stood in for: this is the
    demo's own bookkeeping, not Asterisk's behaviour."""
    touched: list[str] = []

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def method(*args: object, **kwargs: object) -> None:
            touched.append(name)
            raise AssertionError(f"the demo called Sandbox.{name} on an Asterisk it did not start")
        return method

    monkeypatch.setattr(sandbox_mod.Sandbox, "is_running", lambda self: True)
    monkeypatch.setattr(sandbox_mod.Sandbox, "_ari_ok", staticmethod(lambda: True))
    monkeypatch.setattr(sandbox_mod.Sandbox, "cli", lambda self, command: "Asterisk 22.0.0 built by nobody")
    for name in ("start", "stop", "kill_hard", "configure"):
        monkeypatch.setattr(sandbox_mod.Sandbox, name, refuse(name))

    def no_postgres() -> str:
        raise testdb.TestDBError("no PostgreSQL in this test: the demo stops at its second step")

    monkeypatch.setattr(testdb, "ensure_postgres", no_postgres)
    try:
        assert await demo_mod.demo(argparse.Namespace(keep=False)) == 1
    finally:
        sandbox_mod.release_slot(Path(slot_env["CALLREC_SANDBOX_CACHE"]))
    out, err = capsys.readouterr()
    assert "reusing it, will leave it running" in out
    assert "FAILED at step 'PostgreSQL'" in err
    assert touched == []
