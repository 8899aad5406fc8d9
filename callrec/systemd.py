"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``): READY, STOPPING, STATUS and the watchdog.

The protocol is one datagram of ``KEY=value`` lines to the socket named by ``$NOTIFY_SOCKET``
(sd_notify(3)); written here in a few lines rather than taken from a package, as the packages
for it are unmaintained wrappers of the same datagram.  Without ``$NOTIFY_SOCKET`` (not under
systemd, or ``Type=simple``) every call does nothing.

The watchdog is fed from the daemon's event loop, so a loop that hangs (a blocking call, a
busy loop) stops the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

__all__ = ["notify", "watchdog", "watchdog_interval"]

log = logging.getLogger("callrec.systemd")
_warned = False


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) to systemd; False when not under systemd or on error."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    global _warned
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never wait: with the receiver's queue full a blocking send would stop the event loop (and
            # the calls); a lost ping costs less.
            sock.sendto("\n".join(states).encode(), socket.MSG_DONTWAIT, address)
        return True
    except OSError as exc:
        # Once at WARNING (a wrong socket is a set-up problem), then quietly: the watchdog retries anyway.
        level = logging.DEBUG if _warned else logging.WARNING
        _warned = True
        log.log(level, "systemd notify socket %s: %s", os.environ.get("NOTIFY_SOCKET"), exc.strerror or exc)
        return False


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec``), or None when systemd asked for none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog(interval: float) -> None:
    """Ping the watchdog every ``interval`` seconds while the event loop runs."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
