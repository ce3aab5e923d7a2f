"""Board registry: one TOML file per board in ``boards/``.

A board file says what a board is (core, clock), how to reach it per mode (UART baud), which
energy monitor measures it and at what voltage (and whether an IO manager carries its UART in
energy mode), how to flash it (``[pyocd]`` target and CMSIS pack), how to recognise it on USB
(``[usb]`` VID:PID of its debug probe / USB-UART), how much flash and RAM a model may use
(``[memory]``, checked before a firmware build), and, for the virtual lab, the cycle and
current models the software DUT and simulated meter follow. Keeping this in data lets a lab add
a board without touching code.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from energy_monitor.drivers import DRIVERS
from tinypower.resources import data_dir
from tinypower.schema import (
    BOOLEAN,
    Schema,
    choice,
    either,
    integer,
    list_of,
    number,
    problems,
    safe_name,
    text,
)

BOARD_KINDS = ("virtual", "emulated", "hardware")
# What a measurement on each kind of board is labelled.
MEASURED_AS = {"virtual": "simulated", "emulated": "emulated", "hardware": "hardware"}


class BoardError(ValueError):
    """A board is unknown or its file is wrong; the message names the file and the fix."""


_U16 = integer(0, 0xFFFF)
# Every key a board file may have, its type and its range: checked before anything runs.
BOARD_SCHEMA: Schema = {
    "name": (True, safe_name()),
    "description": (False, text(nonempty=False)),
    "kind": (True, choice(BOARD_KINDS)),
    "core": (True, text()),
    "clock_hz": (True, integer(1_000, 10_000_000_000, "Hz")),
    "memory": (False, {"flash_bytes": (False, integer(1, unit="bytes")),
                       "ram_bytes": (False, integer(1, unit="bytes"))}),
    # costs = "firmware" (our firmware's measured per-operator costs) needs no other key;
    # "constant" (the default) needs cycles_per_mac and overhead_cycles (_cycle_model)
    "cycle_model": (False, {"costs": (False, choice(("constant", "firmware"))),
                            "cycles_per_mac": (False, number(above=0, most=1e6)),
                            "overhead_cycles": (False, integer(0))}),
    "energy_model": (False, {"idle_current_a": (True, number(least=0, most=10, unit="A")),
                             "io_current_a": (True, number(least=0, most=10, unit="A")),
                             "active_current_a": (True, number(least=0, most=10, unit="A")),
                             "timestamp_hold_s": (True, number(above=0, most=1, unit="s")),
                             "source": (False, text())}),
    "uart": (False, {mode: (False, integer(300, 20_000_000, "baud"))
                     for mode in ("performance", "energy", "accuracy")}),
    "monitor": (True, {"kind": (True, choice(sorted(DRIVERS))),
                       "voltage_v": (True, number(above=0, most=5.5, unit="V")),
                       "sample_rate_hz": (True, number(above=0, most=1e8, unit="Hz")),
                       "io_manager": (False, BOOLEAN)}),
    "pyocd": (False, {"target": (True, text()), "pack": (False, text())}),
    "usb": (False, {"vid": (True, _U16), "pid": (True, either(_U16, list_of(_U16)))}),
    "emulator": (False, {"machine": (True, text()), "icount_shift": (True, integer(0, 10)),
                         "timer_hz": (True, integer(1, unit="Hz"))}),
}


@dataclass(frozen=True)
class CycleModel:
    """``costs = "firmware"``: our firmware's per-operator costs measured under QEMU
    (:mod:`tinypower.dut.latency_model`); otherwise a constant cost per MAC."""

    cycles_per_mac: float
    overhead_cycles: int
    costs: str = "constant"

    def latency_s(self, macs: int, clock_hz: int, model: bytes | None = None) -> float:
        if self.costs == "firmware":
            from tinypower.dut.latency_model import firmware_latency_s

            if model is None:
                raise ValueError("firmware costs need the model: pass its bytes")
            return firmware_latency_s(model, clock_hz)
        return (self.overhead_cycles + macs * self.cycles_per_mac) / clock_hz


@dataclass(frozen=True)
class EnergyModel:
    idle_current_a: float
    io_current_a: float
    active_current_a: float
    timestamp_hold_s: float
    source: str = ""  # where the currents come from (a published run, or an assumption)


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    kind: str
    core: str
    clock_hz: int
    monitor_kind: str
    monitor_voltage_v: float
    monitor_sample_rate_hz: float
    uart_baud: dict[str, int] = field(default_factory=dict)
    cycle_model: CycleModel | None = None
    energy_model: EnergyModel | None = None
    path: Path | None = None
    pyocd_target: str | None = None  # pyOCD target name, e.g. "stm32l4r5zitx"
    pyocd_pack: Path | None = None  # CMSIS pack providing that target, if not built in
    usb_ids: tuple[tuple[int, int], ...] = ()  # (VID, PID) of its debug probe / USB-UART
    needs_io_manager: bool = False  # energy mode reaches the DUT's UART through an IO manager
    flash_bytes: int | None = None  # [memory]: what the firmware image may occupy
    ram_bytes: int | None = None  # [memory]: data, bss (the tensor arena) and the stack

    @property
    def measured_as(self) -> str:
        return MEASURED_AS[self.kind]


def boards_dir() -> Path:
    """``$TINYPOWER_BOARDS`` if set, else the shipped ``boards/``."""
    env = os.environ.get("TINYPOWER_BOARDS")
    return Path(env) if env else data_dir("boards")


def available_boards() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.toml"))


def load_board(name_or_path: str) -> Board:
    """A board by registry name (``sim-m4``) or by path to its TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = boards_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        raise BoardError(
            f"unknown board {name_or_path!r}: no {path}. "
            f"Known boards: {', '.join(available_boards()) or 'none'}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BoardError(f"{path}: not valid TOML ({exc}); fix the file") from exc
    found = problems(data, BOARD_SCHEMA, str(path))
    if found:
        raise BoardError("; ".join(found) + "; see boards/sim-m4.toml for a complete example")
    try:
        return _board_from_dict(data, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise BoardError(f"{path}: {exc}; see boards/sim-m4.toml for a complete example") from exc


def _cycle_model(cycle: dict) -> CycleModel:
    if cycle.get("costs") == "firmware":
        return CycleModel(0.0, 0, "firmware")
    missing = [k for k in ("cycles_per_mac", "overhead_cycles") if k not in cycle]
    if missing:
        raise ValueError(f"[cycle_model] needs {' and '.join(missing)} (or costs = "
                         "\"firmware\")")
    return CycleModel(float(cycle["cycles_per_mac"]), int(cycle["overhead_cycles"]))


def _board_from_dict(data: dict, path: Path) -> Board:
    """A board from a file :data:`BOARD_SCHEMA` accepted."""
    kind = data["kind"]
    cycle = data.get("cycle_model")
    energy = data.get("energy_model")
    if kind == "virtual" and (cycle is None or energy is None):
        raise ValueError("a virtual board needs [cycle_model] and [energy_model] tables")
    monitor = data["monitor"]
    io_manager = monitor.get("io_manager", kind == "hardware")
    pyocd = data.get("pyocd", {})
    pack = pyocd.get("pack")
    return Board(
        name=data["name"],
        description=data.get("description", ""),
        kind=kind,
        core=data["core"],
        clock_hz=int(data["clock_hz"]),
        monitor_kind=monitor["kind"],
        monitor_voltage_v=float(monitor["voltage_v"]),
        monitor_sample_rate_hz=float(monitor["sample_rate_hz"]),
        uart_baud={k: int(v) for k, v in data.get("uart", {}).items()},
        cycle_model=_cycle_model(cycle) if cycle is not None else None,
        energy_model=EnergyModel(
            float(energy["idle_current_a"]),
            float(energy["io_current_a"]),
            float(energy["active_current_a"]),
            float(energy["timestamp_hold_s"]),
            str(energy.get("source", "")),
        )
        if energy is not None
        else None,
        path=path,
        pyocd_target=pyocd.get("target"),
        pyocd_pack=path.parent / pack if pack else None,
        usb_ids=_usb_ids(data["usb"]) if "usb" in data else (),
        needs_io_manager=io_manager,
        flash_bytes=data.get("memory", {}).get("flash_bytes"),
        ram_bytes=data.get("memory", {}).get("ram_bytes"),
    )


def _usb_ids(usb: dict) -> tuple[tuple[int, int], ...]:
    """``[usb] vid = 0x0483, pid = 0x374B`` (or ``pid = [..]``) as (VID, PID) pairs."""
    pids = usb["pid"] if isinstance(usb["pid"], list) else [usb["pid"]]
    return tuple((usb["vid"], pid) for pid in pids)
