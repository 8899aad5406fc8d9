"""What every command shares: the parser (one-line usage errors), the global options, the way a
command is registered, and the one-line error a command raises.

Exit codes: ``0`` success; ``1`` the command ran and failed (a ``check`` failure, a refused pause,
an unknown call, a schema that is not up to date); ``2`` what was typed or configured is wrong
(command line, config, a malformed value, a missing file named on the command line) or the
database cannot be reached; ``3`` done, but with findings (verify, verify-manifest, subject erase).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from callrec import __version__
from callrec.config.settings import Settings

DEFAULT_CONFIG = "/etc/callrec/callrec.toml"
PROBLEMS = 3

# A command's handler: gets the parsed arguments and the loaded config, returns the exit code.
# Handlers that talk to PostgreSQL, Asterisk or a prompt are coroutines; main() runs them.
Handler = Callable[[argparse.Namespace, Settings], int | Awaitable[int]]


class CommandError(Exception):
    """One line for stderr (main() prefixes ``callrec: ``) and the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_global_options(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """``-c/--config`` and ``--version``, accepted before or after the command.

    The root parser holds the default; on a command's parser the default is SUPPRESS, so an
    option not given after the command does not overwrite one given before it.
    """
    default = os.environ.get("CALLREC_CONFIG", DEFAULT_CONFIG) if root else argparse.SUPPRESS
    parser.add_argument("-c", "--config", default=default,
                        help=f"TOML config file (default: $CALLREC_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--version", action="version", version=f"callrec {__version__}")


def command(sub: Any, name: str, help: str, run: Handler | None = None, *,
            needs_config: bool = True) -> Parser:
    """Register one command (or a group of commands when ``run`` is None) in the command table."""
    parser: Parser = sub.add_parser(name, help=help, description=help)
    add_global_options(parser, root=False)
    if run is not None:
        parser.set_defaults(run=run, needs_config=needs_config)
    return parser


def group(sub: Any, name: str, help: str) -> Any:
    """A command with subcommands (``users add``, ``policy explain``): returns where they go."""
    return command(sub, name, help).add_subparsers(dest=f"{name}_command", required=True)


def call_id(text: str) -> str:
    """argparse type for a call id: a malformed one is a usage error (exit 2), not an unknown call."""
    try:
        uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a call id (UUID), got {text!r}") from None
    return text


def utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def dump(doc: Any) -> str:
    """An indented JSON document, ASCII-escaped so caller-supplied text cannot drive the terminal."""
    return json.dumps(doc, ensure_ascii=True, default=str, indent=2)


def open_storage(settings: Any) -> Any:
    """The recordings' ``Storage`` (callrec.storage); a master key that cannot be read is one line, exit 2."""
    from callrec.storage import KeyProblem, Storage
    try:
        return Storage.of(settings)
    except KeyProblem as exc:
        raise CommandError(str(exc)) from None
