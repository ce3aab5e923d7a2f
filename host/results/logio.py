"""Defensive reading of published result files: bytes first, a size cap, no surprises.

Why: ``tinypower rescore`` is pointed at whole results repositories that anyone can have edited:
non-UTF-8 bytes, JSON of the wrong shape or nested a thousand deep, numbers of thousands of
digits, multi-gigabyte files and terminal escape sequences in names all occur. Every reader goes
through these helpers so that such a file gives one :class:`ResultFileError` naming it and the
problem, never a traceback, and never reads gigabytes into memory.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from tinypower import terminal

# The largest legitimate published file is an MLCommons-runner results.json holding a 20-minute
# 1 kHz power capture (a few tens of MB); 256 MiB leaves a wide margin and keeps memory bounded.
MAX_FILE_BYTES = 256 * 2**20
MAX_INT_DIGITS = 18  # counts, laps and sample indices all fit; anything longer is damage


class ResultFileError(ValueError):
    """A result file cannot be read or makes no sense; the message names the file and why."""


def printable(text: object) -> str:
    """Text from a result file, safe inside a one-line message: every control character
    escaped, newlines and tabs included (:func:`tinypower.terminal.printable`)."""
    return terminal.printable(text, one_line=True)


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refusing one above ``limit`` before reading it."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise ResultFileError(f"{printable(path)}: not a regular file")
        size = st.st_size
        if size > limit:
            raise ResultFileError(
                f"{printable(path)}: {size / 2**20:.0f} MiB, above the {limit / 2**20:.0f} MiB "
                "a published result file can be: not read (the wrong file, or damage?)"
            )
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        why = exc.strerror or exc
        raise ResultFileError(f"{printable(path)}: cannot be read ({why})") from None
    if len(data) > limit:
        raise ResultFileError(f"{printable(path)}: grew above {limit} bytes while being read")
    return data


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The file as UTF-8 text, undecodable bytes replaced (logs are ASCII; damage stays visible)."""
    return read_bytes(path, limit).decode("utf-8", errors="replace")


def lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only, a trailing ``\\r`` dropped.

    ``str.splitlines`` also splits on a lone ``\\r`` (which DUTs print mid-line) and on
    form feeds, so its line numbers would not be the file's.
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse_json(text: str, where: object) -> Any:
    """``json.loads`` whose every failure (syntax, depth, a 5000-digit number) is one error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ResultFileError(f"{printable(where)}: JSON nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing thousands of digits
        raise ResultFileError(f"{printable(where)}: not valid JSON ({exc})") from None


def read_json(path: Path) -> Any:
    """The file parsed as JSON (see :func:`parse_json`)."""
    return parse_json(read_text(path), path)


def to_int(text: str, where: object) -> int:
    """A decimal count from a log; more than :data:`MAX_INT_DIGITS` digits is an error."""
    digits = text.strip()
    if not digits.isdigit() or len(digits) > MAX_INT_DIGITS:
        shown = digits if len(digits) <= 24 else f"{digits[:20]}... ({len(digits)} characters)"
        raise ResultFileError(f"{printable(where)}: {printable(shown)!s} is not a plausible count")
    return int(digits)


def json_int(value: Any, where: object) -> int:
    """An integer from decoded JSON (int, integral float or digit string), else an error."""
    if isinstance(value, bool):
        raise ResultFileError(f"{printable(where)}: expected an integer, got {value!r}")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INT_DIGITS:
            raise ResultFileError(f"{printable(where)}: integer out of range")
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 10**MAX_INT_DIGITS:
        return int(value)
    if isinstance(value, str):
        return to_int(value, where)
    shown = printable(repr(value)[:40])
    raise ResultFileError(f"{printable(where)}: expected an integer, got {shown}")


def json_float(value: Any, where: object) -> float:
    """A finite number from decoded JSON, else an error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = printable(repr(value)[:40])
        raise ResultFileError(f"{printable(where)}: expected a number, got {shown}")
    try:
        number = float(value)
    except OverflowError:
        raise ResultFileError(f"{printable(where)}: number out of range") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ResultFileError(f"{printable(where)}: {number} is not a finite number")
    return number
