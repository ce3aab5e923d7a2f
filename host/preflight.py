"""Checks before a run: what can be known before measuring is checked first.

A model that does not fit the suite, a missing toolchain or QEMU, a serial port that is not
there, an energy monitor that does not answer, a RAPL or NVML meter this user cannot read: each
is found here, before a session folder or a store row exists, and ends the command with one line
and exit 2 (a :class:`PreflightError`), instead of a failed, half-labelled session and exit 1.
The run itself still checks everything again; this only moves the certain failures forward.
"""

from __future__ import annotations

import math
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinypower.boards import Board
    from tinypower.dut.hardware_bench import BenchPorts
    from tinypower.models import ResolvedModel
    from tinypower.suites.benchmarks import Suite

ARM_GCC = "arm-none-eabi-gcc"
CONNECT_TIMEOUT_S = 1.0


class PreflightError(ValueError):
    """The run cannot succeed; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Tool:
    """A program some boards or SUTs need, and how to get it."""

    command: str
    needed_for: str
    install: str


def tools() -> tuple[Tool, ...]:
    """The external programs tinypower runs, for `tinypower doctor` and the checks below."""
    from tinypower.codegen import ARM_INSTALL
    from tinypower.emulator import QEMU, QEMU_INSTALL

    return (
        Tool(ARM_GCC, "the emulated board (qemu-an386) and `measure --flash` / `build`",
             ARM_INSTALL),
        Tool(QEMU, "the emulated board (qemu-an386)", QEMU_INSTALL),
        Tool("gcc", "`build --toolchain host` and the host kernel checks",
             "install gcc (Debian: apt-get install gcc)"),
        Tool("prometheus", "`tinypower fleet` / `training-energy` against a local test server",
             "install prometheus (Debian: apt-get install prometheus), or point --prometheus at "
             "an existing server"),
        Tool("chromium", "report screenshots in the tests (the HTML report itself needs none)",
             "install chromium (Debian: apt-get install chromium)"),
    )


def missing_tool(command: str, why: str) -> PreflightError | None:
    """The error for ``command`` missing from PATH (None when it is there)."""
    if shutil.which(command):
        return None
    tool = next((t for t in tools() if t.command == command), None)
    how = tool.install if tool else f"install {command}"
    return PreflightError(f"{command} not found on PATH, and {why} needs it: {how}")


def model_fits_suite(model: ResolvedModel, suite: Suite) -> None:
    """The model's input takes one suite input, and a classifier's output has its classes."""
    from tinypower.suites.benchmarks import SUITES

    inputs = math.prod(model.info.input_shape)
    expected = suite.input_bytes // (4 if suite.wire_dtype == "float32" else 1)
    outputs = math.prod(model.info.output_shape)
    if inputs == expected and (suite.metric != "top1" or outputs == suite.classes):
        return
    fits = [s.name for s in SUITES.values()
            if inputs == s.input_bytes // (4 if s.wire_dtype == "float32" else 1)]
    what = (f"takes {inputs} inputs but a {suite.name} input has {expected}" if inputs != expected
            else f"gives {outputs} outputs but {suite.name} has {suite.classes} classes")
    hint = f"pass --suite {fits[0]}" if fits else f"pass a model made for {suite.name}"
    raise PreflightError(f"model {model.name} {what}: it does not fit the suite; {hint}")


def check_tiny_run(board: Board, suite: Suite, model: ResolvedModel, modes: Sequence[str],
                   ports: BenchPorts, monitor: str | None, interface: str | None) -> None:
    """Everything about an MLPerf Tiny run that can fail before it starts."""
    model_fits_suite(model, suite)
    if board.kind == "emulated":
        for command in (ARM_GCC, _qemu()):
            if error := missing_tool(command, f"the emulated board {board.name}"):
                raise error
        from tinypower.firmware import build_firmware

        build_firmware(board, suite, model.data)  # memory fit and build errors, now; cached
    if board.kind == "hardware":
        _check_bench(board, modes, ports, monitor, interface)


def _qemu() -> str:
    from tinypower.emulator import QEMU

    return QEMU


LOCAL_METERS = ("rapl", "nvml")  # read on this machine: opened once here to prove access


def check_sut_meters(meters: Sequence[Any]) -> None:
    """A SUT file's meters that this machine reads itself (RAPL, NVML) open and read, and a
    PTDaemon answers on its port, before the director starts a session."""
    from energy_monitor.meter import MeterError
    from energy_monitor.series_meters import connect_series_meter

    for cfg in meters:
        what = f"the {cfg.name or cfg.kind} meter ({cfg.kind})"
        if cfg.kind in LOCAL_METERS:
            try:
                connect_series_meter(cfg.kind, cfg.address, **cfg.options).close()
            except (MeterError, OSError, ValueError) as exc:
                raise PreflightError(f"{what} cannot be read here: {exc}") from None
        elif cfg.kind == "ptd" and cfg.address:
            host, _, port = cfg.address.rpartition(":")
            try:
                socket.create_connection((host or cfg.address, int(port or 8888)),
                                         timeout=CONNECT_TIMEOUT_S).close()
            except (OSError, ValueError) as exc:
                raise PreflightError(f"{what} at {cfg.address} does not answer ({exc}): start "
                                     "PTDaemon there, or fix the address in the SUT file"
                                     ) from None


def _check_bench(board: Board, modes: Sequence[str], ports: BenchPorts, monitor: str | None,
                 interface: str | None) -> None:
    from tinypower.dut.hardware_bench import BenchError, HardwareBench

    for mode in modes:
        try:
            bench = HardwareBench(board=board, mode=mode, ports=ports, monitor=monitor,
                                  interface=interface)
        except BenchError as exc:
            raise PreflightError(str(exc)) from None
        for role, address in (("UART", bench.dut_url if not bench.interface else None),
                              ("IO manager", bench.io_manager_url or None)):
            _port_exists(board, role, address)
    if "energy" in modes:
        _monitor_reachable(board, monitor or board.monitor_kind, ports.monitor)


def _port_exists(board: Board, role: str, address: str | None) -> None:
    """A device path that is not there (a pyserial URL such as socket:// is not checked)."""
    if address and "://" not in address and address.startswith("/") and not Path(
            address).exists():
        raise PreflightError(f"{board.name}'s {role} port {address} does not exist: plug it "
                             "in, or pass the port `tinypower doctor` lists")


def _monitor_reachable(board: Board, kind: str, address: str | None) -> None:
    if not address:
        raise PreflightError(f"energy mode on {board.name} needs its {kind} energy monitor, and "
                             "none was found: plug it in or pass --monitor-port (see "
                             "`tinypower doctor`)")
    host, _, port = address.rpartition(":")
    if kind == "otii" and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise PreflightError(
                f"the Otii server at {address} does not answer ({exc}): start Otii 3 with its "
                "TCP server enabled, or pass --monitor-port") from None
    else:
        _port_exists(board, f"{kind} energy monitor", address)
