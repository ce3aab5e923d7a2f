"""Checks for the TOML files a user writes (boards, SUTs): every key, type and range, before
anything runs.

A schema maps each key to ``(required, check)``; a check is a nested schema (a table) or a
:class:`Rule` that says what it expects. :func:`problems` returns one line per problem, naming
the file, the key, what was expected and what was found, so a user fixes them all at once
instead of meeting them one traceback at a time mid-run.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Rule:
    """A value check: ``ok(value)`` and the words for what it expects."""

    expected: str
    ok: Callable[[Any], bool]


Schema = Mapping[str, tuple[bool, Union[Rule, "Schema"]]]


def _is_int(v: Any) -> bool:
    return type(v) is int  # TOML integers; not bools, not floats


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def integer(least: int | None = None, most: int | None = None, unit: str = "") -> Rule:
    words = "an integer" + (f" ({unit})" if unit else "")
    if least is not None and most is not None:
        words += f" from {least} to {most}"
    elif least is not None:
        words += f" >= {least}"
    return Rule(words, lambda v: _is_int(v) and (least is None or v >= least)
                and (most is None or v <= most))


def number(above: float | None = None, least: float | None = None, most: float | None = None,
           unit: str = "") -> Rule:
    """A finite number (an integer is fine too) in the given range."""
    words = "a finite number" + (f" ({unit})" if unit else "")
    bounds = [f"> {above:g}" if above is not None else "",
              f">= {least:g}" if least is not None else "",
              f"<= {most:g}" if most is not None else ""]
    words += " " + " and ".join(b for b in bounds if b) if any(bounds) else ""
    return Rule(words.rstrip(), lambda v: _is_number(v)
                and (above is None or v > above) and (least is None or v >= least)
                and (most is None or v <= most))


def text(nonempty: bool = True) -> Rule:
    return Rule("a non-empty string" if nonempty else "a string",
                lambda v: isinstance(v, str) and (bool(v.strip()) or not nonempty))


def choice(options: Iterable[str]) -> Rule:
    opts = tuple(options)
    return Rule(f"one of {', '.join(opts)}", lambda v: isinstance(v, str) and v in opts)


def safe_name() -> Rule:
    return Rule("a name of letters, digits, '.', '-' and '_' (up to 64, not starting with "
                "'.'), as it becomes part of folder names",
                lambda v: isinstance(v, str) and bool(SAFE_NAME.match(v)))


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))


def list_of(rule: Rule, nonempty: bool = True) -> Rule:
    return Rule(f"a {'non-empty ' if nonempty else ''}list of {rule.expected}",
                lambda v: isinstance(v, list) and (bool(v) or not nonempty)
                and all(rule.ok(x) for x in v))


def either(*rules: Rule) -> Rule:
    return Rule(" or ".join(r.expected for r in rules), lambda v: any(r.ok(v) for r in rules))


def _found(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    text_ = repr(value)
    return text_ if len(text_) <= 60 else text_[:57] + "..."


def problems(data: Mapping[str, Any], schema: Schema, where: str,
             section: str = "") -> list[str]:
    """Every problem of ``data`` against ``schema``, one line each: ``WHERE: KEY: expected
    ..., found ...`` (unknown keys and missing required keys included)."""
    out: list[str] = []

    def key_name(key: str) -> str:
        return f"[{section}] {key}" if section else key

    for key in sorted(set(data) - set(schema)):
        out.append(f"{where}: {key_name(key)}: unknown key (expected one of "
                   f"{', '.join(schema)})")
    for key, (required, check) in schema.items():
        if key not in data:
            if required:
                what = check.expected if isinstance(check, Rule) else "a table"
                out.append(f"{where}: {key_name(key)}: missing (expected {what})")
            continue
        value = data[key]
        if isinstance(check, Rule):
            if not check.ok(value):
                out.append(f"{where}: {key_name(key)}: expected {check.expected}, "
                           f"found {_found(value)}")
        elif not isinstance(value, dict):
            out.append(f"{where}: {key_name(key)}: expected a table [{key}], "
                       f"found {_found(value)}")
        else:
            out += problems(value, check, where, f"{section}.{key}" if section else key)
    return out


def arg_count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``least`` (``--warmups -3`` is a usage error)."""
    def parse(text_: str) -> int:
        try:
            value = int(text_)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text_!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return parse


def arg_seconds(text_: str) -> float:
    """An argparse type: a finite number of seconds above 0 (not ``nan``, ``inf`` or ``-1``)."""
    try:
        value = float(text_)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text_!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text_!r} is not a finite number of seconds above 0")
    return value
