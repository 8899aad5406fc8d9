#!/usr/bin/env python3
"""Find or start a PostgreSQL server for the tests and print an admin DSN for it.

Standard library only.  ``ensure_postgres()`` tries, in order:

1. ``$CALLREC_TEST_PG_DSN``, taken as given;
2. ``postgresql://postgres@127.0.0.1:5432/postgres`` when it lets user postgres in without a password;
3. the Debian clusters listed by ``pg_lsclusters``, started with ``pg_ctlcluster`` when down;
4. a private throwaway cluster (trust auth, 127.0.0.1:55432, fsync off) in
   ``${CALLREC_TEST_PG_DIR:-<cache>/pg}``, ``<cache>`` being
   ``${CALLREC_SANDBOX_CACHE:-$HOME/.cache/callrec/sandbox}``; made with initdb and run as user postgres.
   With no PostgreSQL server binaries at all, ``apt-get install -y postgresql`` is tried first.

    python tools/testdb.py            # prints the DSN (exit 1 and a reason on stderr if none works)
    python tools/testdb.py --stop     # stops the private cluster if it runs
"""

import argparse
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
PRIVATE_PORT = 55432
ADMIN_USER = "postgres"
ADMIN_DB = "postgres"


class TestDBError(RuntimeError):
    """No PostgreSQL server could be found or started."""


def dsn_for(port: int, host: str = HOST) -> str:
    return f"postgresql://{ADMIN_USER}@{host}:{port}/{ADMIN_DB}"


def private_dir() -> Path:
    env = os.environ.get("CALLREC_TEST_PG_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("CALLREC_SANDBOX_CACHE")
    base = Path(cache) if cache else Path.home() / ".cache" / "callrec" / "sandbox"
    return base / "pg"


# --------------------------------------------------------------------------------- wire check
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def login_ok(host: str, port: int, user: str = ADMIN_USER, database: str = ADMIN_DB, timeout: float = 3) -> bool:
    """True when a server on host:port lets `user` into `database` with no password (trust), i.e. the
    startup handshake reaches ReadyForQuery. Speaks just enough of the wire protocol (v3.0)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
            s.sendall(struct.pack("!I", len(body) + 4) + body)
            authenticated = False
            while True:
                kind = _recv_exact(s, 1)
                (length,) = struct.unpack("!I", _recv_exact(s, 4))
                payload = _recv_exact(s, length - 4)
                if kind == b"R":
                    if struct.unpack("!I", payload[:4])[0] != 0:
                        return False  # wants a password (or SASL): not usable without one
                    authenticated = True
                elif kind == b"E":
                    return False
                elif kind == b"Z":
                    s.sendall(b"X" + struct.pack("!I", 4))  # Terminate
                    return authenticated
    except (OSError, ConnectionError, struct.error):
        return False


# ------------------------------------------------------------------------------ helpers
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd  # a non-root user runs the private cluster as itself


def _debian_clusters() -> list[tuple[str, str, int, str]]:
    """(version, name, port, status) of each cluster `pg_lsclusters` lists."""
    if not shutil.which("pg_lsclusters"):
        return []
    res = _run(["pg_lsclusters", "--no-header"])
    clusters = []
    for line in res.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[2].isdigit():
            clusters.append((cols[0], cols[1], int(cols[2]), cols[3]))
    return clusters


def _bindirs() -> list[Path]:
    """Directories with initdb and pg_ctl, newest PostgreSQL first."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            found.append(d)
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        d = Path(initdb).resolve().parent
        if (d / "pg_ctl").exists() and d not in found:
            found.append(d)
    return found


def _bin_version(bindir: Path) -> str:
    out = _run([str(bindir / "pg_ctl"), "--version"]).stdout
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return m.group(1) if m else ""


def _apt_install_postgresql() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise TestDBError("no PostgreSQL server binaries, and apt-get cannot be used to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "postgresql"]
    if subprocess.call(cmd, env=env, stdin=subprocess.DEVNULL) != 0:
        subprocess.call(["apt-get", "update"], env=env, stdin=subprocess.DEVNULL)
        if subprocess.call(cmd, env=env, stdin=subprocess.DEVNULL) != 0:
            raise TestDBError("apt-get install -y postgresql failed (see its output above)")


def _wait_login(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if login_ok(HOST, port):
            return True
        time.sleep(0.3)
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -------------------------------------------------------------------------- strategies
def _try_debian_clusters(errors: list[str]) -> str | None:
    for version, name, port, status in _debian_clusters():
        if login_ok(HOST, port):
            return dsn_for(port)
        if status != "online" and os.geteuid() == 0:
            res = _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"])
            if res.returncode != 0:
                errors.append(f"pg_ctlcluster {version} {name} start: {(res.stderr or res.stdout).strip()}")
                continue
            if _wait_login(port, 15):
                return dsn_for(port)
        errors.append(
            f"Debian cluster {version}/{name} on port {port} ({status}) does not let user {ADMIN_USER} in "
            "from 127.0.0.1 without a password"
        )
    return None


def _usable_private_dir(datadir: Path) -> Path:
    """`datadir`, or a folder under /var/tmp when user postgres cannot reach it (e.g. under /root)."""
    if os.geteuid() != 0:
        return datadir
    probe = datadir.parent
    probe.mkdir(parents=True, exist_ok=True)
    if _run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)]).returncode == 0:
        return datadir
    return Path("/var/tmp/callrec-test-pg")


def _start_private(errors: list[str]) -> str:
    dsn = dsn_for(PRIVATE_PORT)
    if login_ok(HOST, PRIVATE_PORT):
        return dsn
    bindirs = _bindirs()
    if not bindirs:
        raise TestDBError("no PostgreSQL server binaries (initdb, pg_ctl) found")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.check_call(["useradd", "--system", "--user-group", "--no-create-home", "postgres"])
    datadir = _usable_private_dir(private_dir())
    bindir = bindirs[0]
    version_file = datadir / "PG_VERSION"
    if version_file.exists():
        wanted = version_file.read_text().strip()
        match = [d for d in bindirs if _bin_version(d) == wanted]
        if match:
            bindir = match[0]
        else:  # made by a PostgreSQL that is gone: a throwaway cluster, make it anew
            shutil.rmtree(datadir)
    if not version_file.exists():
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(datadir, "postgres", "postgres")
        res = _run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    ADMIN_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            )
        )
        if res.returncode != 0:
            raise TestDBError(f"initdb failed in {datadir}:\n{res.stdout}{res.stderr}")
        with open(datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# callrec tests: a private, throwaway cluster\n"
                f"listen_addresses = '{HOST}'\n"
                f"port = {PRIVATE_PORT}\n"
                f"unix_socket_directories = '{datadir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
    log = datadir / "server.log"
    res = _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60", "start"]))
    if res.returncode != 0 or not _wait_login(PRIVATE_PORT, 15):
        errors.append(f"private cluster in {datadir}: pg_ctl start: {(res.stderr or res.stdout).strip()}")
        raise TestDBError("\n".join(errors) + f"\n--- {log} ---\n{_tail(log)}")
    return dsn


def stop_private() -> None:
    """Stop the private cluster (if this machine runs one)."""
    for datadir in (private_dir(), Path("/var/tmp/callrec-test-pg")):
        if (datadir / "postmaster.pid").exists():
            for bindir in _bindirs():
                if (
                    _run(
                        _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"])
                    ).returncode
                    == 0
                ):
                    break


def ensure_postgres() -> str:
    """An admin DSN (user postgres, database postgres, no password) of a running PostgreSQL."""
    env = os.environ.get("CALLREC_TEST_PG_DSN")
    if env:
        return env
    if login_ok(HOST, DEFAULT_PORT):
        return dsn_for(DEFAULT_PORT)
    errors = [f"{dsn_for(DEFAULT_PORT)} does not accept user {ADMIN_USER} without a password (or is down)"]
    dsn = _try_debian_clusters(errors)
    if dsn:
        return dsn
    if login_ok(HOST, PRIVATE_PORT):
        return dsn_for(PRIVATE_PORT)
    if not _bindirs():
        _apt_install_postgresql()
        if login_ok(HOST, DEFAULT_PORT):
            return dsn_for(DEFAULT_PORT)
        dsn = _try_debian_clusters(errors)
        if dsn:
            return dsn
    try:
        return _start_private(errors)
    except TestDBError as e:
        msg = str(e)
        if errors and not msg.startswith(errors[0]):
            msg = "\n".join(errors) + "\n" + msg
        raise TestDBError("no usable PostgreSQL for the tests:\n" + msg) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="stop the private cluster")
    args = parser.parse_args(argv)
    try:
        if args.stop:
            stop_private()
            return 0
        print(ensure_postgres())
    except (TestDBError, OSError, subprocess.SubprocessError) as e:
        print(f"testdb: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
