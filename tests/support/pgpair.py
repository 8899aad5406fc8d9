"""A PostgreSQL primary and a streaming standby for failover tests, made with Debian's own binaries.

``initdb`` makes the primary, ``pg_basebackup -R`` the standby (it streams from the primary, hot
standby: readable, not writable).  Both listen on free 127.0.0.1 ports in a temporary folder under
/var/tmp (user postgres must reach it), run as user postgres, with trust auth.  Replication is
synchronous (``synchronous_standby_names = '*'``): a commit the primary acknowledged is on the
standby, so a crashed primary loses nothing the daemon was told was written.  Missing binaries are
an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
NEEDED = ("initdb", "pg_ctl", "pg_basebackup")


class PgPairError(RuntimeError):
    pass


def bindir() -> Path:
    """The newest Debian PostgreSQL with every binary the pair needs."""
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                  key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)
    for d in dirs:
        if all((d / name).exists() for name in NEEDED):
            return d
    raise PgPairError(f"no PostgreSQL server binaries ({', '.join(NEEDED)}) under /usr/lib/postgresql/*/bin: "
                      "install Debian's postgresql package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str], timeout: float = 120) -> str:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise PgPairError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


class PgPair:
    def __init__(self) -> None:
        self.bin = bindir()
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PgPairError("no user postgres (Debian's postgresql package makes it)") from None
        self.root = Path(tempfile.mkdtemp(prefix="callrec-pgpair-", dir="/var/tmp"))
        shutil.chown(self.root, "postgres", "postgres")
        self.primary_dir = self.root / "primary"
        self.standby_dir = self.root / "standby"
        self.primary_port = free_port()
        self.standby_port = free_port()
        self.running: set[Path] = set()

    def admin_dsn(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{port}/{database}"

    def failover_dsn(self, database: str) -> str:
        """Both hosts, primary first; asyncpg keeps the first that takes writes."""
        return (f"postgresql://postgres@{HOST}:{self.primary_port},{HOST}:{self.standby_port}/{database}"
                "?target_session_attrs=read-write")

    def _pg_ctl(self, datadir: Path, *args: str) -> None:
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(datadir), *args])

    def _start(self, datadir: Path) -> None:
        self._pg_ctl(datadir, "-l", str(self.root / f"{datadir.name}.log"), "-w", "-t", "60", "start")
        self.running.add(datadir)

    def log_of(self, which: str) -> str:
        path = self.root / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        _as_postgres([str(self.bin / "initdb"), "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '{HOST}'\nport = {self.primary_port}\nunix_socket_directories = '{self.root}'\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n"
                "synchronous_standby_names = '*'\nshared_preload_libraries = 'pg_stat_statements'\n"
                "max_connections = 60\nshared_buffers = 32MB\n")
        self._start(self.primary_dir)
        _as_postgres([str(self.bin / "pg_basebackup"), "-D", str(self.standby_dir), "-h", HOST,
                      "-p", str(self.primary_port), "-U", "postgres", "-R", "-X", "stream", "--no-sync"])
        with open(self.standby_dir / "postgresql.auto.conf", "a") as conf:
            # Promoted, it has no standby of its own: it must not wait for one.
            conf.write(f"\nport = {self.standby_port}\nsynchronous_standby_names = ''\n")
        self._start(self.standby_dir)

    def stop_primary(self, mode: str = "immediate") -> None:
        """``immediate``: no shutdown checkpoint, connections cut, as a crash does."""
        self._pg_ctl(self.primary_dir, "-m", mode, "-w", "stop")
        self.running.discard(self.primary_dir)

    def promote(self) -> None:
        """The standby becomes the primary (``pg_ctl promote``, waiting until it takes writes)."""
        self._pg_ctl(self.standby_dir, "-w", "-t", "60", "promote")

    def stop(self) -> None:
        for datadir in list(self.running):
            with contextlib.suppress(PgPairError, subprocess.TimeoutExpired):
                self._pg_ctl(datadir, "-m", "immediate", "-w", "stop")
            self.running.discard(datadir)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def pg_pair() -> Iterator[PgPair]:
    pair = PgPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()

