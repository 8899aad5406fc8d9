"""``[node]``: this daemon's name when several Asterisk nodes share one call log.

Kept apart from settings.py like the speech and alert sections; settings.py only hooks it in.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from callrec.config.fields import ConfigError, Range, check_ranges, setting

__all__ = ["NODE_NAME_RE", "NodeSettings", "check_node", "host_node_name", "node_name"]

# Short, printable, no spaces: it is shown in tables, logs and `callrec nodes retire NODE`.
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class NodeSettings:
    name: str = setting("", "this node's name in the call log: each Asterisk node's `callrec serve` has its own, "
                            "and start-up recovery, the hang-up sweep and stereo merges touch only its rows. "
                            "Two daemons must never share a name",
                        allowed="letters, digits, `_ . -`, at most 63, starting with a letter or digit",
                        shown_default="the host name")
    heartbeat_interval: float = setting(30.0, "seconds between this node's `last seen` writes to the `nodes` "
                                              "table (`callrec nodes list`); never on a call's path",
                                        range=Range(5, 600, unit="seconds"))


def host_node_name() -> str:
    """The host name, cut to its first label and to what a node name allows."""
    host = socket.gethostname().split(".")[0]
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:63].lstrip("-_.")
    return host or "node"


def node_name(n: NodeSettings) -> str:
    return n.name or host_node_name()


def check_node(n: NodeSettings) -> None:
    if n.name and not NODE_NAME_RE.match(n.name):
        raise ConfigError(f"node.name: expected letters, digits, '_', '.', '-' (at most 63, no spaces), "
                          f"got {n.name!r}")
    check_ranges(n, "node")
