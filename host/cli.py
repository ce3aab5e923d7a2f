"""The ``tinypower`` command.

``tinypower measure`` runs one or more MLPerf Tiny modes on a board and prints a result table
(or JSON records with ``--json``); without ``--board`` it measures the board discovery finds, or
the virtual lab when nothing is attached, and says which. ``tinypower doctor`` lists what is
attached and what each mode still lacks; ``tinypower flash`` programs firmware through pyOCD;
``tinypower models fetch`` caches the MLPerf Tiny reference models; ``tinypower build`` turns
a model into C. ``measure --sut`` runs the MLPerf power workflow on an edge or datacenter SUT
(``scale/commands.py``). The result commands (``results``, ``rescore``, ``check``), the
sharing commands (``export``, ``report``) and the fleet commands (``fleet``,
``training-energy``) register themselves from their packages. Errors a user can act on are
printed as one message, never a traceback; the exit code of ``measure`` is 0 only when every
requested result is valid.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so `tinypower --help` starts fast
    from rich.console import Console

    from tinypower.boards import Board
    from tinypower.dut.hardware_bench import BenchPorts
    from tinypower.models import ResolvedModel
    from tinypower.runner import RunOutcome, RunRequest
    from tinypower.suites.benchmarks import Suite

EXIT_INVALID = 1  # a run failed or a rule was broken
EXIT_USAGE = 2  # the command could not start: bad option, board, model or dataset

DESCRIPTION = "Measure the energy efficiency of ML systems (MLPerf Tiny / MLPerf Power)."

# Every command, its one-line help, and the module whose add_commands() registers it (None: this
# file). Only the command being run has its options built and its module imported; the others
# are listed by name and help alone, which keeps `tinypower --help` free of numpy, matplotlib
# and pyOCD. tests/test_cli_startup.py checks these lines against the real registrations.
COMMANDS: dict[str, tuple[str | None, str]] = {
    "measure": (None, "run MLPerf Tiny modes on a board, or the MLPerf power workflow on a SUT "
                      "(--sut)"),
    "doctor": (None, "list attached boards, probes and energy monitors, and what each mode "
                     "still needs"),
    "flash": (None, "program firmware (.elf, .hex, .bin) through pyOCD"),
    "build": (None, "generate C for a .tflite model and compile it for a board"),
    "models": (None, "manage the MLPerf Tiny reference models"),
    "results": ("tinypower.results.commands", "list, filter and export stored results"),
    "rescore": ("tinypower.results.commands", "re-derive published MLPerf scores (or a "
                                              "session's) from their raw logs"),
    "check": ("tinypower.results.commands", "check a session or result folder against the "
                                            "MLPerf Tiny and power rules"),
    "monitor": ("tinypower.monitor", "measure the energy of any command (RAPL, NVML or a "
                                     "meter) and store it: tinypower monitor -- CMD ..."),
    "recover": ("tinypower.results.recovery", "mark and index sessions a killed or crashed run "
                                              "left running"),
    "reindex": ("tinypower.results.recovery", "rebuild the result store from the session "
                                              "folders"),
    "prune": ("tinypower.results.commands", "remove old session folders and their stored "
                                            "results (lists them first; --delete to remove)"),
    "export": ("tinypower.report.commands", "write sessions in the MLPerf Tiny submission or "
                                            "MLPerf power layout"),
    "report": ("tinypower.report.commands", "one self-contained HTML report of one or more "
                                            "sessions"),
    "fleet": ("tinypower.scale.fleet_commands", "energy of many nodes over a window, from "
                                                "Prometheus"),
    "training-energy": ("tinypower.scale.fleet_commands", "MLPerf Training energy-to-train of "
                                                          "a run (kJ, per node and total)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(_command_in(argv)).parse_args(argv)
    from tinypower.results.session import exit_code, terminating_signals_interrupt
    from tinypower.terminal import console, quiet_on_closed_pipe, shown

    err = console(stderr=True)
    try:
        with terminating_signals_interrupt():  # SIGTERM/SIGHUP end a run like Ctrl-C
            code = args.func(args, err)
        sys.stdout.flush()  # here, so a closed pipe is caught below and not at interpreter exit
        return code
    except BrokenPipeError:  # `tinypower ... | head`: the reader has all it wanted
        return quiet_on_closed_pipe()
    except KeyboardInterrupt as exc:  # one line, no traceback; the session says the rest
        folder = getattr(exc, "session_folder", None)
        err.print(f"interrupted ({str(exc) or 'Ctrl-C'})"
                  + (f": session marked interrupted, data kept in {folder}" if folder else ""),
                  highlight=False)
        return exit_code(exc)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        err.print(f"[bold red]error:[/] {shown(exc)}", highlight=False)
        return EXIT_USAGE


# Errors that mean the command could not start (one line, exit 2), by module: an error can only
# come from a module already imported, so checking sys.modules imports nothing.
USAGE_ERRORS = {
    "tinypower.boards": ("BoardError",), "tinypower.codegen": ("BUILD_ERRORS",),
    "tinypower.firmware": ("FirmwareBuildError",), "tinypower.flash": ("FlashError",),
    "tinypower.models": ("ModelResolutionError",), "tinypower.runner": ("RunError",),
    "tinypower.suites.benchmarks": ("SuiteError",), "tinypower.suites.datasets": ("DatasetError",),
    "tinypower.preflight": ("PreflightError",), "tinypower.results.session": ("SessionError",),
}


def _is_usage_error(exc: Exception) -> bool:
    return any(isinstance(exc, getattr(sys.modules[module], name))
               for module, names in USAGE_ERRORS.items() if module in sys.modules
               for name in names)


def _command_in(argv: list[str]) -> str | None:
    """The command named on the line (the top-level options take no values), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def _parser(command: str | None = None, everything: bool = False) -> argparse.ArgumentParser:
    """The parser, with full options for ``command`` (or for all commands when ``everything``,
    or when ``command`` is not one we know, so argparse names the mistake) and name and help
    alone for the rest."""
    parser = argparse.ArgumentParser(prog="tinypower", description=DESCRIPTION)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    everything = everything or (command is not None and command not in COMMANDS)
    chosen = COMMANDS[command][0] if command in COMMANDS else None
    modules_done: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module is None and (everything or name == command):
            _OWN_COMMANDS[name](sub)
        elif module is not None and (everything or module == chosen):
            if module not in modules_done:  # add_commands() registers all of its commands
                importlib.import_module(module).add_commands(sub)
                modules_done.add(module)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _add_measure(sub: argparse._SubParsersAction) -> None:
    from energy_monitor.sim.registry import SIMULATED_METERS
    from tinypower.dut.io_manager import KINDS as IO_MANAGER_KINDS
    from tinypower.runner import MODES
    from tinypower.schema import arg_count, arg_seconds
    from tinypower.suites.benchmarks import SUITES

    m = sub.add_parser("measure", help="run MLPerf Tiny modes on a board, or the MLPerf power "
                                       "workflow on a SUT (--sut)")
    m.add_argument("--board",
                   help="board name in boards/ or a board TOML path (default: the attached "
                        "board `tinypower doctor` finds, else the virtual lab sim-m4)")
    m.add_argument("--suite", default="kws01", choices=sorted(SUITES))
    m.add_argument("--monitor", choices=sorted(SIMULATED_METERS),
                   help="energy monitor for the virtual lab (default: the board file's)")
    m.add_argument("--interface", choices=IO_MANAGER_KINDS,
                   help="IO manager between host and DUT in energy mode (simulated in the "
                        "virtual lab)")
    m.add_argument("--port", help="a hardware board's serial port or pyserial URL (default: "
                                  "what `tinypower doctor` finds)")
    m.add_argument("--monitor-port",
                   help="the energy monitor's serial port, host:port (Otii) or serial number "
                        "(Joulescope) (default: what discovery finds)")
    m.add_argument("--interface-port", help="the IO manager's serial port (default: what "
                                            "discovery finds)")
    m.add_argument("--place", help="measure through a labgrid place: acquire it from the "
                                   "coordinator, use its dut/monitor/interface serial ports, "
                                   "release it at the end (needs tinypower[labgrid] and "
                                   "--board; see docs/board-farm.md)")
    m.add_argument("--coordinator", metavar="HOST:PORT",
                   help="the labgrid coordinator for --place (default: $LG_COORDINATOR, else "
                        "127.0.0.1:20408)")
    m.set_defaults(farm=None)  # --place's record, set once the place is acquired
    m.add_argument("--flash", action="store_true",
                   help="build tinypower's benchmark firmware for the board and model and flash "
                        "it through pyOCD before measuring (hardware boards)")
    m.add_argument("--mode", default="performance,energy",
                   help=f"comma-separated modes from {', '.join(MODES)} "
                        "(default: performance,energy)")
    m.add_argument("--model", help="a .tflite path, 'reference' (cached MLPerf Tiny model) or "
                                   "'synthetic' (built-in KWS); default: reference if cached, "
                                   "else synthetic")
    m.add_argument("--dataset", type=Path,
                   help="MLPerf Tiny dataset folder (y_labels.csv + input files); "
                        "default: seeded synthetic inputs")
    m.add_argument("--iterations", type=arg_count(1), help="inferences per window (default: "
                   "calibrated so each window lasts >= 10 s of DUT time)")
    m.add_argument("--warmups", type=arg_count(0), help="warm-up inferences before each window")
    m.add_argument("--verify-inputs", choices=("auto", "always", "never"), default="auto",
                   help="read each input back with `db print` (auto: only where it takes "
                        "<= 1.5 s on the link)")
    m.add_argument("--min-window-s", type=arg_seconds, default=10.0,
                   help="minimum window length; below 10 s results are invalid for MLPerf")
    m.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where session folders go (default: ./runs)")
    m.add_argument("--json", action="store_true",
                   help="print one JSON result record per mode on stdout (JSON Lines)")
    # measure --sut: the MLPerf power workflow (tinypower.scale.commands.measure_sut)
    m.add_argument(
        "--sut", help="measure an edge or datacenter SUT under the MLPerf power workflow: a "
                      "SUT TOML (see suts/), or 'local' for this machine")
    m.add_argument(
        "--quick", action="store_true",
        help="with --sut: a sub-minute smoke run (short LoadGen windows; not rule-compliant)")
    m.set_defaults(func=_measure)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("doctor", help="list attached boards, probes and energy monitors, and "
                                      "what each mode still needs")
    d.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    d.add_argument("--otii", type=_host_port, default="127.0.0.1:1905", metavar="HOST:PORT",
                   help="where to look for an Otii 3 server (default: 127.0.0.1:1905)")
    d.set_defaults(func=_doctor)


def _add_flash(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("flash", help="program firmware (.elf, .hex, .bin) through pyOCD")
    f.add_argument("image", type=Path, help="firmware image: .elf/.axf, .hex or .bin")
    f.add_argument("--board", help="board whose [pyocd] target and pack to use (default: the "
                                   "attached board, unless --target is given)")
    f.add_argument("--target", help="pyOCD target name (overrides the board file's)")
    f.add_argument("--pack", type=Path, help="CMSIS pack (.pack) that provides the target")
    f.add_argument("--probe", help="debug probe ID (any unique part of it) when several are "
                                   "attached")
    f.add_argument("--base-address", type=lambda text: int(text, 0),
                   help="flash address for a .bin image, e.g. 0x08000000")
    f.set_defaults(func=_flash)


def _add_build(sub: argparse._SubParsersAction) -> None:
    from tinypower.codegen import TOOLCHAINS

    b = sub.add_parser("build", help="generate C for a .tflite model and compile it for a board")
    b.add_argument("--model", required=True, type=Path, help="the .tflite file")
    b.add_argument("--board", required=True, help="board name in boards/ or a board TOML path")
    b.add_argument("--out", type=Path, default=Path("build"), help="output folder (default: build)")
    b.add_argument("--toolchain", choices=TOOLCHAINS, default="arm",
                   help="arm: arm-none-eabi-gcc for the board (default); host: gcc, for tests")
    b.set_defaults(func=_build)


def _add_models(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="manage the MLPerf Tiny reference models")
    msub = models.add_subparsers(dest="models_command", required=True)
    fetch = msub.add_parser("fetch", help="download the reference models into the local cache")
    fetch.set_defaults(func=_models_fetch)


_OWN_COMMANDS = {"measure": _add_measure, "doctor": _add_doctor, "flash": _add_flash,
                 "build": _add_build, "models": _add_models}


class _VersionAction(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import version

        print(f"tinypower {version('tinypower')}")
        parser.exit()


def _modes(text: str) -> list[str]:
    from tinypower.runner import MODES, RunError

    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise RunError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from "
                       f"{', '.join(MODES)}")
    return modes


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _board_and_ports(
    args: argparse.Namespace, err: Console
) -> tuple[Board, BenchPorts, str | None]:
    """The board (--board, else the one discovery finds, else the virtual lab, saying which on
    stderr), where its UART, monitor and IO manager are (options over discovery), and the
    debug probe discovery saw on it."""
    from tinypower.boards import load_board
    from tinypower.doctor import bench_ports, discover
    from tinypower.dut.hardware_bench import BenchPorts
    from tinypower.runner import RunError
    from tinypower.terminal import shown

    given = BenchPorts(args.port, args.monitor_port, args.interface_port)
    board = load_board(args.board) if args.board else None
    complete = board and given.dut and given.monitor and (
        given.interface or not board.needs_io_manager)
    if board is not None and (board.kind != "hardware" or complete and not args.flash):
        return board, given, None
    report = discover(otii_address=None)
    if board is None:
        if report.board_to_measure is None:
            raise RunError(report.suggestion)
        err.print(shown(report.suggestion), highlight=False)
        board = load_board(report.board_to_measure)
    found, probe = bench_ports(report, board)
    return board, BenchPorts(given.dut or found.dut, given.monitor or found.monitor,
                             given.interface or found.interface), probe


def _flash_benchmark_firmware(
    board: Board, suite: Suite, model: ResolvedModel, probe_id: str | None, energy: bool,
    err: Console,
) -> None:
    """--flash: build the benchmark firmware for this board and model, and program it."""
    from tinypower.firmware import build_firmware
    from tinypower.flash import FlashError, flash

    if board.kind != "hardware" or board.pyocd_target is None:
        raise FlashError(f"--flash programs hardware boards with a [pyocd] target; "
                         f"{board.name} is {board.kind}")
    # One image per UART baud: through an IO manager, energy mode talks at the board's
    # energy-mode rate, so performance and energy then need their own flash.
    baud = board.uart_baud.get("energy") if energy and board.needs_io_manager else None
    firmware = build_firmware(board, suite, model.data, uart_baud=baud)
    err.print(f"flashing {firmware.elf} ({'cached' if firmware.cached else 'built'})",
              highlight=False)
    probe = flash(firmware.elf, board.pyocd_target, probe_id, board.pyocd_pack)
    err.print(f"flashed through probe {probe.unique_id}; target reset", highlight=False)


def _measure(args: argparse.Namespace, err: Console) -> int:
    from tinypower.models import check_fits, resolve_model
    from tinypower.preflight import check_tiny_run
    from tinypower.results.recovery import notice_orphans
    from tinypower.results.session import check_runs_dir
    from tinypower.runner import RunError, RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import load_dataset, synthetic_inputs
    from tinypower.terminal import progress, shown

    check_runs_dir(args.runs_dir)  # a file or a read-only folder: say so before anything
    notice_orphans(args.runs_dir, err)
    if args.sut:
        from tinypower.scale.commands import measure_sut

        return measure_sut(args, err)
    if args.place and args.farm is None:
        from tinypower.farm.place import measure_at_place

        return measure_at_place(args, err, _measure)
    board, ports, probe_id = _board_and_ports(args, err)
    suite = get_suite(args.suite)
    modes = _modes(args.mode)
    model = resolve_model(suite, args.model)
    check_fits(model, board.flash_bytes, board.name)
    if args.iterations is not None and args.iterations < 1:
        raise RunError("--iterations must be at least 1")
    check_tiny_run(board, suite, model, modes, ports, args.monitor, args.interface)
    if args.flash:
        if "energy" in modes and len(modes) > 1 and board.needs_io_manager:
            raise RunError(f"--flash on {board.name}: energy mode runs its UART at another baud "
                           "(through the IO manager), so flash and measure energy on its own "
                           "(--mode energy) and the other modes in a second command")
        _flash_benchmark_firmware(board, suite, model, probe_id, "energy" in modes, err)
    err.print(
        f"board [bold]{board.name}[/] ({board.measured_as}), suite [bold]{suite.name}[/], model "
        f"{model.name} ({model.info.macs / 1e6:.2f} M MACs)"
        + (f" [yellow]{model.note}[/]" if model.note else ""),
        highlight=False,
    )
    outcomes: list[tuple[RunRequest, RunOutcome]] = []
    for mode in modes:
        dataset = (
            load_dataset(args.dataset, suite, limit=None if mode == "accuracy" else 5)
            if args.dataset else synthetic_inputs(suite)
        )
        request = RunRequest(
            board=board, suite=suite, model=model, dataset=dataset, mode=mode,
            runs_dir=args.runs_dir, iterations=args.iterations, warmups=args.warmups,
            min_window_s=args.min_window_s, monitor=args.monitor, interface=args.interface,
            ports=ports, farm=args.farm,
            # A farm's virtual bench serves every mode, as tinypower's firmware does.
            tinypower_firmware=args.flash or bool(args.farm and board.kind == "virtual"),
            verify_inputs={"auto": None, "always": True, "never": False}[args.verify_inputs],
        )
        with progress(err, mode) as report_progress:
            outcome = run(request, report_progress)
        outcomes.append((request, outcome))
        if outcome.error:
            err.print(f"[bold red]{mode} failed:[/] {shown(outcome.error)}", highlight=False)
            err.print(f"  data kept in {outcome.session.folder}", highlight=False)
    if args.json:
        from tinypower.results.strict_json import dumps_strict

        for request, outcome in outcomes:
            print(dumps_strict({**outcome.record(request), "monitor": _monitor(outcome)}))
    else:
        _print_table(outcomes)
    return 0 if all(o.ok for _, o in outcomes) else EXIT_INVALID


def _monitor(outcome: RunOutcome) -> str:
    """What measured: the energy monitor's kind, model and serial, or the DUT's own timer."""
    meter = outcome.session.data.get("meter")
    if not meter:
        return "DUT timer" if outcome.result is not None else "-"
    return " ".join(str(meter[k]) for k in ("kind", "model", "serial") if meter.get(k))


def _instrument(meter: dict | None) -> str:
    """The meter as it reported itself, and how far its driver is verified."""
    if not meter:
        return "DUT timer"
    return (f"{meter.get('model', '?')} {meter.get('serial', '?')} fw {meter.get('firmware', '?')}"
            f" [{meter.get('verification', 'unknown')}]")


def _print_table(outcomes: list[tuple[RunRequest, RunOutcome]]) -> None:
    import math

    from rich.table import Table

    from tinypower.terminal import console, shown

    out = console()
    table = Table(title="tinypower results")
    for col in ("suite", "mode", "result", "detail", "monitor", "valid", "measured as"):
        table.add_column(col)
    for request, o in outcomes:
        r = o.result
        value = "-" if r is None or math.isnan(r.value) else f"{r.value:.3f} {r.unit}"
        if r is not None and "energy_uncertainty_uj" in r.extras and value != "-":
            value = (f"{r.value:.3f} ± {r.extras['energy_uncertainty_uj']:.3g} {r.unit} "
                     f"(k={r.extras['uncertainty_k']:g})")
        if r is not None and r.mode == "accuracy" and value != "-":
            value = f"{r.metric.replace('_', ' ')} {value}"
        detail = ""
        if r is not None and r.mode == "performance":
            detail = f"latency {r.extras['latency_ms']:.3f} ms, N={r.extras['iterations']}"
        elif r is not None and r.mode == "energy":
            # the JSON's unit (extras.mean_power_uw), so table and JSON read the same
            detail = f"mean power {r.extras['mean_power_uw']:.1f} uW, N={r.extras['iterations']}"
        elif r is not None:
            detail = f"reference agreement {r.extras['reference_agreement_percent']:.1f}%"
        valid = "[green]yes[/]" if o.ok else "[red]no[/]"
        table.add_row(request.suite.name, request.mode, value, detail, shown(_monitor(o)),
                      valid, o.measured_as.upper())
    out.print(table)
    notes: list[str] = []
    for request, o in outcomes:
        out.print(f"{request.mode} session: {o.session.folder}", highlight=False)
        out.print(f"  instrument: {shown(_instrument(o.session.data.get('meter')))}",
                  highlight=False)
        problems = ([o.error] if o.error else []) + (
            [f"{c.rule}: {c.message}" for c in o.result.failures] if o.result else []
        )
        for p in problems:
            out.print(f"[red]invalid:[/] {shown(p)}", highlight=False)
        for c in o.result.warnings if o.result else []:
            out.print(f"[yellow]warning:[/] {shown(c.rule + ': ' + c.message)}", highlight=False)
        notes += [n for n in o.notes if n not in notes]
    for note in notes:
        out.print(f"[yellow]note:[/] {shown(note)}", highlight=False)


def _doctor(args: argparse.Namespace, err: Console) -> int:
    from tinypower.doctor import discover, local_checks, print_report
    from tinypower.terminal import console

    report = discover(otii_address=args.otii)
    report.local = local_checks()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, console())
    return EXIT_INVALID if report.problems else 0


def _flash_board(args: argparse.Namespace, err: Console) -> tuple[Board | None, str | None]:
    """The board and probe ID to flash: --board/--probe, nothing when only --target is given,
    else the one attached board and the probe discovery found on it."""
    from tinypower.boards import load_board
    from tinypower.doctor import VIRTUAL_LAB, discover
    from tinypower.flash import FlashError

    if args.board or args.target:
        return (load_board(args.board) if args.board else None), args.probe
    report = discover(otii_address=None)
    name = report.board_to_measure
    if name is None or name == VIRTUAL_LAB:
        raise FlashError("give --board NAME or --target NAME: " + (
            "several boards are attached" if name is None
            else "no attached board was recognised (`tinypower doctor` shows what is attached)"))
    err.print(f"flashing the attached board {name}", highlight=False)
    probe = next(s.probe_id for s in report.boards if s.name == name)
    return load_board(name), args.probe or probe


def _flash(args: argparse.Namespace, err: Console) -> int:
    from tinypower.flash import FlashError, flash
    from tinypower.terminal import progress

    board, probe_id = _flash_board(args, err)
    target = args.target or (board.pyocd_target if board else None)
    if target is None:
        raise FlashError(f"board {board.name} has no [pyocd] target ({board.kind} board): "
                         "pass --target or --board with a hardware board")
    pack = args.pack or (board.pyocd_pack if board else None)
    phase = f"flashing {args.image.name} (%)"
    with progress(err, phase) as report_progress:
        probe = flash(args.image, target, probe_id, pack,
                      lambda done: report_progress(phase, round(done * 100), 100),
                      base_address=args.base_address)
    print(f"flashed {args.image} to {target} through probe {probe.unique_id} "
          f"({probe.description}); target reset")
    return 0


def _build(args: argparse.Namespace, err: Console) -> int:
    from tinypower.boards import load_board
    from tinypower.codegen import build

    print(build(args.model, load_board(args.board), args.out, toolchain=args.toolchain).table())
    return 0


def _models_fetch(args: argparse.Namespace, err: Console) -> int:
    from tinypower.models import fetch_reference_models

    for path in fetch_reference_models(progress=lambda msg: err.print(msg, highlight=False)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
