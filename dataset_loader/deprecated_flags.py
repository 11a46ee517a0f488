"""The kebab-case spellings of dataset_loader's flags (`--data-dir`), deprecated: the flags are snake_case like
every other layoutkit program's (`--data_dir`). For a release the old spelling still works, with a warning on
stderr; it will then be removed."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every long option of `parser` and of its sub-commands."""
    names = set()
    for action in parser._actions:
        names.update(name for name in action.option_strings if name.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                names |= option_strings(subparser)
    return names


def snake_case_options(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """`argv` with each deprecated `--kebab-case` option of `parser` (or a prefix argparse would accept) spelled
    `--snake_case`, warning once per spelling on stderr. Other arguments (values, unknown options) are kept."""
    known = option_strings(parser)
    converted, warned = [], set()
    for argument in argv:
        name, equals, value = argument.partition("=")
        if name.startswith("--") and "-" in name[2:]:
            snake = "--" + name[2:].replace("-", "_")
            if snake in known or any(option.startswith(snake) for option in known):
                if name not in warned:
                    warned.add(name)
                    print(f"warning: {name} is deprecated, write {snake} (the kebab-case spellings of "
                          "dataset_loader's flags will be removed in a future release)", file=sys.stderr)
                argument = snake + equals + value
        converted.append(argument)
    return converted
