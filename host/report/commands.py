"""``tinypower export`` and ``tinypower report``: CLI handlers registered by :func:`add_commands`.

Kept out of ``cli.py`` so the measuring command's module stays about measuring; the handlers
follow its convention: ``handler(args, err) -> exit code``, errors a user can act on printed as
one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tinypower.report.html import ReportError, build_report
from tinypower.results.exports import (
    ExportError,
    SessionFolderError,
    export_power,
    export_tiny,
)

EXIT_USAGE = 2
EXPORTERS = {"tiny": export_tiny, "power": export_power}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``report`` on the ``tinypower`` subparsers."""
    e = sub.add_parser(
        "export", help="write sessions in the MLPerf Tiny submission or MLPerf power layout")
    e.add_argument("sessions", nargs="+", type=Path, metavar="SESSION",
                   help="session folder(s) made by `tinypower measure`")
    e.add_argument("--format", choices=sorted(EXPORTERS), required=True,
                   help="tiny: results/<system>/<bench>/<mode>/ as the MLCommons Tiny runner "
                        "writes it; power: results/<system>/<model>/<Scenario>/performance/"
                        "{run_1,ranging}/ as MLPerf inference power results")
    e.add_argument("--out", type=Path, required=True,
                   help="folder to write into (the <division>/<organization> level)")
    e.set_defaults(func=_export)

    r = sub.add_parser("report", help="one self-contained HTML report of one or more sessions")
    r.add_argument("sessions", nargs="+", type=Path, metavar="SESSION",
                   help="session folder(s) made by `tinypower measure`; at least one energy "
                        "session")
    r.add_argument("--out", type=Path, default=Path("report.html"),
                   help="HTML file to write (default: report.html)")
    r.set_defaults(func=_report)


def _fail(err: Console, exc: Exception) -> int:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    return EXIT_USAGE


def _export(args: argparse.Namespace, err: Console) -> int:
    exporter = EXPORTERS[args.format]
    try:
        for folder in args.sessions:
            print(exporter(folder, args.out))
    except (ExportError, SessionFolderError) as exc:
        return _fail(err, exc)
    return 0


def _report(args: argparse.Namespace, err: Console) -> int:
    try:
        path = build_report(args.sessions, args.out)
    except (ReportError, SessionFolderError, OSError) as exc:
        return _fail(err, exc)
    print(path)
    return 0
