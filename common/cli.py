"""What every CLI of the project shares: one-line errors and exit code 2 for input a user can fix."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from common.errors import UserError

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (`error: ...`) and exit 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


class OneLineHelp(argparse.HelpFormatter):
    """``--help`` with each flag's help on its flag's line: a list flag reads ``NAME...`` (not ``NAME
    [NAME ...]``), which keeps every flag short enough that argparse never moves its help below it."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.ONE_OR_MORE:
            return f"{self._metavar_formatter(action, default_metavar)(1)[0]}..."
        return super()._format_args(action, default_metavar)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main`, turning a `UserError` into one line on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
