"""``callrec recording pause | resume | pauses`` (PCI DSS): through this process's own AMI login;
the pause state is in PostgreSQL, shared with the daemon, so it works with or without it."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC

import asyncpg

from callrec.cli.common import CommandError, call_id, command, group, utc
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import table


def add_commands(sub: object) -> None:
    recording = group(sub, "recording", "pause or resume a call's recording (PCI DSS)")
    for name, text in (("pause", "silence the recording from now on (logged)"),
                       ("resume", "end the pause: record again, in the same file"),
                       ("pauses", "list the call's pause intervals")):
        cmd = command(recording, name, text, run_recording)
        cmd.add_argument("call_id", type=call_id, help="the call's id (CALLREC_CALL_ID, `callrec calls`)")
        if name != "pauses":
            cmd.add_argument("--by", help="who asks (logged; default: the user running this command)")
        cmd.add_argument("--json", action="store_true", help="one JSON object per interval")


async def run_recording(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.access import cli_principal
    from callrec.asterisk.ami import Ami, AmiError
    from callrec.recording.control import RecordingControlError, list_pauses, pause_recording, resume_recording

    command_ = args.recording_command
    async with open_database(settings) as conn:
        ami: Ami | None = None
        try:
            if command_ == "pauses":
                intervals = await list_pauses(conn, args.call_id)
            else:
                a = settings.asterisk
                logging.getLogger("callrec.ami").setLevel(logging.WARNING)  # no "logged in" chatter for one command
                ami = Ami(a.ami_host, a.ami_port, a.ami_user, a.ami_password, timeout=min(3.0, a.request_timeout))
                await ami.start()
                try:
                    await ami.wait_logged_in(timeout=min(5.0, a.request_timeout))
                except AmiError as exc:
                    key = "asterisk.ami_password" if ami.auth_failed else "asterisk.ami_host"
                    raise CommandError(f"{key}: {exc}", 1) from None
                act = pause_recording if command_ == "pause" else resume_recording
                who = args.by or cli_principal().name
                intervals = [await act(args.call_id, by=who, source="cli", ami=ami, db=conn)]
        except RecordingControlError as exc:
            raise CommandError(str(exc), 1) from None
        except ValueError as exc:  # an empty --by
            raise CommandError(str(exc)) from None
        except asyncpg.UndefinedTableError:
            raise CommandError("database: schema not up to date; run `callrec migrate`", 1) from None
        finally:
            if ami is not None:
                await ami.close()
    if args.json:
        for interval in intervals:
            print(json.dumps(interval.as_dict(), ensure_ascii=True))
        return 0
    if command_ == "pause":
        i = intervals[0]
        print(f"paused: call {i.call_id}, pause {i.seq}, since {utc(i.paused_at)}")
    elif command_ == "resume":
        i = intervals[0]
        assert i.resumed_at is not None
        print(f"resumed: call {i.call_id}, pause {i.seq}, {utc(i.paused_at)} to {utc(i.resumed_at)} "
              f"({(i.resumed_at - i.paused_at).total_seconds():.1f}s silent)")
    else:
        rows = [[str(i.seq), f"{i.paused_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                 f"{i.resumed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if i.resumed_at else "(paused)",
                 i.paused_by, i.pause_source, i.resumed_by or "", i.resume_source or ""] for i in intervals]
        print(table(["seq", "paused (UTC)", "resumed (UTC)", "paused by", "via", "resumed by", "via"], rows,
                    [3, 19, 19, 30, 5, 30, 6]))
        if not intervals:
            print("(no pauses)")
    return 0
