"""Discovery: what is plugged in, which board it is, and what each mode still lacks.

``tinypower doctor`` prints this, and ``tinypower measure`` without ``--board`` uses it to pick
the board (or the virtual lab when nothing is attached). Sources: serial ports from pyserial
(VID, PID, serial number, description), debug probes from pyOCD (through ``tinypower.flash``),
USB-only instruments by VID:PID through pyusb, and an Otii 3 server on its TCP port. A table
of known VID:PIDs names energy monitors and IO managers; board files' ``[usb]`` and
``[pyocd]`` tables name boards. Discovery only lists and connects: it never sends a byte to a
serial device, so it is safe with anything attached.

Every source can be passed in, so tests build real ``ListPortInfo`` objects for the ports they
want to see instead of needing hardware.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import libusb_package
import usb.core
from rich.console import Console
from rich.table import Table
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from energy_monitor.meter import MeterError
from tinypower.boards import Board, BoardError, available_boards, load_board
from tinypower.dut.hardware_bench import BenchPorts
from tinypower.runner import MODES
from tinypower.terminal import shown

if TYPE_CHECKING:  # tinypower.flash imports pyOCD (~0.25 s): only when probes are listed
    from tinypower.flash import ProbeInfo

VIRTUAL_LAB = "sim-m4"  # what `tinypower measure` uses when no board is attached
OTII_ADDRESS = ("127.0.0.1", 1905)  # the Otii 3 TCP server's default
ROOT_HUB_VID = 0x1D6B  # Linux Foundation: host controllers' root hubs, never a probe

MONITOR, IO_MANAGER, PROBE, BOARD, UNKNOWN = (
    "energy monitor", "IO manager", "debug probe", "board", "unknown",
)
IO_MANAGER_HELP = ("an IO manager for the DUT's UART (STM32H573I-DK interface board, or an "
                   "Arduino Uno with the EEMBC IO manager firmware)")


@dataclass(frozen=True)
class KnownDevice:
    name: str
    role: str
    monitor_kind: str | None = None  # the energy_monitor driver kind, for monitors
    usb_only: bool = False  # no serial port: found by raw USB listing
    note: str = ""


# Sources: the MLCommons runner's devices yaml (mlperf-tiny-protocol.md §13), instruments.md,
# pyOCD's ST-LINK and DAPLink tables.
KNOWN_DEVICES: dict[tuple[int, int], KnownDevice] = {
    (0x0483, 0x5740): KnownDevice(
        "ST X-NUCLEO-LPM01A (PowerShield)", MONITOR, "lpm01a",
        note="0x0483:0x5740 is ST's generic virtual COM port; the driver checks the identity"),
    (0x16D0, 0x10BA): KnownDevice("Joulescope JS220", MONITOR, "joulescope", usb_only=True),
    (0x1915, 0xC00A): KnownDevice("Nordic PPK2", MONITOR, "ppk2",
                                  note="VID:PID unverified against hardware"),
    (0x0483, 0x374E): KnownDevice(
        "STM32H573I-DK (MLCommons interface board)", IO_MANAGER,
        note="also the PID of the ST-LINK/V3E on other ST boards"),
    (0x2341, 0x0043): KnownDevice("Arduino Uno (EEMBC IO manager)", IO_MANAGER),
    (0x2341, 0x0001): KnownDevice("Arduino Uno (EEMBC IO manager)", IO_MANAGER),
    (0x2A03, 0x0043): KnownDevice("Arduino Uno (EEMBC IO manager)", IO_MANAGER),
    (0x2A03, 0x0243): KnownDevice("Arduino Uno (EEMBC IO manager)", IO_MANAGER),
    (0x0483, 0x3748): KnownDevice("ST-LINK/V2", PROBE),
    (0x0483, 0x374B): KnownDevice("ST-LINK/V2-1", PROBE),
    (0x0483, 0x3752): KnownDevice("ST-LINK/V2-1", PROBE),
    (0x0483, 0x374F): KnownDevice("ST-LINK/V3", PROBE),
    (0x0483, 0x3753): KnownDevice("ST-LINK/V3", PROBE),
    (0x0483, 0x3754): KnownDevice("ST-LINK/V3", PROBE),
    (0x0D28, 0x0204): KnownDevice("Arm DAPLink (CMSIS-DAP)", PROBE),
}
KNOWN_VENDORS = {0x1366: KnownDevice("SEGGER J-Link", PROBE)}


@dataclass(frozen=True)
class UsbDevice:
    vid: int
    pid: int
    location: str  # "bus 1 address 7"


@dataclass
class Device:
    """One attached thing: a serial port (with the probe behind it, if any), a debug probe
    without a serial port, a USB-only instrument, or a network instrument."""

    address: str  # /dev/ttyACM0, COM3, a probe's unique ID, "bus 1 address 7", "host:port"
    source: str  # serial | probe | usb | network
    description: str
    identified_as: str = "unknown"
    role: str = UNKNOWN
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    monitor_kind: str | None = None
    probe_id: str | None = None  # the pyOCD probe on this device, if any
    boards: list[str] = field(default_factory=list)  # board files it may belong to
    note: str = ""

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None else ""


@dataclass
class ModeStatus:
    ready: bool
    missing: list[str] = field(default_factory=list)


@dataclass
class BoardStatus:
    name: str
    kind: str
    devices: list[str]
    also_matches: list[str]  # other board files the same devices match
    modes: dict[str, ModeStatus]
    probe_id: str | None  # the debug probe on this board, if pyOCD sees one
    flash: str
    notes: list[str] = field(default_factory=list)


@dataclass
class LocalCheck:
    """A program or a local meter some boards or SUT files need: there, or how to get it."""

    name: str
    needed_for: str
    ok: bool
    detail: str  # where it is, or what is wrong and how to fix it


@dataclass
class DoctorReport:
    devices: list[Device]
    boards: list[BoardStatus]
    problems: list[str]
    board_to_measure: str | None  # None: several boards match, the user must choose
    suggestion: str
    local: list[LocalCheck] = field(default_factory=list)  # filled by local_checks()

    def to_json(self) -> dict:
        data = asdict(self)
        for record, device in zip(data["devices"], self.devices, strict=True):
            record["usb_id"] = device.usb_id
        return data


def list_usb_devices() -> list[UsbDevice]:
    """Raw USB devices (for instruments without a serial port); empty if libusb is missing."""
    return _usb_listing() or []


def _usb_listing() -> list[UsbDevice] | None:
    """Raw USB devices, or None when libusb cannot list them."""
    try:
        found = usb.core.find(find_all=True, backend=libusb_package.get_libusb1_backend())
        return [UsbDevice(d.idVendor, d.idProduct, f"bus {d.bus} address {d.address}")
                for d in found]
    except (usb.core.NoBackendError, usb.core.USBError):
        return None


def _no_probe_possible(ports: Sequence[ListPortInfo], usb_devices: list[UsbDevice] | None) -> bool:
    """True when no debug probe can be attached: libusb listed the bus and saw only root hubs,
    and no serial port is on USB. Every probe pyOCD drives (ST-LINK, CMSIS-DAP, J-Link) is a USB
    device, so asking pyOCD then (an import of ~0.25 s, most of a virtual-lab run's start-up)
    could only say "none"."""
    return (usb_devices is not None and all(d.vid == ROOT_HUB_VID for d in usb_devices)
            and all(p.vid is None for p in ports))


def probe_otii(address: tuple[str, int], timeout_s: float = 0.3) -> Device | None:
    """An Otii 3 server at ``address`` (it greets every client with a JSON line), else None."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    where = f"{address[0]}:{address[1]}"
    try:
        banner = json.loads(data.split(b"\n")[0])
        ok = banner.get("type") == "information" and banner.get("info") == "connected"
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        return Device(where, "network", "TCP server", note="answers on the Otii port but does not "
                      "greet like an Otii 3 server")
    info = banner.get("data")
    version = info.get("otii_version", "?") if isinstance(info, dict) else "?"
    return Device(where, "network", f"Otii server {version}", "Qoitech Otii (Otii 3 server)",
                  MONITOR, monitor_kind="otii")


def registry_boards() -> tuple[list[Board], list[str]]:
    """Every board file that loads, and a problem line for each that does not."""
    boards, problems = [], []
    for name in available_boards():
        try:
            boards.append(load_board(name))
        except BoardError as exc:
            problems.append(str(exc))
    return boards, problems


def discover(
    *,
    ports: Sequence[ListPortInfo] | None = None,
    probes: Sequence[ProbeInfo] | None = None,
    usb_devices: Sequence[UsbDevice] | None = None,
    otii_address: tuple[str, int] | None = OTII_ADDRESS,
    boards: Sequence[Board] | None = None,
) -> DoctorReport:
    """Look at what is attached (or at what is passed in) and match it to board files."""
    problems: list[str] = []
    if ports is None:
        ports = list_ports.comports()
    listed = _usb_listing() if usb_devices is None else list(usb_devices)
    usb_devices = listed or []
    if probes is None and _no_probe_possible(ports, listed):
        probes = []
    if probes is None:
        from tinypower.flash import FlashError, list_probes

        try:
            probes = list_probes()
        except FlashError as exc:
            problems.append(str(exc))
            probes = []
    if boards is None:
        boards, board_problems = registry_boards()
        problems += board_problems
    devices = _devices(ports, probes, usb_devices)
    otii = probe_otii(otii_address) if otii_address else None
    devices += [otii] if otii else []
    _match_boards(devices, {p.unique_id: p for p in probes}, boards)
    statuses = [_board_status(b, devices) for b in boards if any(b.name in d.boards
                                                                  for d in devices)]
    choice, suggestion = _suggest(devices, statuses, boards)
    return DoctorReport(devices, statuses, problems, choice, suggestion)


def local_checks(powercap_root: Path | None = None) -> list[LocalCheck]:
    """The programs tinypower runs, the local meters (RAPL, NVML) a SUT file may use and the
    compiled float32 kernel: whether each is usable here, or what is wrong and how to fix it."""
    from tinypower.preflight import tools

    checks = [LocalCheck(t.command, t.needed_for, bool(path := shutil.which(t.command)),
                         path or f"not found: {t.install}") for t in tools()]
    for name, needed_for, probe in (
            ("RAPL", "`measure --sut local` and suts/rapl.toml (CPU package energy)",
             lambda: _rapl_access(powercap_root)),
            ("NVML", "`measure --sut local` and suts/nvml.toml (NVIDIA GPU energy)", _nvml_access)):
        try:
            checks.append(LocalCheck(name, needed_for, True, probe()))
        except MeterError as exc:
            checks.append(LocalCheck(name, needed_for, False, str(exc)))
    return [*checks, _float32_kernel_check()]


def _float32_kernel_check() -> LocalCheck:
    """Whether setup.py could build the compiled float32 dot (optional: numpy stands in)."""
    from energy_monitor.trace import float32_kernel

    kernel = float32_kernel()
    return LocalCheck(
        "float32 kernel", "integrating Joulescope (float32) traces at memory bandwidth",
        kernel is not None,
        f"compiled ({kernel})" if kernel else
        "not built, so numpy integrates float32 traces (about 2x slower; the energy agrees to "
        "float64 rounding): install a C compiler and the Python headers, then reinstall tinypower")


def _rapl_access(root: Path | None) -> str:
    from energy_monitor.rapl import POWERCAP_ROOT, find_zones, read_energy_uj

    zones = find_zones(root or POWERCAP_ROOT)
    for zone in zones:
        read_energy_uj(zone)  # listing needs no privilege; reading the counters may
    return f"{len(zones)} readable zone(s): {', '.join(z.label for z in zones)}"


def _nvml_access() -> str:
    from energy_monitor.nvml import Nvml

    gpus = Nvml()
    try:
        return f"{len(gpus.names)} GPU(s) ({gpus.mode} readings): {', '.join(gpus.names)}"
    finally:
        gpus.close()


def _known(vid: int, pid: int) -> KnownDevice | None:
    return KNOWN_DEVICES.get((vid, pid)) or KNOWN_VENDORS.get(vid)


def _devices(ports: Sequence[ListPortInfo], probes: Sequence[ProbeInfo],
             usb_devices: Sequence[UsbDevice]) -> list[Device]:
    by_serial = {p.unique_id.lower(): p for p in probes}
    devices, seen_probes = [], set()
    for port in sorted(ports):
        if port.vid is None:
            continue  # a legacy on-board UART, not something plugged in
        known = _known(port.vid, port.pid)
        probe = by_serial.get((port.serial_number or "").lower())
        device = Device(
            port.device, "serial", port.description, vid=port.vid, pid=port.pid,
            serial_number=port.serial_number,
        )
        if known:
            device.identified_as, device.role = known.name, known.role
            device.monitor_kind, device.note = known.monitor_kind, known.note
        if probe:
            seen_probes.add(probe.unique_id)
            device.probe_id = probe.unique_id
            device.role = PROBE if device.role == UNKNOWN else device.role
            if probe.board_name:
                device.identified_as = f"{probe.board_name} ({device.identified_as})"
        devices.append(device)
    for probe in probes:
        if probe.unique_id not in seen_probes:
            devices.append(Device(
                probe.unique_id, "probe", probe.description,
                probe.board_name or f"{probe.vendor} {probe.product}".strip(), PROBE,
                probe_id=probe.unique_id,
            ))
    for raw in usb_devices:
        known = _known(raw.vid, raw.pid)
        if known and known.usb_only:
            devices.append(Device(raw.location, "usb", known.name, known.name, known.role,
                                  raw.vid, raw.pid, monitor_kind=known.monitor_kind,
                                  note=known.note))
    return devices


def _match_boards(devices: list[Device], probes: dict[str, ProbeInfo],
                  boards: Sequence[Board]) -> None:
    """A device belongs to the boards whose [usb] VID:PID it has, narrowed (or found, for a
    probe without a serial port) by the pyOCD target its probe reports."""
    real = [b for b in boards if b.kind != "virtual"]
    for device in devices:
        matches = [b for b in real if (device.vid, device.pid) in b.usb_ids]
        probe = probes.get(device.probe_id or "")
        if probe and probe.board_target:
            by_target = [b for b in (matches or real)
                         if (b.pyocd_target or "").lower() == probe.board_target.lower()]
            matches = by_target or matches
        device.boards = [b.name for b in matches]
        if matches:
            device.role = BOARD


def bench_ports(report: DoctorReport, board: Board) -> tuple[BenchPorts, str | None]:
    """Where discovery found ``board``'s UART, its kind of monitor and an IO manager, and the
    debug probe on the board; what was not found stays None (the runner says what to pass)."""
    own = [d for d in report.devices if board.name in d.boards]
    uart = next((d.address for d in own if d.source == "serial"), None)
    probe = next((d.probe_id for d in own if d.probe_id), None)
    monitor = next((d for d in report.devices
                    if d.role == MONITOR and d.monitor_kind == board.monitor_kind), None)
    # A USB-only monitor (Joulescope) is opened by its driver, not by a port path.
    monitor_address = monitor.address if monitor and monitor.source != "usb" else None
    io = next((d.address for d in report.devices
               if d.role == IO_MANAGER and d.source == "serial"), None)
    return BenchPorts(uart, monitor_address, io), probe


def _board_status(board: Board, devices: list[Device]) -> BoardStatus:
    own = [d for d in devices if board.name in d.boards]
    uart = [d for d in own if d.source == "serial"]
    probe = next((d.probe_id for d in own if d.probe_id), None)
    ids = ", ".join(f"{v:04X}:{p:04X}" for v, p in board.usb_ids) or "none in the board file"
    uart_missing = [] if uart else [f"the board's USB-UART (USB {ids})"]
    monitors = [d for d in devices if d.role == MONITOR]
    energy_missing = []
    if not any(m.monitor_kind == board.monitor_kind for m in monitors):
        others = ", ".join(m.identified_as for m in monitors)
        energy_missing.append(
            f"a {board.monitor_kind} energy monitor"
            + (f" (attached: {others}; to use it set [monitor] kind in the board file)"
               if others else "")
        )
    if board.needs_io_manager and not any(d.role == IO_MANAGER for d in devices):
        energy_missing.append(IO_MANAGER_HELP)
    modes = {
        mode: ModeStatus(not missing, missing)
        for mode, missing in zip(MODES, (uart_missing, energy_missing, uart_missing),
                                 strict=True)
    }
    notes = []
    if board.pyocd_target:
        from tinypower.flash import FlashError, check_target

        try:
            check_target(board.pyocd_target, board.pyocd_pack)
        except FlashError as exc:
            notes.append(f"flashing: {exc}")
    else:
        notes.append("flashing: the board file has no [pyocd] target; pass --target to "
                     "`tinypower flash`")
    return BoardStatus(
        board.name, board.kind, [d.address for d in own],
        sorted({name for d in own for name in d.boards} - {board.name}), modes, probe,
        f"probe {probe}" if probe else "no debug probe seen: cannot flash", notes,
    )


def _suggest(devices: list[Device], statuses: list[BoardStatus],
             boards: Sequence[Board]) -> tuple[str | None, str]:
    if len(statuses) == 1:
        s = statuses[0]
        return s.name, (f"found board {s.name} on {', '.join(s.devices)}: `tinypower measure` "
                        f"uses it (--board {VIRTUAL_LAB} for the virtual lab)")
    if statuses:
        names = ", ".join(s.name for s in statuses)
        return None, (f"several boards match what is attached ({names}): choose one with "
                      "--board NAME")
    text = (f"no board attached: `tinypower measure` runs on the virtual lab ({VIRTUAL_LAB}, "
            "simulated); plug a board's debug probe in, or pass --board")
    monitors = [d for d in devices if d.role == MONITOR]
    if monitors:
        kinds = {m.monitor_kind for m in monitors}
        fits = [b.name for b in boards if b.kind == "hardware" and b.monitor_kind in kinds]
        text += (f". Energy monitor attached ({', '.join(m.identified_as for m in monitors)})"
                 f": name the board it powers with --board ({', '.join(fits) or 'no board file'}"
                 " measures with it)")
    return VIRTUAL_LAB, text


def print_report(report: DoctorReport, console: Console) -> None:
    devices = Table(title="attached devices")
    for col in ("port / probe", "USB ID", "serial", "identified as", "role", "board"):
        devices.add_column(col, overflow="fold")  # fold, never cut: every character counts
    for d in report.devices:
        name = d.identified_as if d.role != UNKNOWN else f"unknown ({d.description})"
        devices.add_row(*map(shown, (d.address, d.usb_id, d.serial_number or "", name, d.role,
                                      ", ".join(d.boards))))
    console.print(devices if report.devices else "no USB devices, probes or instruments found")
    for d in report.devices:
        if d.note:
            console.print(f"[yellow]note:[/] {shown(d.address)}: {shown(d.note)}",
                          highlight=False)
    if report.boards:
        boards = Table(title="boards")
        for col in ("board", "devices", *MODES, "flash"):
            boards.add_column(col, overflow="fold")
        for s in report.boards:
            cells = ["[green]ready[/]" if m.ready
                     else "[red]missing:[/] " + shown("; ".join(m.missing))
                     for m in s.modes.values()]
            boards.add_row(s.name, ", ".join(s.devices), *cells, s.flash)
        console.print(boards)
    for s in report.boards:
        if s.also_matches:
            console.print(f"[yellow]note:[/] {s.name}'s devices also match "
                          f"{', '.join(s.also_matches)}", highlight=False)
        for note in s.notes:
            console.print(f"[yellow]note:[/] {s.name}: {shown(note)}", highlight=False)
    if report.local:
        local = Table(title="programs and local meters")
        for col in ("name", "needed for", "status"):
            local.add_column(col, overflow="fold")
        for c in report.local:
            status = "[green]ok[/] " if c.ok else "[yellow]unavailable:[/] "
            local.add_row(shown(c.name), shown(c.needed_for), status + shown(c.detail))
        console.print(local)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {shown(problem)}", highlight=False)
    console.print(shown(report.suggestion), highlight=False)
