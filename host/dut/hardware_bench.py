"""A real bench: the board's UART, a real energy monitor and, for energy mode, an IO manager.

It has the face of :class:`~tinypower.dut.virtual_lab.VirtualLab` (``dut_url``,
``io_manager_url``, ``monitor``, :meth:`connect_meter`), so the runner measures hardware with
exactly the code it runs against the simulators. Addresses come from the command line or from
``tinypower doctor``'s discovery.
"""

from __future__ import annotations

from dataclasses import dataclass

from energy_monitor.drivers import connect_meter
from energy_monitor.meter import Meter
from tinypower.boards import Board


class BenchError(ValueError):
    """The bench lacks a port it needs; the message says which and how to give it."""


@dataclass
class BenchPorts:
    dut: str | None = None  # the board's USB-UART (performance and accuracy, or direct energy)
    monitor: str | None = None  # the energy monitor's address (see energy_monitor.drivers)
    interface: str | None = None  # the IO manager's serial port (energy mode)


class HardwareBench:
    """Use as a context manager, like the labs; it starts nothing, the instruments are the
    user's. The monitor is the board file's: its ``[monitor]`` table holds the voltage and
    sample rate that kind of monitor measures this board at."""

    meter_sample_rate_hz = None  # the runner measures at the board file's rate
    boot_s = 1.0  # after the monitor powers the DUT: the MLCommons runner's "let the DUT boot up"

    def __init__(
        self, *, board: Board, mode: str, ports: BenchPorts, monitor: str | None = None,
        interface: str | None = None,
    ) -> None:
        self.board = board
        self.monitor = monitor or board.monitor_kind
        if self.monitor != board.monitor_kind:
            raise BenchError(
                f"{board.name}'s board file measures it with a {board.monitor_kind}: to use a "
                f"{self.monitor}, set [monitor] kind (and its voltage and sample rate) in "
                f"{board.path or 'the board file'}"
            )
        self.interface = interface if mode == "energy" else None
        self.io_manager_url = ports.interface or ""
        self.dut_url = ports.dut or ""
        self._ports = ports
        if self.interface and not self.io_manager_url:
            raise BenchError(
                f"energy mode through the {self.interface} IO manager needs its serial port: "
                "pass --interface-port (see `tinypower doctor`)"
            )
        if not self.interface and not self.dut_url:
            raise BenchError(
                f"no serial port for {board.name}'s UART: plug its USB cable in or pass --port "
                "(see `tinypower doctor`)"
            )

    def connect_meter(self, **driver_options: object) -> Meter:
        try:
            return connect_meter(self.monitor, self._ports.monitor, **driver_options)
        except ValueError as exc:
            raise BenchError(str(exc)) from exc

    def failure(self) -> None:
        """The bench has no process of ours that could fail: its faults show on its ports."""
        return None

    def close(self) -> None:
        """Nothing to stop: the instruments are the user's."""

    def __enter__(self) -> HardwareBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
