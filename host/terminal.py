"""How tinypower writes to a terminal, a pipe, a CI log or ``tee``.

On a terminal: rich colour, tables fitted to the window, a live progress bar. Anywhere else:
no wrapping at all (rich would otherwise hard-wrap at 80 columns and split paths, URLs and
numbers across lines), no colour, and progress as plain lines a log keeps (phase, done/total,
elapsed), at most one a second. Text that came from a DUT, an instrument or a file is shown with
its control characters escaped, so a stray escape sequence cannot repaint the user's terminal
or forge a line of output.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.markup import escape

UNWRAPPED_WIDTH = 100_000  # columns for a pipe or file: wide enough that nothing wraps
PLAIN_PROGRESS_EVERY_S = 1.0

# C0 and C1 controls (keeping newline and tab), DEL, and the Unicode line separators and
# bidirectional overrides that can make a line read other than it is...
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# ...and inside a one-line message newline and tab too, which would forge or split lines.
_CONTROL_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

ProgressCallback = Callable[[str, int, int], None]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


class _Console(Console):
    """rich's Console, but a closed pipe raises BrokenPipeError for ``cli.main`` to end
    quietly with the SIGPIPE status: rich's own handler exits with 1, which here means
    "a run failed or a rule was broken"."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console(stderr: bool = False) -> Console:
    """A rich Console for stdout (or stderr) that wraps only on a terminal."""
    if _is_terminal(sys.stderr if stderr else sys.stdout):
        return _Console(stderr=stderr)
    return _Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True, no_color=True)


def printable(text: object, *, one_line: bool = False) -> str:
    """``text`` with control characters written as ``\\xNN`` / ``\\uNNNN`` escapes;
    ``one_line``: newlines and tabs too (a file name or a value set inside a message)."""
    pattern = _CONTROL_IN_LINE if one_line else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def shown(text: object) -> str:
    """Untrusted text made safe to put in rich markup: controls escaped, markup escaped."""
    return escape(printable(str(text)))


@contextmanager
def progress(err: Console, description: str) -> Iterator[ProgressCallback]:
    """A ``(phase, done, total)`` callback: a transient rich bar on a terminal, else plain lines
    ``phase  done/total  elapsed``: the first, the last of each phase, and at most one a second
    between (a log keeps every line, so a fast run prints two and a long QEMU run one a second)."""
    def phase(text: str) -> str:
        return text if text.startswith(description) else f"{description}: {text}"

    if err.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task(shown(description), total=1)
            yield lambda text, done, total: bar.update(
                task, description=shown(phase(text)), completed=done, total=total)
        return
    start = time.monotonic()
    last: dict = {"state": None, "at": -PLAIN_PROGRESS_EVERY_S}

    def plain(text: str, done: int, total: int) -> None:
        now = time.monotonic() - start
        due = now - last["at"] >= PLAIN_PROGRESS_EVERY_S or done >= total
        if due and (text, done) != last["state"]:
            err.print(f"{shown(phase(text))}  {done}/{total}  {now:.1f} s", highlight=False)
            last.update(state=(text, done), at=now)

    yield plain


def quiet_on_closed_pipe() -> int:
    """After a BrokenPipeError on stdout (``tinypower ... | head``): point stdout at /dev/null so
    the interpreter's final flush cannot print a traceback, and give the SIGPIPE exit code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + 13  # SIGPIPE, as a shell reports a command killed by a closed pipe
