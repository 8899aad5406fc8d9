"""``callrec sounds install``: copy the notice prompts to where Asterisk reads them."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from callrec.cli.common import CommandError, command, group
from callrec.config.settings import Settings


def add_commands(sub: object) -> None:
    sounds = group(sub, "sounds", "notice prompts")
    install = command(sounds, "install", "copy the shipped prompts to where Asterisk reads them", run_install)
    install.add_argument("--from", dest="source", help="prompts folder (default: the shipped sounds/)")
    install.add_argument("--dest", help="target folder (default: notice.local_prompts_dir or prompts_dir)")


def shipped_sounds() -> Path | None:
    """``sounds/`` of a checkout (callrec/cli/sounds.py -> the repository), else the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "sounds"
    for candidate in (checkout, Path(sys.prefix) / "share" / "callrec" / "sounds"):
        if candidate.is_dir():
            return candidate
    return None


def run_install(args: argparse.Namespace, settings: Settings) -> int:
    if args.source and not Path(args.source).is_dir():
        raise CommandError(f"sounds: --from {args.source}: no such folder")
    src = Path(args.source) if args.source else shipped_sounds()
    if src is None:
        raise CommandError("sounds: no prompts folder found; pass --from", 1)
    target = Path(args.dest) if args.dest else settings.notice.local_prompts_path
    copied = 0
    try:
        for wav in sorted(src.glob("*/*.wav")):
            out = target / wav.parent.name / wav.name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wav, out)
            out.chmod(0o644)
            copied += 1
    except OSError as exc:
        raise CommandError(f"sounds: {exc}", 1) from None
    if not copied:
        raise CommandError(f"sounds: no <lang>/<name>.wav files in {src}", 1)
    print(f"installed {copied} prompt(s) from {src} into {target}")
    return 0
