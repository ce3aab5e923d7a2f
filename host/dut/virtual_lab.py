"""The virtual lab: a software DUT and a simulated energy monitor on one virtual clock.

Both sit on real transports (ptys, loopback sockets, or the vendor API for USB-only meters), so
the runner reaches them through the real protocol client and the real meter driver, exactly as
it reaches hardware. The shared :class:`VirtualClock` lets a 10 s inference window pass in
milliseconds of wall time. The timeline also gives tests the exact energy the simulated supply
delivered (the ground truth).
"""

from __future__ import annotations

from energy_monitor.meter import Meter
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.registry import SimulatedMeter, start_simulated_meter
from tinypower.boards import Board
from tinypower.dut.io_manager import DEFAULT_DUT_BAUD
from tinypower.dut.io_manager_sim import IoManagerSimulator
from tinypower.dut.software_dut import SoftwareDut
from tinypower.suites.benchmarks import Suite


class VirtualLab:
    """Use as a context manager; ``dut_url`` is the DUT's port, :meth:`connect_meter` gives the
    real driver of the simulated monitor (``monitor`` kind, default the board's). With an
    ``interface`` (``arduino`` or ``mlcommons``) a simulated IO manager sits on the DUT's port
    and the host opens ``io_manager_url`` instead, as in an energy-mode setup."""

    boot_s = 0.02  # the software DUT boots at once; its banner's line time is virtual

    def __init__(
        self, *, board: Board, suite: Suite, model: bytes, macs: int, mode: str,
        monitor: str | None = None, meter_faults: SimFaults | None = None,
        corrupt_download_byte: int | None = None, interface: str | None = None,
    ) -> None:
        if board.energy_model is None or board.cycle_model is None:
            raise ValueError(f"board {board.name} has no cycle and energy model to simulate")
        self.monitor = monitor or board.monitor_kind
        self.clock = VirtualClock()
        # In energy mode only the monitor supplies the DUT: it stays off (silent) until the
        # monitor's simulator switches its output on. Otherwise USB powers it from the start.
        self.timeline = LoadTimeline(
            self.clock, board.energy_model.idle_current_a, powered=mode != "energy"
        )
        self.dut = SoftwareDut(
            model=model, suite=suite, board=board, timeline=self.timeline, mode=mode, macs=macs,
            corrupt_download_byte=corrupt_download_byte,
            uart_baud=board.uart_baud.get(mode, DEFAULT_DUT_BAUD),
        )
        self._meter_faults = meter_faults
        self._meter: SimulatedMeter | None = None
        self.dut_url = ""
        self._interface = interface
        self._dut_baud = board.uart_baud.get("energy", DEFAULT_DUT_BAUD)
        self.io_manager: IoManagerSimulator | None = None
        self.io_manager_url = ""

    def start(self) -> VirtualLab:
        self.dut_url = self.dut.start()
        if self._interface is not None:
            self.io_manager = IoManagerSimulator(self.dut_url, self._interface, self._dut_baud)
            self.io_manager_url = self.io_manager.start()
        return self

    def connect_meter(self, **driver_options: object) -> Meter:
        """Start the simulated monitor and return its real driver, connected."""
        self._meter = start_simulated_meter(self.monitor, self.timeline, self._meter_faults)
        return self._meter.connect(**driver_options)

    @property
    def meter_sample_rate_hz(self) -> float | None:
        return self._meter.default_sample_rate_hz if self._meter else None

    def failure(self) -> None:
        """Nothing of the lab's own can fail beside what the runner sees on its ports."""
        return None

    def close(self) -> None:
        if self.io_manager is not None:
            self.io_manager.close()
        self.dut.close()
        if self._meter:
            self._meter.close()

    def __enter__(self) -> VirtualLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
