#!/usr/bin/env python3
"""A real Asterisk 22 for tests and demos, run in a Debian sid root (debootstrap + chroot).

Standard library only. Must run as root (debootstrap, chroot, mount).

    python tools/sandbox.py build             # make the sid root once (about a minute, ~600 MB)
    python tools/sandbox.py up                # configure, start, wait until ARI/AMI answer
    python tools/sandbox.py status            # running or not, and the version
    python tools/sandbox.py cli "core show channels"
    python tools/sandbox.py reload            # rewrite the config files, then `dialplan reload`
    python tools/sandbox.py log [-n 100]      # tail of Asterisk's messages log
    python tools/sandbox.py info              # connection details as JSON
    python tools/sandbox.py kill              # SIGKILL Asterisk (a crash), unmount proc
    python tools/sandbox.py down              # stop cleanly, unmount proc

Layout: the cache folder ``${CALLREC_SANDBOX_CACHE:-$HOME/.cache/callrec/sandbox}`` holds ``root/`` (the sid
root; ready when ``root/.callrec-sandbox`` exists and lists the packages below), ``build/`` while debootstrap
runs, ``asterisk.log`` (Asterisk's stdout/stderr), ``debootstrap.log`` and ``slot.lock``.

One run per slot: a run that starts, stops or reconfigures the sandbox (a test session, the demo, the
benchmark, ``up``/``down``/``kill``/``configure``/``reload``) first claims the slot: an exclusive ``flock`` on
``slot.lock``, held on an open file until the process exits (the kernel drops it even on SIGKILL), the file
naming the holder (pid, checkout, command).  A second run on a busy slot fails at once with ``SlotBusy``,
which names the holder and ``CALLREC_SANDBOX_SLOT``. The config templates in
``tools/sandbox/etc/`` are written into ``root/etc/asterisk`` by ``configure()``; Debian's stock
configuration is moved aside once to ``root/etc/asterisk.dist``.
"""

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "sandbox" / "etc"

SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-ru-wav")
MARKER = ".callrec-sandbox"

HOST = "127.0.0.1"


def _slot() -> int:
    """CALLREC_SANDBOX_SLOT=N (0-9) runs an independent sandbox (own root copy, own ports) beside
    the default one, so two checkouts can run their tests at the same time."""
    raw = os.environ.get("CALLREC_SANDBOX_SLOT", "0") or "0"
    if not raw.isdigit() or int(raw) > 9:
        raise SystemExit(f"CALLREC_SANDBOX_SLOT: expected 0-9, got {raw!r}")
    return int(raw)


SLOT = _slot()


def second_slot() -> int:
    """The slot of a second sandbox for tests that need two Asterisks (several nodes on one call log):
    CALLREC_SANDBOX_SLOT2, default (CALLREC_SANDBOX_SLOT + 5) % 10."""
    raw = os.environ.get("CALLREC_SANDBOX_SLOT2", "") or str((SLOT + 5) % 10)
    if not raw.isdigit() or int(raw) > 9 or int(raw) == SLOT:
        raise SystemExit(f"CALLREC_SANDBOX_SLOT2: expected 0-9 other than CALLREC_SANDBOX_SLOT ({SLOT}), got {raw!r}")
    return int(raw)


def slot_ports(slot: int) -> tuple[int, int, int, int]:
    """(ARI, AMI, SIP, first RTP) ports of a slot."""
    return 18088 + 10 * slot, 15038 + 10 * slot, 15060 + 10 * slot, 30000 + 1000 * slot


ARI_PORT = 18088 + 10 * SLOT
AMI_PORT = 15038 + 10 * SLOT
SIP_PORT = 15060 + 10 * SLOT
RTP_START = 30000 + 1000 * SLOT
RTP_END = RTP_START + 999
ARI_USER, ARI_PASSWORD = "callrec", "ari&secret%1"
TESTER_ARI_USER, TESTER_ARI_PASSWORD = "tester", "tester-pw"
AMI_USER, AMI_PASSWORD = "callrec", "ami&secret%1"
RECORDINGS_DIR = "/var/spool/asterisk/callrec"
PROMPTS_DIR = "/usr/share/asterisk/sounds/callrec"
MESSAGES_LOG = "/var/log/asterisk/messages"  # inside the root; see tools/sandbox/etc/logger.conf
CTL_SOCKET = "/var/run/asterisk/asterisk.ctl"
PIDFILE = "/var/run/asterisk/asterisk.pid"
ASTERISK = "/usr/sbin/asterisk"

# The dialplan files copied into <root>/etc/asterisk and #included from extensions.conf: every
# dialplan/*.conf (what PBX admins install) and tests/e2e/asterisk/*.conf (the tests' contexts).
DIALPLAN_DIRS = (Path("dialplan"), Path("tests/e2e/asterisk"))
# Stock Debian files still worth having (read from <root>/etc/asterisk.dist).
STOCK_FILES = ("indications.conf",)

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}


class SandboxError(RuntimeError):
    """The sandbox could not be built, configured, started or talked to."""


@dataclass(frozen=True)
class SandboxInfo:
    """What clients (the daemon under test, the tests, a demo) need to reach the sandbox Asterisk."""

    root: Path
    ari_url: str
    ari_user: str
    ari_password: str
    tester_ari_user: str
    tester_ari_password: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_password: str
    sip_port: int
    recordings_dir: str  # as Asterisk sees it
    local_recordings_dir: Path  # the same folder seen from the host
    prompts_dir: str  # as Asterisk sees it; prompts are in <prompts_dir>/<lang>/<name>.wav
    local_prompts_dir: Path


SLOT_LOCK = "slot.lock"


class SlotBusy(SandboxError):
    """Another run holds this sandbox slot (see ``claim_slot``)."""


# Cache folder -> the open lock file this process holds.  Kept open on purpose: the lock lives as long
# as the process (or until release_slot), and a second claim in the same process is a no-op.
_CLAIMED: dict[str, Any] = {}


def claim_slot(cache_dir: Path, checkout: Path = REPO, slot: int = SLOT) -> None:
    """Take this slot for the calling process, or raise ``SlotBusy`` naming the run that has it.

    Never waits: two runs on one slot would stop each other's Asterisk, so the second one is told
    at once which run is in the way and how to pick another slot.
    """
    key = str(Path(cache_dir).resolve())
    if key in _CLAIMED:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path = Path(cache_dir) / SLOT_LOCK
    # O_CREAT without O_TRUNC: the holder's description must survive a failed attempt.
    f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = f.read()
        f.close()
        raise SlotBusy(busy_message(path, holder, slot)) from None
    f.seek(0)
    f.truncate()
    json.dump({"pid": os.getpid(), "checkout": str(checkout), "command": " ".join(_proc_cmdline(os.getpid())),
               "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f)
    f.write("\n")
    f.flush()
    _CLAIMED[key] = f


def release_slot(cache_dir: Path) -> None:
    """Give the slot back before the process exits (exiting does it too)."""
    f = _CLAIMED.pop(str(Path(cache_dir).resolve()), None)
    if f is not None:
        f.close()  # closing the last descriptor drops the flock


def busy_message(path: Path, holder: str, slot: int = SLOT) -> str:
    """What a second run on a busy slot is told: who holds it, and how to run beside it."""
    try:
        info = json.loads(holder)
        pid = int(info["pid"])
        who = f"pid {pid} (checkout {info.get('checkout', '?')}; command: {info.get('command') or '?'}; " \
              f"since {info.get('since', '?')})"
        if not _alive(pid):
            who += f"; pid {pid} has exited, a process it started still holds the lock"
    except (ValueError, KeyError, TypeError):
        who = "a run that is just starting (no details yet)"
    return (f"sandbox slot {slot} is busy: another run holds {path}: {who}. Two runs on one slot stop each "
            f"other's Asterisk. Wait for that run to end, or set CALLREC_SANDBOX_SLOT to another number "
            f"(0-9, e.g. CALLREC_SANDBOX_SLOT={(slot + 1) % 10}) to run beside it.")


def callrec_config(info: SandboxInfo, dsn: str, header: str = "",
                   **sections: dict[str, object]) -> str:
    """A callrec TOML config for this sandbox (tests, demo and benchmark share it).

    ``sections`` add or override keys, e.g. ``notice={"decision_window": 1}``.
    """
    base: dict[str, dict[str, object]] = {
        "asterisk": {"ari_url": info.ari_url, "ari_user": info.ari_user, "ari_password": info.ari_password,
                     "ami_host": info.ami_host, "ami_port": info.ami_port, "ami_user": info.ami_user,
                     "ami_password": info.ami_password},
        # A journal of its own per config: daemons of parallel runs never share one.
        "database": {"dsn": dsn, "journal_dir": tempfile.mkdtemp(prefix="callrec-journal-")},
        "recordings": {"dir": info.recordings_dir, "local_dir": str(info.local_recordings_dir),
                       "finalize_timeout": 10},
        "notice": {"prompts_dir": info.prompts_dir, "local_prompts_dir": str(info.local_prompts_dir)},
        # The ops API is off unless asked for (http={"enabled": True, "listen": ...}).
        "http": {"enabled": False},
        # FastAGI on a free port (its log line names it): several daemons and checkouts run side by side.
        "agi": {"listen": "127.0.0.1:0"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = [f"# {line}" for line in header.splitlines()]
    for name, values in base.items():
        lines.append(f"\n[{name}]")
        for key, value in values.items():
            # JSON strings are valid TOML basic strings; numbers and booleans as TOML spells them.
            text = ("true" if value else "false") if isinstance(value, bool) else (
                str(value) if isinstance(value, int | float) else json.dumps(str(value), ensure_ascii=True))
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def default_cache_dir(slot: int = SLOT) -> Path:
    env = os.environ.get("CALLREC_SANDBOX_CACHE")
    if env and slot == SLOT:
        return Path(env)
    base = Path(env).parent if env else Path.home() / ".cache" / "callrec"
    return base / "sandbox" if slot == 0 else base / f"sandbox-{slot}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _rotate(path: Path, max_bytes: int = 20 * 1024 * 1024) -> None:
    """Keep a log from growing without end: past `max_bytes` it becomes <name>.1 (one old copy)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(path.name + ".1"))


def _mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            field = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def _proc_root(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


def _proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _gone(pid: int) -> bool:
    """The process has exited and freed its resources (sockets, files): it is gone or a zombie whose
    threads have all exited. (A killed multi-threaded process shows "Z" while its threads still exit.)"""
    state = _proc_state(pid)
    if state is None:
        return True
    if state not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _port_owners(proto: str, port: int) -> list[str]:
    """Describe the processes that have a socket bound to `port` (proto "tcp" or "udp"), best effort."""
    inodes = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if int(local.rsplit(":", 1)[1], 16) != port:
                        continue
                    if proto == "tcp" and state != "0A":  # LISTEN
                        continue
                    inodes.add(f"socket:[{inode}]")
        except OSError:
            continue
    owners: list[str] = []
    if not inodes:
        return owners
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    root = _proc_root(int(entry)) or "?"
                    cmd = " ".join(" ".join(_proc_cmdline(int(entry))).split())[:120]
                    owners.append(f"pid {entry} ({cmd}; root {root})")
                    break
            except OSError:
                continue
    return owners


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path of `path` as a process chrooted into `root` sees it.

    Symbolic links are followed inside the root: sid's /var/run is a link to the absolute "/run", which
    from the host would point at the host's own /run.
    """
    result = root
    parts = [p for p in path.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            result = result.parent if result != root else root
            continue
        candidate = result / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                result = root
            parts = [p for p in target.split("/") if p] + parts
            continue
        result = candidate
    return result


class Sandbox:
    """One sid root with Asterisk 22 in a cache folder, and the Asterisk running in it (at most one)."""

    def __init__(self, cache_dir: Path | None = None, repo: Path = REPO, slot: int | None = None) -> None:
        # Another slot than CALLREC_SANDBOX_SLOT's: a second Asterisk for the same run (second_slot()).
        self.slot = SLOT if slot is None else slot
        self.ari_port, self.ami_port, self.sip_port, self.rtp_start = slot_ports(self.slot)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.slot)
        self.repo = Path(repo)
        self.root = self.cache_dir / "root"
        self.build_dir = self.cache_dir / "build"
        self.log_path = self.cache_dir / "asterisk.log"
        self.debootstrap_log = self.cache_dir / "debootstrap.log"
        self.messages_log = self.root / MESSAGES_LOG.lstrip("/")
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- info
    def info(self) -> SandboxInfo:
        return SandboxInfo(
            root=self.root,
            ari_url=f"http://{HOST}:{self.ari_port}",
            ari_user=ARI_USER,
            ari_password=ARI_PASSWORD,
            tester_ari_user=TESTER_ARI_USER,
            tester_ari_password=TESTER_ARI_PASSWORD,
            ami_host=HOST,
            ami_port=self.ami_port,
            ami_user=AMI_USER,
            ami_password=AMI_PASSWORD,
            sip_port=self.sip_port,
            recordings_dir=RECORDINGS_DIR,
            local_recordings_dir=self.root / RECORDINGS_DIR.lstrip("/"),
            prompts_dir=PROMPTS_DIR,
            local_prompts_dir=self.root / PROMPTS_DIR.lstrip("/"),
        )

    # ----------------------------------------------------------------- slot
    def claim(self) -> None:
        """Hold this slot for the process's lifetime; ``SlotBusy`` names the run that holds it."""
        claim_slot(self.cache_dir, self.repo, self.slot)

    def release(self) -> None:
        release_slot(self.cache_dir)

    # ----------------------------------------------------------------- build
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize build/start/stop between processes sharing this cache folder."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def is_built(self) -> bool:
        try:
            listed = set((self.root / MARKER).read_text().split())
        except OSError:
            return False
        return set(PACKAGES) <= listed and (self.root / ASTERISK.lstrip("/")).exists()

    def build(self) -> None:
        """Make the sid root with debootstrap unless a complete one is there. Idempotent."""
        _require_root()
        if self.is_built():
            return
        with self._lock():
            if self.is_built():
                return
            self._build_locked()

    def _build_locked(self) -> None:
        if self.slot != 0 and self._copy_from_slot0():
            return
        debootstrap = self._ensure_debootstrap()
        for leftover in (self.build_dir, self.root):
            if leftover.exists():  # an interrupted or outdated build
                self._umount(leftover / "proc")
                inside = str(leftover.resolve()) + "/"
                mounted = [m for m in _mountpoints() if m.startswith(inside)]
                if mounted:  # never delete through a bind mount into a host folder
                    raise SandboxError(f"cannot rebuild: still mounted inside {leftover}: {mounted}")
                shutil.rmtree(leftover)
        cmd = [
            debootstrap,
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(self.build_dir),
        ]
        started = time.monotonic()
        with open(self.debootstrap_log, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if rc != 0:
            raise SandboxError(
                f"debootstrap failed (exit {rc}); {self.debootstrap_log} ends with:\n" + _tail(self.debootstrap_log, 30)
            )
        if not (self.build_dir / ASTERISK.lstrip("/")).exists():
            raise SandboxError(f"debootstrap finished but {ASTERISK} is missing in {self.build_dir}")
        self.build_dir.rename(self.root)
        (self.root / MARKER).write_text("\n".join(PACKAGES) + "\n")
        print(f"sandbox: built {self.root} in {time.monotonic() - started:.0f} s", file=sys.stderr)

    def _copy_from_slot0(self) -> bool:
        """A slot's root is a copy of the default slot's root when that one is built (seconds, not a
        debootstrap). --one-file-system leaves the default slot's mounted /proc behind."""
        source = Path.home() / ".cache" / "callrec" / "sandbox"
        if not Sandbox(source, self.repo).is_built():
            return False
        if self.build_dir.exists():
            shutil.rmtree(self.build_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if subprocess.call(["cp", "-a", "--one-file-system", str(source / "root"), str(self.build_dir)]) != 0:
            raise SandboxError(f"cannot copy {source / 'root'} to {self.build_dir}")
        self.build_dir.rename(self.root)
        return True

    @staticmethod
    def _ensure_debootstrap() -> str:
        found = shutil.which("debootstrap")
        if found:
            return found
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if not shutil.which("apt-get"):
            raise SandboxError("debootstrap is not installed and there is no apt-get to install it")
        install = ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]
        if subprocess.call(install, env=env, stdin=subprocess.DEVNULL) != 0:
            subprocess.call(["apt-get", "update"], env=env, stdin=subprocess.DEVNULL)
            if subprocess.call(install, env=env, stdin=subprocess.DEVNULL) != 0:
                raise SandboxError("cannot install debootstrap with apt-get (see the output above)")
        found = shutil.which("debootstrap")
        if not found:
            raise SandboxError("apt-get installed debootstrap but it is not on PATH")
        return found

    # ------------------------------------------------------------- configure
    def configure(self) -> None:
        """(Re)write <root>/etc/asterisk from the templates, copy the dialplan and prompts, make dirs."""
        if not self.is_built():
            raise SandboxError(f"no sandbox root at {self.root}: run build() first")
        etc = self.root / "etc/asterisk"
        dist = self.root / "etc/asterisk.dist"
        if not dist.exists():
            etc.rename(dist)  # Debian's sample configs, kept for reference, never read
        if etc.exists():
            shutil.rmtree(etc)
        etc.mkdir()
        values = {
            "HOST": HOST,
            "ARI_PORT": str(self.ari_port),
            "AMI_PORT": str(self.ami_port),
            "SIP_PORT": str(self.sip_port),
            "RTP_START": str(self.rtp_start),
            "RTP_END": str(self.rtp_start + 999),
            "ARI_USER": ARI_USER,
            "ARI_PASSWORD": ARI_PASSWORD,
            "TESTER_ARI_USER": TESTER_ARI_USER,
            "TESTER_ARI_PASSWORD": TESTER_ARI_PASSWORD,
            "AMI_USER": AMI_USER,
            "AMI_PASSWORD": AMI_PASSWORD,
        }
        for template in sorted(TEMPLATES.iterdir()):
            if not template.is_file():
                continue
            text = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template.read_text())
            (etc / template.name).write_text(text)
        for name in STOCK_FILES:
            if (dist / name).is_file():
                shutil.copyfile(dist / name, etc / name)
        includes = []
        for folder in DIALPLAN_DIRS:
            for src in sorted((self.repo / folder).glob("*.conf")):
                if (etc / src.name).exists():
                    raise SandboxError(f"{folder / src.name}: a file of that name is already in {etc}")
                shutil.copyfile(src, etc / src.name)
                includes.append(f"#include {src.name}")
        with open(etc / "extensions.conf", "a") as f:
            f.write("\n".join(includes) + "\n")
        self._copy_prompts()
        hosts = self.root / "etc/hosts"  # debootstrap writes none; "localhost" should resolve in the root
        if not hosts.exists():
            hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        # (/var/spool/asterisk/recording: ARI recordings, which tests use to hear what a called party heard)
        for d in (RECORDINGS_DIR, "/var/run/asterisk", "/var/log/asterisk", "/var/lib/asterisk",
                  "/var/spool/asterisk/recording"):
            self._in_root(d).mkdir(parents=True, exist_ok=True)

    def _in_root(self, path: str) -> Path:
        return resolve_in_root(self.root, path)

    def _copy_prompts(self) -> None:
        target = self._in_root(PROMPTS_DIR)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        sounds = self.repo / "sounds"
        if not sounds.is_dir():
            return
        for lang_dir in sorted(p for p in sounds.iterdir() if p.is_dir()):
            for wav in sorted(lang_dir.glob("*.wav")):
                (target / lang_dir.name).mkdir(exist_ok=True)
                shutil.copyfile(wav, target / lang_dir.name / wav.name)

    def reload_dialplan(self) -> None:
        """Ask the running Asterisk to re-read extensions.conf (call configure() first to copy new files)."""
        out = self.cli("dialplan reload")
        if "Dialplan reloaded" not in out:
            raise SandboxError(f"dialplan reload did not succeed: {out.strip()}")

    # ------------------------------------------------------------- processes
    def _root_pids(self) -> list[int]:
        """All processes whose root directory is this sandbox root (Asterisk and any `asterisk -r`)."""
        root = str(self.root.resolve())
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _proc_root(int(entry)) == root and _alive(int(entry)):
                pids.append(int(entry))
        return pids

    def _asterisk_pids(self) -> list[int]:
        """The main Asterisk process(es) of this root: not the remote consoles (`-r`, `-rx`, `-R`)."""
        result = []
        for pid in self._root_pids():
            argv = _proc_cmdline(pid)
            if not argv or os.path.basename(argv[0]) != "asterisk":
                continue
            if any(a.startswith("-") and not a.startswith("--") and ("r" in a or "R" in a) for a in argv[1:]):
                continue
            result.append(pid)
        return result

    def is_running(self) -> bool:
        return bool(self._asterisk_pids())

    def _proc_mounted(self) -> bool:
        return str(self.root.resolve() / "proc") in _mountpoints()

    def _umount(self, path: Path) -> None:
        target = str(path.resolve()) if path.exists() else str(path)
        if target not in _mountpoints():
            return
        if subprocess.call(["umount", target], stderr=subprocess.DEVNULL) != 0:
            # still busy (a process we could not kill?): detach it so the next start can mount afresh
            if subprocess.call(["umount", "-l", target]) != 0:
                raise SandboxError(f"cannot unmount {target}")

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _wait_gone(self, pids: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None:
                self._proc.poll()  # reap our own child so it does not linger as a zombie
            if all(_gone(p) for p in pids):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _kill_all(self, pids: list[int]) -> None:
        """SIGKILL `pids`, and the process group of each that leads its own group (Asterisk as start()
        runs it, with start_new_session). Never a group that only contains a process in the root: a
        `chroot ... &` started from a shell shares the shell's group, which may hold our caller too."""
        own_group = os.getpgrp()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                pgid = os.getpgid(pid)
                if pgid == pid and pgid != own_group:
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _cleanup(self, graceful: bool) -> None:
        """Stop whatever runs from this root (gracefully first if asked) and unmount root/proc."""
        pids = self._asterisk_pids()
        if pids and graceful:
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                self._asterisk_rx("core stop now", timeout=10)
            self._wait_gone(pids, 10)
        leftovers = self._root_pids()
        if leftovers:
            self._kill_all(leftovers)
            if not self._wait_gone(leftovers, 10):
                alive = [p for p in leftovers if not _gone(p)]
                raise SandboxError(f"processes in {self.root} survive SIGKILL: {alive}")
        self._reap()
        self._umount(self.root / "proc")

    def stop(self) -> None:
        """Stop Asterisk cleanly (`core stop now`, SIGKILL after 10 s) and unmount root/proc."""
        self.claim()
        with self._lock():
            self._cleanup(graceful=True)
            self._proc = None

    def kill_hard(self, unmount: bool = True) -> None:
        """SIGKILL Asterisk as a crash would; unmount root/proc unless `unmount` is False (stale mount)."""
        self.claim()
        pids = self._root_pids()
        self._kill_all(pids)
        if not self._wait_gone(pids, 10):
            raise SandboxError(f"processes in {self.root} survive SIGKILL")
        self._reap()
        self._proc = None
        if unmount:
            self._umount(self.root / "proc")

    # ----------------------------------------------------------------- start
    def _check_ports(self) -> None:
        busy = []
        for proto, port in (("tcp", self.ari_port), ("tcp", self.ami_port), ("udp", self.sip_port)):
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as s:
                if proto == "tcp":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((HOST, port))
                except OSError as e:
                    owners = _port_owners(proto, port)
                    who = "; ".join(owners) if owners else f"unknown owner ({e.strerror})"
                    busy.append(f"{HOST}:{port}/{proto} is taken by {who}")
        if busy:
            raise SandboxError("cannot start the sandbox Asterisk, its ports are in use:\n  " + "\n  ".join(busy))

    def start(self, timeout: float = 60) -> SandboxInfo:
        """Claim the slot, build and configure if needed, clean stale state, start Asterisk and wait until
        it serves.  An Asterisk left running by an earlier run is restarted: holding the slot means no
        other run uses it."""
        _require_root()
        self.claim()
        self.build()
        with self._lock():
            self.configure()
            self._cleanup(graceful=True)  # an Asterisk left from an earlier run, a stale proc mount
            for stale in (CTL_SOCKET, PIDFILE):
                with contextlib.suppress(FileNotFoundError):
                    self._in_root(stale).unlink()
            self._check_ports()
            for log_file in (self.log_path, self.messages_log):
                _rotate(log_file)
            proc_dir = self.root / "proc"
            proc_dir.mkdir(exist_ok=True)
            if subprocess.call(["mount", "-t", "proc", "proc", str(proc_dir)]) != 0:
                raise SandboxError(f"cannot mount proc on {proc_dir}")
            with open(self.log_path, "ab") as log:
                log.write(f"\n==== sandbox start {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    ["chroot", str(self.root), ASTERISK, "-f", "-n"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=CHROOT_ENV,
                    close_fds=True,
                )
        try:
            self._wait_ready(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.kill_hard()
            raise
        return self.info()

    def _failure(self, what: str) -> SandboxError:
        return SandboxError(
            f"{what}\n--- {self.log_path} (tail) ---\n{_tail(self.log_path, 30)}"
            f"\n--- {self.messages_log} (tail) ---\n{_tail(self.messages_log, 30)}"
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        step = "waiting for the control socket"
        booted = ari = ami = False
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise self._failure(f"Asterisk exited with code {self._proc.returncode} during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"Asterisk did not become ready within {timeout:.0f} s ({step})")
            try:
                if not booted and self._in_root(CTL_SOCKET).exists():
                    step = "core waitfullybooted"
                    out = self._asterisk_rx("core waitfullybooted", timeout=max(1.0, remaining))
                    booted = "fully booted" in out
                if booted and not ari:
                    step = "ARI GET /ari/asterisk/info"
                    ari = self._ari_ok()
                if booted and not ami:
                    step = f"AMI banner on port {self.ami_port}"
                    ami = self._ami_ok()
            except (SandboxError, subprocess.TimeoutExpired, OSError):
                pass
            if booted and ari and ami:
                return
            time.sleep(0.2)

    def _ari_ok(self) -> bool:
        req = urllib.request.Request(f"http://{HOST}:{self.ari_port}/ari/asterisk/info")
        token = base64.b64encode(f"{TESTER_ARI_USER}:{TESTER_ARI_PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _ami_ok(self) -> bool:
        try:
            with socket.create_connection((HOST, self.ami_port), timeout=2) as s:
                return s.recv(100).startswith(b"Asterisk Call Manager/")
        except OSError:
            return False

    # ------------------------------------------------------------------- cli
    def _asterisk_rx(self, command: str, timeout: float = 30) -> str:
        res = subprocess.run(
            ["chroot", str(self.root), ASTERISK, "-rx", command],
            capture_output=True,
            timeout=timeout,
            env=CHROOT_ENV,
            stdin=subprocess.DEVNULL,
        )
        out = res.stdout.decode("utf-8", "replace")
        err = res.stderr.decode("utf-8", "replace")
        if res.returncode != 0 or "Unable to connect to remote asterisk" in out + err:
            raise SandboxError(f"asterisk -rx {command!r} failed (exit {res.returncode}): {(out + err).strip()}")
        return out

    def cli(self, command: str) -> str:
        """Run one Asterisk CLI command in the running Asterisk (`asterisk -rx`) and return its output."""
        if not self.is_running():
            raise SandboxError("the sandbox Asterisk is not running")
        return self._asterisk_rx(command)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("the Asterisk sandbox needs root (debootstrap, chroot, mount)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default: $CALLREC_SANDBOX_CACHE or ~/.cache/callrec/sandbox)",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="make the sid root unless it is there")
    sub.add_parser("configure", help="rewrite <root>/etc/asterisk, prompts and folders")
    up = sub.add_parser("up", help="start Asterisk (build and configure first if needed)")
    up.add_argument("--timeout", type=float, default=60)
    sub.add_parser("down", help="stop Asterisk, unmount proc")
    sub.add_parser("kill", help="SIGKILL Asterisk as a crash would, unmount proc")
    sub.add_parser("status", help="running or not, and the version")
    sub.add_parser("info", help="connection details as JSON")
    sub.add_parser("reload", help="configure, then dialplan reload")
    cli = sub.add_parser("cli", help="run an Asterisk CLI command")
    cli.add_argument("command")
    log = sub.add_parser("log", help="tail of Asterisk's messages log")
    log.add_argument("-n", type=int, default=50)
    args = parser.parse_args(argv)

    sb = Sandbox(args.cache)
    try:
        if args.cmd in ("build", "configure", "up", "down", "kill", "reload"):
            sb.claim()  # these change what a run on this slot relies on
        if args.cmd == "build":
            sb.build()
            print(sb.root)
        elif args.cmd == "configure":
            sb.configure()
        elif args.cmd == "up":
            started = time.monotonic()
            info = sb.start(timeout=args.timeout)
            print(
                f"Asterisk is up ({time.monotonic() - started:.1f} s): ARI {info.ari_url}, "
                f"AMI {info.ami_host}:{info.ami_port}, SIP udp {HOST}:{info.sip_port}"
            )
        elif args.cmd == "down":
            sb.stop()
            print("Asterisk is down")
        elif args.cmd == "kill":
            sb.kill_hard()
        elif args.cmd == "status":
            if not sb.is_built():
                print(f"not built ({sb.root})")
                return 3
            if not sb.is_running():
                print(f"not running ({sb.root})")
                return 3
            pids = sb._asterisk_pids()
            print(f"running, pid {' '.join(map(str, pids))} ({sb.root})")
            print(sb.cli("core show version").strip())
        elif args.cmd == "info":
            print(json.dumps(asdict(sb.info()), default=str, indent=2))
        elif args.cmd == "reload":
            sb.configure()
            sb.reload_dialplan()
        elif args.cmd == "cli":
            sys.stdout.write(sb.cli(args.command))
        elif args.cmd == "log":
            print(_tail(sb.messages_log, args.n))
    except SandboxError as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
