"""Where the CLIs print: a rich Console that keeps tables whole when nobody reads a terminal.

Rich sizes its output to the terminal; written to a file, a pipe or a CI log it assumes 80 columns, so
every wide table was cut ("pre…", "0.0…", "verd…") and long lines broke in the middle. Off a terminal
the console is as wide as any table the project prints, tables take their natural width, and text is
never wrapped (a log reader wants whole lines).
"""

from __future__ import annotations

from rich.console import Console

# Wider than any table the project prints (the live trial table is ~110 columns): rich lays a table
# out at its natural width, not this one, so the number only has to be large.
OFF_TERMINAL_WIDTH = 400


def make_console(*, stderr: bool = False) -> Console:
    """A Console for stdout (tables, answers) or stderr (progress, notes)."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=OFF_TERMINAL_WIDTH, soft_wrap=True)
