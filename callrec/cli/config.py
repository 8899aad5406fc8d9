"""``callrec config reference``: the configuration reference, generated from the settings classes."""

from __future__ import annotations

import argparse

from callrec.cli.common import command, group
from callrec.config import reference


def add_commands(sub: object) -> None:
    config = group(sub, "config", "the configuration file")
    command(config, "reference", "print every key with its default, allowed values and meaning (Markdown)",
            run_reference, needs_config=False)


def run_reference(args: argparse.Namespace, settings: object) -> int:
    print(reference.render(), end="")
    return 0
