"""``tinypower fleet`` and ``tinypower training-energy``: fleet energy from Prometheus or node
logs. Errors a user can act on are printed as one message; the exit code is 0 only for a
valid result (every node present, no gaps, the training rules passed). ``training-energy`` keeps
each result as a session folder under ``--runs-dir`` and adds it to the result store."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from energy_monitor.meter import MEASURED_AS
from energy_monitor.prometheus import (
    KINDS,
    TRANSPORTS,
    FleetEnergy,
    FleetQuery,
    PrometheusClient,
    read_fleet,
)
from energy_monitor.trace import TraceError
from tinypower.results.db import DEFAULT_DB, StoreError, add_session
from tinypower.results.record import RecordError
from tinypower.rules.training import (
    InterconnectEnergy,
    estimate_interconnect,
    no_interconnect,
)
from tinypower.scale.training import (
    TrainingEnergy,
    TrainingLogError,
    read_run_window,
    training_energy_from_csv,
    training_energy_from_prometheus,
    write_training_session,
)
from tinypower.terminal import console

EXIT_INVALID = 1
EXIT_USAGE = 2
_ERRORS = (ValueError, TraceError, RuntimeError, OSError)  # PrometheusError is a RuntimeError


def add_commands(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fleet", help="energy of many nodes over a window, from Prometheus")
    _telemetry_arguments(f, required=True)
    f.add_argument("--window", nargs=2, required=True, metavar=("START", "END"),
                   help="UTC epoch seconds or ISO 8601 times (naive times are UTC)")
    f.add_argument("--max-gap-s", type=float,
                   help="longest stretch between readings still integrated (default: 1.5 "
                        "sampling intervals)")
    f.add_argument("--expect-nodes", type=int, metavar="N",
                   help="the fleet has N nodes: fewer with readings makes the result invalid")
    f.add_argument("--system", default="",
                   help="name of the fleet in the result store (default: '<N>-node fleet')")
    f.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the session folder and results.sqlite go (default: runs)")
    f.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    f.set_defaults(func=fleet_command)

    t = sub.add_parser("training-energy",
                       help="MLPerf Training energy-to-train of a run (kJ, per node and total)")
    t.add_argument("--log", type=Path, required=True,
                   help="the run's MLPerf training log (:::MLLOG run_start/run_stop lines)")
    _telemetry_arguments(t, required=False)
    t.add_argument("--csv-dir", type=Path,
                   help="per-node logs instead of Prometheus: <node>.csv with time_s,power_w "
                        "or time_s,energy_j")
    t.add_argument("--interconnect-max-w", type=float,
                   help="interconnect max specified power (W), to estimate its energy")
    t.add_argument("--provisioning-ratio", type=float, default=1.0,
                   help="share of the interconnect provisioned to this run (default 1)")
    t.add_argument("--interconnect-j", type=float,
                   help="interconnect energy measured over the run (J), instead of estimating")
    t.add_argument("--system", default="",
                   help="name of the system in the result store and report (default: "
                        "'<N>-node fleet')")
    t.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the session folder is written (default: runs)")
    t.add_argument("--db", type=Path,
                   help="result store to add the result to (default: <runs-dir>/results.sqlite)")
    t.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    t.set_defaults(func=training_energy_command)


def _telemetry_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--prometheus", required=required, metavar="URL",
                   help="Prometheus base URL, e.g. http://prometheus:9090")
    p.add_argument("--query", metavar="PROMQL",
                   help="selector or expression giving each node's power (W) or energy "
                        "counter (J), e.g. node_power_watts{job=\"pdu\"}")
    p.add_argument("--kind", choices=KINDS, default="power",
                   help="power: a W gauge; energy: a J counter (resets handled); "
                        "default power")
    p.add_argument("--nodes-label", default="instance",
                   help="label naming the node (default: instance)")
    p.add_argument("--nodes", help="the nodes that must be present, comma-separated "
                                   "(default: every node the query returns)")
    p.add_argument("--nodes-file", type=Path, help="the nodes, one per line")
    p.add_argument("--step-s", type=float, default=1.0,
                   help="sampling interval (raw selectors) or evaluation step (expressions)")
    p.add_argument("--transport", choices=TRANSPORTS, default="auto",
                   help="how raw readings travel: remote-read (the TSDB's chunks, several "
                        "times faster), json (the query API) or auto (remote read, JSON when "
                        "the server refuses it or the query is an expression); default auto")
    p.add_argument("--measured-as", choices=[m for m in MEASURED_AS if m != "emulated"],
                   required=True,
                   help="how the telemetry was measured: hardware (PDU, BMC, meter), counter "
                        "(DCGM, RAPL) or simulated")


def parse_time(text: str) -> float:
    """UTC epoch seconds from a number or an ISO 8601 time (naive = UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give UTC epoch seconds or ISO 8601, e.g. "
                         "2024-05-01T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _nodes(args: argparse.Namespace) -> list[str] | None:
    text = []
    if args.nodes:
        text.append(args.nodes)
    if args.nodes_file:
        text.append(args.nodes_file.read_text())
    if not text:
        return None
    seen: dict[str, None] = {}
    for name in re.split(r"[,\s]+", " ".join(text)):
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _fail(err: Console, exc: Exception) -> int:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    return EXIT_USAGE


def fleet_command(args: argparse.Namespace, err: Console) -> int:
    try:
        if not args.query:
            raise ValueError("--query is required: the PromQL giving each node's W or J")
        start_s, end_s = parse_time(args.window[0]), parse_time(args.window[1])
        what = FleetQuery(args.query, args.nodes_label, args.kind, step_s=args.step_s,
                          transport=args.transport)
        result = read_fleet(PrometheusClient(args.prometheus), what, start_s, end_s,
                            _nodes(args), max_gap_s=args.max_gap_s,
                            measured_as=args.measured_as)
        result.expected_nodes = args.expect_nodes
        folder = store_fleet_session(result, args.runs_dir, args.system, args.query)
    except _ERRORS as exc:
        return _fail(err, exc)
    if args.json:
        print(json.dumps({**result.to_dict(), "session": str(folder)}))
    else:
        _print_fleet(result)
        console().print(f"session: {escape(str(folder))}", highlight=False)
    return 0 if result.valid else EXIT_INVALID


def store_fleet_session(result: FleetEnergy, runs_dir: Path, system: str, query: str) -> Path:
    """A session folder (``session.json``, ``results.json``) under ``runs_dir`` and a record
    in its result store, as every session kind has; returns the folder."""
    from tinypower.results.db import add_records
    from tinypower.results.record import ResultRecord
    from tinypower.results.session import Session

    name = system or f"{len(result.nodes)}-node fleet"
    session = Session(runs_dir, re.sub(r"[^A-Za-z0-9_.-]+", "_", name), "fleet", "window",
                      config={"query": query, "source": result.source})
    session.write_json("results.json", result.to_dict())
    session.finish("complete")
    add_records(runs_dir / DEFAULT_DB.name, [ResultRecord(
        system=name, scale="fleet", benchmark="fleet", scenario="window", metric="energy",
        value=result.total_energy_j / 1000, unit="kJ", measured_as=result.measured_as,
        energy_j=result.total_energy_j, duration_s=result.duration_s,
        power_w=result.total_energy_j / result.duration_s if result.duration_s > 0 else None,
        meter=f"prometheus {query}", valid=result.valid,
        failed_rules=("fleet.readings",) if not result.valid else (),
        source=str(session.folder.resolve()), recorded_utc=datetime.now(UTC).isoformat(),
        extras={"nodes": len(result.nodes), "problems": result.problems[:20]},
    )])
    return session.folder


def _print_fleet(result: FleetEnergy, title: str = "fleet energy") -> None:
    out = console()
    table = Table(title=f"{title} ({result.measured_as.upper()})")
    for col in ("node", "energy kJ", "coverage", "readings", "median interval s", "resets"):
        table.add_column(col)
    for name, n in list(result.nodes.items())[:50]:
        table.add_row(name, f"{n.energy_j / 1000:.3f}", f"{n.coverage:.2%}", str(n.readings),
                      f"{n.median_interval_s:.3f}", str(n.resets))
    out.print(table)
    if len(result.nodes) > 50:
        out.print(f"... {len(result.nodes) - 50} more nodes (--json lists all)")
    out.print(f"total {result.total_energy_j / 1000:.3f} kJ over {result.duration_s:.3f} s, "
              f"{len(result.nodes)} nodes ({_how(result)}: {escape(result.source)})",
              highlight=False)
    for problem in result.problems[:50]:
        out.print(f"[red]invalid:[/] {escape(problem)}", highlight=False)
    if len(result.problems) > 50:
        out.print(f"[red]... {len(result.problems) - 50} more problems (--json lists all)[/]")


def _interconnect(args: argparse.Namespace, duration_s: float) -> InterconnectEnergy:
    if args.interconnect_j is not None and args.interconnect_max_w is not None:
        raise ValueError("give --interconnect-j (measured) or --interconnect-max-w "
                         "(estimated), not both")
    if args.interconnect_j is not None:
        return InterconnectEnergy(args.interconnect_j, "measured",
                                  f"measured: {args.interconnect_j:g} J")
    if args.interconnect_max_w is not None:
        return estimate_interconnect(args.interconnect_max_w, duration_s,
                                     args.provisioning_ratio)
    return no_interconnect()


def training_energy_command(args: argparse.Namespace, err: Console) -> int:
    try:
        if (args.prometheus is None) == (args.csv_dir is None):
            raise ValueError("give the node energy source: --prometheus URL --query Q, or "
                             "--csv-dir DIR (one of them)")
        run = read_run_window(args.log)
        interconnect = _interconnect(args, run.duration_s)
        if args.csv_dir is not None:
            result = training_energy_from_csv(run, args.csv_dir, _nodes(args), interconnect,
                                              measured_as=args.measured_as)
        else:
            if not args.query:
                raise ValueError("--query is required with --prometheus")
            what = FleetQuery(args.query, args.nodes_label, args.kind, step_s=args.step_s,
                              transport=args.transport)
            result = training_energy_from_prometheus(
                run, PrometheusClient(args.prometheus), what, _nodes(args), interconnect,
                measured_as=args.measured_as)
    except (*_ERRORS, TrainingLogError) as exc:
        return _fail(err, exc)
    try:
        folder = write_training_session(result, args.runs_dir, args.system)
    except OSError as exc:
        return _fail(err, exc)
    try:  # every session is indexed in its store, as `tinypower measure` does
        add_session(args.db or args.runs_dir / DEFAULT_DB.name, folder)
    except (RecordError, StoreError, sqlite3.Error) as exc:
        # The session folder holds everything; the store is an index that can be rebuilt.
        err.print(f"[yellow]note:[/] not added to the result store: {escape(str(exc))}",
                  highlight=False)
    if args.json:
        print(json.dumps({**result.to_dict(), "session": str(folder)}))
    else:
        _print_training(result)
        console().print(f"session: {escape(str(folder))}", highlight=False)
    return 0 if result.valid else EXIT_INVALID


def _print_training(result: TrainingEnergy) -> None:
    _print_fleet(result.fleet, title=f"energy-to-train {result.run.benchmark or ''}".strip())
    out = console()
    out.print(f"energy-to-train [bold]{result.energy_kj:.3f} kJ[/] ({result.node_count} nodes, "
              f"{result.run.duration_s:.3f} s, interconnect "
              f"{result.interconnect.energy_j / 1000:.3f} kJ {result.interconnect.how}), "
              f"valid: {'yes' if result.valid else 'no'}", highlight=False)
    for c in result.checks:
        mark = "[green]ok[/]" if c.passed else "[red]FAIL[/]"
        out.print(f"{mark} {c.rule}: {escape(c.message)}", highlight=False)


def _how(result: FleetEnergy) -> str:
    """Where the readings came from: how they were fetched and over which API, or logs."""
    if not result.fetch:
        return "logs"
    return f"{result.fetch} over {result.transport}" if result.transport else result.fetch
