"""``callrec``: the command table and main().

Each command group module registers its commands with ``add_commands(sub)``; a command's parser
carries its handler (``set_defaults(run=...)``), and main() loads the config and calls it. A
handler that is a coroutine runs in one event loop here; a one-line refusal is a CommandError.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
from datetime import UTC, datetime

import asyncpg
import uvloop

from callrec.cli import (
    access,
    alerts,
    calls,
    config,
    evidence,
    hooks,
    nodes,
    policy,
    recording,
    retention,
    serve,
    sounds,
    speech,
    storage,
    subjects,
)
from callrec.cli.common import CommandError, Parser, add_global_options
from callrec.config.settings import ConfigError, Settings, load_settings
from callrec.storage import BadCiphertext, WrongMasterKey

# In the order `callrec --help` lists them.
GROUPS = (serve, config, policy, hooks, calls, alerts, access, sounds, retention, subjects, evidence, recording,
          speech, storage, nodes)


def build_parser() -> Parser:
    parser = Parser(prog="callrec", description="Lawful call recording for Asterisk.")
    add_global_options(parser, root=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in GROUPS:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # `serve --api-only` talks to no Asterisk: its credentials need not be in that host's config.
        settings = _settings(args.config, asterisk=not getattr(args, "api_only", False)) if args.needs_config else None
        outcome = args.run(args, settings)
        if not inspect.iscoroutine(outcome):
            return int(outcome)
        # uvloop: the daemon's event loop on libuv, less CPU per socket event than asyncio's own
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(outcome)
    except CommandError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return exc.code
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The database refused or dropped something mid-command (a missing privilege, a restart).
        print(f"callrec: database: {exc}", file=sys.stderr)
        return 1
    except (WrongMasterKey, BadCiphertext) as exc:  # one line naming the recording and the key ids
        print(f"callrec: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _settings(path: str, asterisk: bool = True) -> Settings:
    for key in ("ARI_PASSWORD", "AMI_PASSWORD"):
        if os.environ.get(f"CALLREC_{key}") and not os.environ.get(f"CALLREC_ASTERISK_{key}"):
            print(f"callrec: note: use CALLREC_ASTERISK_{key}, not CALLREC_{key}", file=sys.stderr)
    try:
        settings = load_settings(path, asterisk=asterisk)
    except ConfigError as exc:
        raise CommandError(f"config error: {exc}") from None
    except OSError as exc:  # a folder, an unreadable device: load_settings names the usual cases itself
        raise CommandError(f"config error: {path}: {exc.strerror or exc}") from None
    _setup_logging(settings)
    return settings


class JsonFormatter(logging.Formatter):
    """``[log] format = "json"``: one JSON object per line, for a log shipper.  Messages are data, never
    format strings of their own; a caller-supplied text inside one is escaped by ``json.dumps``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # set already (and redacted) by callrec.web.logsafe for the API's records
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def _setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log.format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log.level.upper(), handlers=[handler])
    # panoramisk logs every action it sends at INFO/DEBUG, login secret included: keep it quiet.
    logging.getLogger("panoramisk").setLevel(logging.WARNING)
    logging.getLogger("callrec.ami.panoramisk").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
