"""CLI handlers for ``tinypower results``, ``tinypower rescore`` and ``tinypower check``.

Registered by :func:`add_commands` from ``tinypower.cli``. Each handler takes the parsed
arguments and the stderr console, prints its table (or JSON on stdout) and returns the exit
code; a problem the user can fix is printed as one message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinypower.results.compliance import MIN_POWER_RUN_S, check_tree
from tinypower.results.db import DEFAULT_DB, FILTER_KEYS, StoreError, query, write_csv
from tinypower.results.logio import printable
from tinypower.results.record import RecordError, ResultRecord
from tinypower.results.recovery import notice_orphans, print_recovered, recover
from tinypower.results.rescore import RescoreError, TreeScan, parse_round, rescore_tree
from tinypower.results.session import SessionError
from tinypower.rules.tiny import MIN_WINDOW_S
from tinypower.schema import arg_seconds
from tinypower.terminal import console, shown

EXIT_FAIL = 1
EXIT_USAGE = 2
_STATUS_STYLE = {"match": "green", "mismatch": "red", "flagged": "bold red",
                 "unsupported": "yellow", "pass": "green", "warn": "yellow", "fail": "bold red"}
_ERRORS = (StoreError, RecordError, RescoreError, OSError, SessionError)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``results``, ``rescore`` and ``check`` on the ``tinypower`` subparsers."""
    r = sub.add_parser("results", help="list, filter and export stored results")
    r.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="the runs folder whose results.sqlite is listed (default: ./runs)")
    r.add_argument("--db", type=Path,
                   help=f"another result store (default: <runs-dir>/{DEFAULT_DB.name})")
    r.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep records where KEY=VALUE (also >=, <=, >, <, !=), matching what "
                        "the listing shows, case-insensitively; repeatable. Quote filters "
                        "with > or <, or the shell reads a redirect: --filter 'value>=1000' "
                        "--filter label=simulated --filter date=2026-12. Keys: "
                        f"{', '.join(FILTER_KEYS)}")
    out = r.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, metavar="FILE", help="write the records to a CSV file")
    out.add_argument("--json", action="store_true", help="print one JSON record per line")
    r.set_defaults(func=results_command)

    s = sub.add_parser("rescore", help="re-derive published MLPerf scores (or a session's) "
                                       "from their raw logs")
    s.add_argument("path", type=Path, help="a result folder, a session folder or a whole "
                                           "results tree")
    s.add_argument("--published-table", type=Path, metavar="FILE",
                   help="markdown table with folder/published/unit columns for folders that "
                        "carry no published value (default: the nearest CASES.md above PATH)")
    s.add_argument("--round", metavar="vX.Y", dest="round_",
                   help="the MLPerf round whose checker rules apply to power results (default: "
                        "from the path, e.g. inference_results_v2.1 or v2.1)")
    s.add_argument("--json", action="store_true", help="print one JSON object per case")
    s.set_defaults(func=rescore_command)

    p = sub.add_parser("prune", help="remove old session folders and their stored results "
                                     "(lists them first; --delete to remove)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="the runs folder (default: ./runs); its results.sqlite is updated")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="sessions last written more than DAYS days ago")
    p.add_argument("--keep", type=int, metavar="N",
                   help="keep the newest N sessions, prune the rest")
    p.add_argument("--delete", action="store_true",
                   help="really delete (without it: a dry run listing what would go)")
    p.set_defaults(func=prune_command)

    c = sub.add_parser("check", help="check a session or result folder against the MLPerf "
                                     "Tiny and power rules")
    c.add_argument("path", type=Path, help="a session folder, a result folder or a tree")
    c.add_argument("--min-window-s", type=arg_seconds, default=MIN_WINDOW_S,
                   help="minimum window length for sessions (default: 10, the MLPerf rule)")
    c.add_argument("--min-run-s", type=arg_seconds, default=MIN_POWER_RUN_S,
                   help="minimum power testing run (default: 600, the MLPerf rule)")
    c.add_argument("--published-table", type=Path, metavar="FILE",
                   help="published values for folders that carry none (default: CASES.md)")
    c.add_argument("--json", action="store_true", help="print one JSON object per case")
    c.set_defaults(func=check_command)


def _fail(err: Console, exc: Exception) -> int:
    err.print(f"[bold red]error:[/] {escape(printable(exc))}", highlight=False)
    return EXIT_USAGE


def _fmt(value: float | None, digits: int = 7) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def _value(record: ResultRecord) -> str:
    """The value with its expanded uncertainty (k=2) where the record carries one."""
    u = (record.extras or {}).get("uncertainty")
    if isinstance(u, int | float) and u == u and record.value is not None:
        return f"{_fmt(record.value)} ± {u:.3g} {record.unit}"
    return f"{_fmt(record.value)} {record.unit}"


def results_command(args: argparse.Namespace, err: Console) -> int:
    db = args.db or args.runs_dir / DEFAULT_DB.name
    try:
        # Sessions a killed run left running are marked and indexed before listing.
        print_recovered(recover(db.parent, db), err)
        records = query(db, args.filter)
        if args.csv:
            write_csv(records, args.csv)
            err.print(f"{len(records)} record(s) written to {args.csv}", highlight=False)
            return 0
    except _ERRORS as exc:
        return _fail(err, exc)
    if args.json:
        for r in records:
            print(json.dumps(r.to_dict()))
        return 0
    table = Table(title=f"tinypower results ({len(records)} in {shown(db)})")
    for col in ("date (UTC)", "board", "benchmark", "model", "monitor", "mode", "value",
                "label", "valid", "session"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.recorded_utc[:16].replace("T", " "), shown(r.system), shown(r.benchmark),
            shown(r.extras.get("model", "") if r.extras else ""), shown(r.meter), r.scenario,
            _value(r), r.measured_as.upper(),
            "[green]yes[/]" if r.valid else f"[red]no[/] {shown(', '.join(r.failed_rules))}"
            + (f": {shown(r.extras['reason'])}" if r.extras.get("reason") else ""),
            shown(Path(r.source).name),
        )
    console().print(table)
    return 0


def prune_command(args: argparse.Namespace, err: Console) -> int:
    from tinypower.results.prune import PruneError, prune, to_prune

    try:
        doomed = to_prune(args.runs_dir, args.older_than, args.keep)
    except PruneError as exc:
        return _fail(err, exc)
    total = sum(s.size_bytes for s in doomed)
    for s in doomed:
        print(f"{'deleting' if args.delete else 'would delete'} {shown(s.path)} "
              f"({s.size_bytes / 1e6:.1f} MB)")
    if not args.delete:
        err.print(f"dry run: {len(doomed)} session(s), {total / 1e6:.1f} MB; add --delete to "
                  "remove them", highlight=False)
        return 0
    removed = prune(args.runs_dir, doomed)
    err.print(f"deleted {len(doomed)} session(s) ({total / 1e6:.1f} MB) and {removed} stored "
              "result(s)", highlight=False)
    return 0


def rescore_command(args: argparse.Namespace, err: Console) -> int:
    scan = TreeScan()
    try:
        round_ = parse_round(args.round_) if getattr(args, "round_", None) else None
        cases = list(rescore_tree(args.path, args.published_table, round_, scan))
    except _ERRORS as exc:
        return _fail(err, exc)
    if args.json:
        for case in cases:
            print(json.dumps(case.to_json()))
    else:
        table = Table(title=f"rescored {len(cases)} case(s) under {escape(printable(args.path))}")
        for col in ("case", "kind", "published", "derived", "unit", "status", "reason"):
            table.add_column(col, overflow="fold")
        for case in cases:
            style = _STATUS_STYLE[case.status]
            table.add_row(
                escape(printable(_short(case.path, args.path))), case.kind,
                _fmt(case.published, 10), _fmt(case.derived, 10), escape(printable(case.unit)),
                f"[{style}]{case.status}[/]",
                escape(printable(case.reasons[0]) if case.reasons else ""),
            )
        console().print(table)
    # Folders that are not results of the kinds rescored: listed once per reason, on stderr so
    # that --json stays one case per line.
    for line in scan.skipped_summary():
        err.print(escape(line), highlight=False)
    return 0 if all(c.status == "match" for c in cases) else EXIT_FAIL


def check_command(args: argparse.Namespace, err: Console) -> int:
    notice_orphans(args.path, err)  # a session a killed run left `running`
    try:
        results = check_tree(args.path, args.min_window_s, args.published_table, args.min_run_s)
    except _ERRORS as exc:
        return _fail(err, exc)
    if not results:
        return _fail(err, RescoreError(f"no session or result folders under {args.path}"))
    if args.json:
        for case in results:
            print(json.dumps(case.to_json()))
    else:
        out = console()
        for case in results:
            table = Table(title=f"{escape(str(case.path))} ({case.kind})")
            for col in ("rule", "verdict", "evidence"):
                table.add_column(col, overflow="fold")
            for c in case.checks:
                style = _STATUS_STYLE[c.verdict]
                table.add_row(c.rule, f"[{style}]{c.verdict}[/]", escape(c.evidence))
            out.print(table)
    return EXIT_FAIL if any(c.failed for c in results) else 0


def _short(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or path.name
    except ValueError:
        return str(path)
