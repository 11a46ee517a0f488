"""Command-line flags as dataclasses, the way every layoutkit program declares them (training's groups in
layoutkit/train/arguments.py, inference's in layoutkit/apps/settings.py): a field per flag, `flag(help, default)`
for its help text, parsed with transformers' `HfArgumentParser`; a `__post_init__` that raises ValueError turns into
argparse's usage error, so a typo stops the program before any work."""

from __future__ import annotations

import argparse
from dataclasses import field
from typing import Any


def flag(help: str, default: Any = None, **metadata) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` keeps the docstring's layout and shows every flag's default."""


def parse_dataclasses(parser, argv=None) -> list:
    """`parser.parse_args_into_dataclasses(argv)`, with a `__post_init__` check's ValueError and unknown flags
    reported as argparse usage errors (exit code 2)."""
    try:
        *groups, remaining = parser.parse_args_into_dataclasses(
            argv, return_remaining_strings=True, look_for_args_file=False
        )
    except ValueError as error:
        parser.error(str(error))
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return groups
