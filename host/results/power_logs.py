"""Readers for MLPerf Inference power result folders (``run_1/``, ``ranging/``, ``power/``).

``spl.txt`` is PTDaemon's sample log (one line a second: ``Time,<%m-%d-%Y %H:%M:%S.%f>,Watts,
<total>,...``); ``mlperf_log_detail.txt`` is LoadGen's ``:::MLLOG {json}`` log, of which the
first occurrence of each key counts. Our own scaling-layer runs write the same two files, so one
scorer reads ours and published ones.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tinypower.results.logio import ResultFileError, lines, parse_json, printable, read_text
from tinypower.rules.power import PowerSample, PowerScore, ranging_check, score_power

SPL_TIME_FORMAT = "%m-%d-%Y %H:%M:%S.%f"


class PowerLogError(ResultFileError):
    """A power result file is missing or malformed; the message names it."""


def read_spl(path: Path, time_lines_only: bool = False) -> list[PowerSample]:
    """Total-Watts samples of an ``spl.txt``; malformed lines are an error naming the line."""
    if not path.is_file():
        raise PowerLogError(f"{path} is missing: the analyzer's sample log is needed")
    samples = []
    for lineno, line in enumerate(lines(_text(path)), 1):
        if not line.strip() or (time_lines_only and not line.startswith("Time")):
            continue
        fields = line.split(",")
        try:
            if fields[0] != "Time" or fields[2] != "Watts":
                raise ValueError("expected 'Time,<time>,Watts,<value>,...'")
            watts = float(fields[3])
            if watts != watts or abs(watts) == float("inf"):
                raise ValueError(f"{fields[3]!r} W is not a finite number")
            samples.append(PowerSample(datetime.strptime(fields[1], SPL_TIME_FORMAT), watts))
        except (IndexError, ValueError) as exc:
            why = printable(str(exc))[:120]
            raise PowerLogError(f"{path}:{lineno}: not an spl.txt sample line ({why})") from None
    return samples


def read_mlperf_log(path: Path) -> dict[str, object]:
    """First value of each key in a LoadGen ``mlperf_log_detail.txt``."""
    if not path.is_file():
        raise PowerLogError(f"{path} is missing: LoadGen's detail log is needed")
    values: dict[str, object] = {}
    for lineno, line in enumerate(lines(_text(path)), 1):
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = parse_json(line.removeprefix(":::MLLOG "), f"{path}:{lineno}")
        except ResultFileError as exc:
            raise PowerLogError(f"malformed MLLOG line: {exc}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise PowerLogError(f"{path}:{lineno}: MLLOG line is not an object with a key")
        values.setdefault(entry["key"], entry.get("value"))
    return values


def _text(path: Path) -> str:
    try:
        return read_text(path)
    except ResultFileError as exc:
        raise PowerLogError(str(exc)) from None


def loadgen_window(log: dict[str, object], path: Path) -> tuple[datetime, datetime]:
    try:
        begin = datetime.strptime(str(log["power_begin"]), SPL_TIME_FORMAT)
        end = datetime.strptime(str(log["power_end"]), SPL_TIME_FORMAT)
    except KeyError as exc:
        raise PowerLogError(f"{path} has no {exc.args[0]}: not a power run's LoadGen log") from None
    except ValueError as exc:
        why = printable(str(exc))[:120]
        raise PowerLogError(f"{path}: power_begin/power_end unreadable ({why})") from None
    if end <= begin:
        raise PowerLogError(f"{path}: power_end {end} is not after power_begin {begin}")
    return begin, end


def score_run_dir(
    run_dir: Path, joules_per_query: bool = False, positive_only: bool = False,
    time_lines_only: bool = False,
) -> PowerScore:
    """Score one ``run_1`` or ``ranging`` folder.

    ``joules_per_query`` (v2.1 units), ``positive_only`` (v3.1+) and ``time_lines_only``
    (v4.1+) select the checker era's rules; see :func:`era_rules`.
    """
    detail = run_dir / "mlperf_log_detail.txt"
    log = read_mlperf_log(detail)
    begin, end = loadgen_window(log, detail)
    scenario = str(log.get("effective_scenario", ""))
    count = log.get("result_query_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 0 < count < 10**15):
        raise PowerLogError(f"{detail}: result_query_count {printable(repr(count))[:40]} is not "
                            "a positive count")
    try:
        return score_power(
            scenario, read_spl(run_dir / "spl.txt", time_lines_only), begin, end,
            count, joules_per_query, positive_only,
        )
    except PowerLogError:
        raise
    except ValueError as exc:
        raise PowerLogError(f"{run_dir}: {printable(str(exc))}") from None


def era_rules(version: tuple[int, int] | None) -> dict[str, bool]:
    """The checker's per-round choices for an MLPerf Inference round ``(major, minor)``.

    J/query up to v2.1 (mJ/query from v3.0), only samples > 0 W from v3.1, only ``Time`` lines
    from v4.1 (``published-logs.md`` section 5). An unknown round gets the current rules.
    """
    v = version or (99, 0)
    return {
        "joules_per_query": v < (3, 0),
        "positive_only": v >= (3, 1),
        "time_lines_only": v >= (4, 1),
    }


def score_power_folder(
    folder: Path, joules_per_query: bool = False, positive_only: bool = False,
    time_lines_only: bool = False,
) -> dict:
    """Testing score, ranging score and the ranging check of a ``<Scenario>`` folder."""
    era = {"joules_per_query": joules_per_query, "positive_only": positive_only,
           "time_lines_only": time_lines_only}
    testing = score_run_dir(folder / "run_1", **era)
    ranging = score_run_dir(folder / "ranging", **era)
    ok, message = ranging_check(testing.average_power_w, ranging.average_power_w)
    return {"testing": testing, "ranging": ranging, "ranging_ok": ok, "ranging_message": message}
