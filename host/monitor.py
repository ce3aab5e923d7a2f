"""``tinypower monitor -- CMD ...``: the energy of any command, stored like every other session.

The meters (this machine's RAPL and NVML by default, or ``--meter KIND[=ADDRESS]``) are opened
before anything else, so a meter that cannot be read ends the command with one line and exit 2
before a session folder exists. Then the command runs, its energy is one
:class:`~tinypower.api.EnergyMonitor` window, and a session folder under ``--runs-dir`` and a
record in its ``results.sqlite`` hold the result. The command's own exit status is returned; a
command that failed, or ran shorter than the meters' reading interval, gives an invalid record
that says why.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

EXIT_USAGE = 2


def add_commands(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("monitor", help="measure the energy of any command (RAPL, NVML or a "
                                       "meter) and store it: tinypower monitor -- CMD ...")
    m.add_argument("--meter", action="append", default=[], metavar="KIND[=ADDRESS]",
                   help="a series meter (rapl, nvml, ptd=HOST:PORT, redfish=URL, ipmi, "
                        "snmp_pdu=HOST, yokogawa=VISA); repeatable; default: this machine's "
                        "RAPL and NVML, whichever can be read")
    m.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the session folder and results.sqlite go (default: ./runs)")
    m.add_argument("--json", action="store_true", help="print the result record as JSON")
    m.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments, after --")
    m.set_defaults(func=monitor_command)


def monitor_command(args: argparse.Namespace, err: Console) -> int:
    from tinypower.api import EnergyMonitor, MonitorError
    from tinypower.terminal import shown

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        err.print("[bold red]error:[/] give the command to measure after --, e.g. "
                  "tinypower monitor -- python train.py", highlight=False)
        return EXIT_USAGE
    try:
        monitor = _open(args.meter, EnergyMonitor)
    except MonitorError as exc:
        err.print(f"[bold red]error:[/] {shown(exc)}", highlight=False)
        return EXIT_USAGE
    with monitor:
        err.print(f"measuring with {shown(', '.join(monitor.names))}", highlight=False)
        monitor.begin_window("command")
        try:
            code = subprocess.run(command, check=False).returncode
        except OSError as exc:  # not found, not executable: nothing ran, nothing to store
            monitor.end_window("command")
            err.print(f"[bold red]error:[/] cannot run {shown(command[0])}: {shown(exc)}",
                      highlight=False)
            return EXIT_USAGE
        window = monitor.end_window("command")
    record = _store(args.runs_dir, command, code, window, monitor.names)
    if args.json:
        from tinypower.results.strict_json import dumps_strict

        print(dumps_strict(record.to_dict()))
    else:
        print(f"{window.energy_j:.3f} J over {window.duration_s:.3f} s "
              f"(mean {window.mean_power_w:.3f} W) {record.measured_as.upper()}  "
              f"session: {record.source}")
        for why in record.extras["why_invalid"]:
            print(f"invalid: {why}")
        if window.note:
            print(f"note: {shown(window.note)}")
    return code


def _open(specs: list[str], monitor_class):
    if not specs:
        return monitor_class()
    from energy_monitor.series_meters import connect_series_meter
    from tinypower.api import POLL_INTERVAL_S, MonitorError

    meters = []
    try:
        for spec in specs:
            kind, _, address = spec.partition("=")
            # local counters are cheap to read: as often as the auto-detected ones
            fast = {"poll_interval_s": POLL_INTERVAL_S} if kind in ("rapl", "nvml") else {}
            meters.append(connect_series_meter(kind, address or None, **fast))
    except (ValueError, OSError, RuntimeError) as exc:
        for meter in meters:
            meter.close()
        raise MonitorError(f"cannot open meter {spec!r}: {exc}") from exc
    return monitor_class(meters)


def _store(runs_dir: Path, command: list[str], code: int, window, meters: list[str]):
    """The session folder and store row of one monitored command; returns the record."""
    from tinypower.results.db import DEFAULT_DB, add_records
    from tinypower.results.record import ResultRecord
    from tinypower.results.session import Session

    name = Path(command[0]).name or "command"
    session = Session(runs_dir, platform.node() or "host", name, "monitor",
                      config={"command": command, "meters": meters})
    failed = ([f"command exited with status {code}"] if code else []) + (
        ["the command ran shorter than the meters' reading interval: energy interpolated"]
        if window.interpolated else [])
    result = {"command": command, "exit_code": code, "start_s": window.start_s,
              "end_s": window.end_s, "duration_s": window.duration_s,
              "energy_j": window.energy_j, "per_meter_j": window.per_meter_j,
              "mean_power_w": window.mean_power_w, "readings": window.readings,
              "interpolated": window.interpolated, "note": window.note}
    session.write_json("results.json", result)
    session.finish("complete")
    record = ResultRecord(
        system=platform.node() or "host", scale="edge", benchmark=name, scenario="monitor",
        metric="energy", value=window.energy_j, unit="J", measured_as=window.measured_as,
        energy_j=window.energy_j, duration_s=window.duration_s, power_w=window.mean_power_w,
        meter=", ".join(meters), valid=not failed,
        failed_rules=tuple(rule for rule, why in (("monitor.exit_status", code),
                                                  ("monitor.resolution", window.interpolated))
                           if why),
        source=str(session.folder.resolve()), recorded_utc=datetime.now(UTC).isoformat(),
        extras={"command": " ".join(command), "exit_code": code, "why_invalid": failed},
    )
    add_records(runs_dir / DEFAULT_DB.name, [record])
    return record
