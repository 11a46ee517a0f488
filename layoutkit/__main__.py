"""`python -m layoutkit COMMAND ...`: the `layoutkit` command (layoutkit/cli.py)."""

import sys

from layoutkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
