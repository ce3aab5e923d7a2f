"""``tinypower measure --sut FILE|local [--quick]``: an edge or datacenter SUT under the MLPerf
power workflow (a director owning the meters, a client running LoadGen, ranging then testing).

``--sut FILE`` reads a SUT TOML (``suts/`` has examples). With ``[director] connect`` set, this
machine is the SUT and the director runs elsewhere; otherwise a director starts in this process
on loopback and the client talks to it over TCP, as it would to a remote one.

``--sut local`` measures this machine as an edge SUT: the MLPerf Tiny KWS model (the cached
reference model, else the built-in one) under LoadGen in SingleStream, metered by RAPL when the
counters are readable, else by the PTDaemon simulator whose power model follows this machine's
measured CPU utilisation (results labelled simulated). About three minutes; ``--quick`` is a
sub-minute smoke run that is not rule-compliant and says so.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from energy_monitor.meter import MeterError
from tinypower.preflight import PreflightError, check_sut_meters
from tinypower.results.db import DEFAULT_DB, StoreError, add_session
from tinypower.results.record import (
    RecordError,
    check_passed,
    power_validity,
    record_from_power_session,
)
from tinypower.results.strict_json import dumps_strict
from tinypower.scale.client import ClientError, DirectorConnection, SessionOutcome, run_session
from tinypower.scale.director import Director, DirectorConfig, DirectorError
from tinypower.scale.powerdev import PowerDevError
from tinypower.scale.sut import (
    Limits,
    MeterConfig,
    RangingPolicy,
    Sut,
    SutError,
    load_sut,
)
from tinypower.scale.workload import LoadGenSpec, WorkloadError
from tinypower.terminal import console

EXIT_INVALID = 1
EXIT_USAGE = 2
LOCAL_DURATION_S = 60.0  # "a short run (minutes)": two phases of a minute each
QUICK_DURATION_S = 3.0
QUICK_SETTLE_S = 0.5
QUICK_SAMPLE_PERIOD_S = 0.25  # the simulated analyzer samples at 4 Hz in quick runs
QUICK_NOTE = ("quick smoke run: 3 s LoadGen windows and 0.5 s analyzer settling; not "
              "rule-compliant (MLPerf needs at least 600 s and 10 s settling)")


def measure_sut(args: argparse.Namespace, err: Console) -> int:
    simulator = None
    try:
        if args.sut == "local":
            sut, simulator, notes = local_sut(args.quick, args.runs_dir)
        else:
            sut = load_sut(Path(args.sut))
            notes = []
            if args.quick:
                sut = quick(sut)
                notes.append(QUICK_NOTE)
            if sut.output is None:  # every session kind under --runs-dir, in its one store
                sut = replace(sut, output=args.runs_dir / "power")
            if sut.connect is None:  # the director runs here: its meters must open here
                check_sut_meters(sut.meters)
        outcome = measure(sut, args.runs_dir / "power-client",
                          lambda text: err.print(escape(text), highlight=False),
                          store=args.runs_dir / DEFAULT_DB.name)
    except (SutError, DirectorError, ClientError, WorkloadError, MeterError, OSError,
            PreflightError, PowerDevError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    finally:
        if simulator is not None:
            simulator.close()
    notes += outcome.notes
    if args.json:
        print(dumps_strict({"session": outcome.session, "folder": outcome.folder,
                            "error": outcome.error, "notes": notes, **outcome.results}))
    else:
        print_outcome(outcome, notes)
    return 0 if outcome.ok else EXIT_INVALID


def measure(sut: Sut, work_dir: Path, progress=lambda text: None,
            store: Path | None = None) -> SessionOutcome:
    """Run one session of ``sut``: against its remote director, or a director started here
    (indexing the session in ``store``, default its output folder's results.sqlite), or by
    power-dev's own server and client (``engine = "power-dev"``)."""
    if sut.engine == "power-dev":
        return _power_dev(sut, progress, store)
    if sut.connect is not None:
        token = os.environ.get(sut.token_env, "")
        if not token:
            raise SutError(f"set {sut.token_env} to the director's shared token")
        return _client(sut.connect, token, sut, work_dir, progress)
    token = secrets.token_hex(16)  # the director and client both live in this process
    director = Director(DirectorConfig(
        out_dir=sut.output or Path("runs/power"), meters=sut.meters, token=token,
        listen=(sut.listen[0], 0),
        ranging=sut.ranging, limits=sut.limits, store=store,
    ))
    address = director.start()
    progress(f"director on {address[0]}:{address[1]}, sessions in {director.out_dir}")
    try:
        return _client(address, token, sut, work_dir, progress)
    finally:
        director.close()


def _power_dev(sut: Sut, progress, store: Path | None = None) -> SessionOutcome:
    from tinypower.scale.powerdev import run_power_dev, score_run

    run = run_power_dev(sut.power_dev, sut.workload, sut.name, sut.output, progress)
    results = score_run(run)
    # results.json beside power-dev's files (its checker ignores files it does not know), and
    # the session in the output folder's result store, as the director does with its own
    (run.folder / "results.json").write_text(dumps_strict(results, indent=2) + "\n")
    notes = []
    try:
        add_session(store or sut.output / DEFAULT_DB.name, run.folder)
    except (RecordError, StoreError, sqlite3.Error) as exc:
        notes.append(f"not added to the result store: {exc}")
    return SessionOutcome(run.folder.name, str(run.folder), results, notes=notes)


def _client(address: tuple[str, int], token: str, sut: Sut, work_dir: Path,
            progress) -> SessionOutcome:
    conn = DirectorConnection(address, token)
    try:
        return run_session(conn, sut.workload, work_dir, sut.name, progress=progress)
    finally:
        conn.close()


def quick(sut: Sut) -> Sut:
    """The same SUT with short LoadGen windows and settling (a smoke test of the setup)."""
    workload = sut.workload
    if isinstance(workload, LoadGenSpec):
        workload = replace(workload, min_duration_s=QUICK_DURATION_S, min_query_count=1)
    return replace(sut, workload=workload,
                   ranging=replace(sut.ranging, settle_s=QUICK_SETTLE_S))


def local_sut(quick_run: bool, runs_dir: Path) -> tuple[Sut, Any, list[str]]:
    """This machine as an edge SUT; returns the SUT, the simulator to close (or None) and
    notes for the user."""
    from tinypower.models import resolve_model
    from tinypower.suites.benchmarks import get_suite

    notes: list[str] = []
    model = resolve_model(get_suite("kws01"), None)
    if model.path is not None:
        model_path = model.path
    else:  # the built-in model: LoadGen's child process needs it as a file. Kept in the runs
        # dir under its hash (one file, reused by every run), not in a temp folder per run.
        model_path = runs_dir / "models" / f"kws01-synthetic-{model.sha256[:16]}.tflite"
        if not model_path.is_file():
            model_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = model_path.with_name(f"{model_path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(model.data)
            tmp.replace(model_path)
    if model.note:
        notes.append(model.note)
    meter, simulator, why = _local_meter(quick_run)
    if why:
        notes.append(why)
    workload = LoadGenSpec(model_path, "SingleStream",
                           QUICK_DURATION_S if quick_run else LOCAL_DURATION_S,
                           min_query_count=1 if quick_run else 100)
    settle = QUICK_SETTLE_S if quick_run else RangingPolicy().settle_s
    if quick_run:
        notes.append(QUICK_NOTE)
    sut = Sut(name="local", workload=workload, meters=[meter],
              ranging=RangingPolicy(settle_s=settle), limits=Limits(),
              output=runs_dir / "power")
    return sut, simulator, notes


def _local_meter(quick_run: bool) -> tuple[MeterConfig, Any, str]:
    """RAPL when readable; else the PTDaemon simulator following this machine's CPU load."""
    from energy_monitor.series_meters import connect_series_meter

    try:
        connect_series_meter("rapl", None).close()
        return MeterConfig("rapl", None, "rapl"), None, ""
    except (MeterError, OSError, ValueError) as exc:
        reason = str(exc).split(":")[0]
    from energy_monitor.sim.ptd_sim import PtdSimulator, cpu_utilisation_power

    simulator = PtdSimulator(cpu_utilisation_power(),
                             sample_period_s=QUICK_SAMPLE_PERIOD_S if quick_run else None)
    host, port = simulator.start()
    meter = MeterConfig("ptd", f"{host}:{port}", "ptd",
                        {"measured_as": "simulated", "timeout_s": 5.0})
    return meter, simulator, (
        f"RAPL is not readable here ({reason}); measuring with the PTDaemon simulator, whose "
        "power follows this machine's CPU utilisation: results are SIMULATED")


def _with_uncertainty(folder: str) -> str:
    """The testing value ± U (k=2) from the session's record, when its folder is on this
    machine (a local director); empty otherwise."""
    try:
        record = record_from_power_session(Path(folder))
    except (RecordError, OSError):
        return ""
    u = record.extras.get("uncertainty")
    if record.value is None or not isinstance(u, int | float):
        return ""
    return f"{record.value:.4f} ± {u:.3g} {record.unit} (k=2)"


def print_outcome(outcome: SessionOutcome, notes: list[str]) -> None:
    out = console()
    r = outcome.results
    table = Table(title="tinypower power results")
    for col in ("phase", "scenario", "result", "average power", "samples/J", "window",
                "measured as"):
        table.add_column(col)
    for phase, meters in r.get("phases", {}).items():
        for name, m in meters.items():
            if "value" not in m:
                table.add_row(f"{phase} ({name})", "-", escape(m.get("error", "-")), "", "", "",
                              "")
                continue
            spj = m.get("samples_per_joule")
            table.add_row(f"{phase} ({name})", m["scenario"], f"{m['value']:.4f} {m['unit']}",
                          f"{m['average_power_w']:.3f} W", f"{spj:.3f}" if spj else "-",
                          f"{m['window_s']:.1f} s", str(m.get("measured_as", "?")).upper())
    out.print(table)
    bound = r.get("alignment_bound_s")
    if bound is not None:
        out.print(f"alignment bound (measured clock skew): {bound * 1e3:.2f} ms")
    if uncertain := _with_uncertainty(outcome.folder):
        out.print(f"testing result: {uncertain}", highlight=False)
    for c in r.get("checks", []):
        if not check_passed(c):
            label = "[red]invalid:[/]" if c["kind"] == "validity" else "[yellow]not compliant:[/]"
            name = c["name"].replace("_", " ")  # "not compliant: run length: ..."
            out.print(f"{label} {escape(name + ': ' + c['message'])}", highlight=False)
    if outcome.error:
        out.print(f"[bold red]run failed:[/] {escape(outcome.error)}", highlight=False)
    valid = power_validity(r)[0]
    out.print(f"valid: {'[green]yes[/]' if valid else '[red]no[/]'}, MLPerf-compliant: "
              f"{'yes' if valid and r.get('compliant') is True else 'no'}", highlight=False)
    out.print(f"session: {outcome.folder}", highlight=False)
    for note in notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
