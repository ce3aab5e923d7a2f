"""The emulated lab: the real benchmark firmware under QEMU, measured by a simulated monitor.

Where the virtual lab's software DUT models a board, here the firmware itself runs: built for
the board from the run's model (``tinypower.firmware``), started under QEMU
(``tinypower.emulator``), reached on its protocol UART by the real ``DutClient``. Its event
line (``energy_monitor.sim.event_line``) books the firmware's timestamp edges and activity on
a :class:`LoadTimeline` clocked by firmware time, and a simulated monitor integrates that
timeline, reached through its real driver, so an energy window is exactly as long as the
firmware's timer says. The interface matches :class:`~tinypower.dut.virtual_lab.VirtualLab`
so the runner drives both the same way.
"""

from __future__ import annotations

from energy_monitor.meter import Meter
from energy_monitor.sim.event_line import EventLine, FirmwareClock
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline
from energy_monitor.sim.registry import SimulatedMeter, start_simulated_meter
from tinypower.boards import Board
from tinypower.emulator import Emulator, EmulatorError, emulator_config
from tinypower.firmware import Firmware, build_firmware
from tinypower.suites.benchmarks import Suite

CONNECT_TIMEOUT_S = 10.0  # QEMU connects to the event line while it starts


class EmulatedLab:
    """Use as a context manager: builds (or reuses) the firmware, starts QEMU; ``dut_url`` is
    the protocol UART, :meth:`connect_meter` the real driver of the simulated monitor."""

    boot_s = 0.0  # the firmware runs from QEMU's start: no monitor switches its supply

    def __init__(
        self, *, board: Board, suite: Suite, model: bytes, monitor: str | None = None,
        meter_faults: SimFaults | None = None,
    ) -> None:
        if board.energy_model is None:
            raise ValueError(f"board {board.name} has no [energy_model] for the simulated meter")
        self.board = board
        self.suite = suite
        self.model = model
        self.monitor = monitor or board.monitor_kind
        self.config = emulator_config(board)
        self.clock = FirmwareClock()
        self.timeline = LoadTimeline(self.clock, board.energy_model.idle_current_a)
        energy = board.energy_model
        self.events = EventLine(
            self.timeline, self.clock, self.config.timer_hz,
            {0: energy.idle_current_a, 1: energy.io_current_a, 2: energy.active_current_a},
        )
        self.firmware: Firmware | None = None
        self.emulator: Emulator | None = None
        self.dut_url = ""
        self._meter_faults = meter_faults
        self._meter: SimulatedMeter | None = None

    def start(self) -> EmulatedLab:
        self.firmware = build_firmware(self.board, self.suite, self.model)
        port = self.events.listen()
        self.emulator = Emulator(self.firmware.elf, self.config, event_port=port)
        self.dut_url = self.emulator.start()
        if not self.events.wait_connected(CONNECT_TIMEOUT_S):
            raise EmulatorError(
                "QEMU did not connect to the event line: "
                + (self.emulator.failure() or f"nothing in {CONNECT_TIMEOUT_S:g} s")
            )
        return self

    def connect_meter(self, **driver_options: object) -> Meter:
        """Start the simulated monitor on the firmware-clocked timeline; its real driver."""
        self._meter = start_simulated_meter(self.monitor, self.timeline, self._meter_faults)
        return self._meter.connect(**driver_options)

    @property
    def meter_sample_rate_hz(self) -> float | None:
        return self._meter.default_sample_rate_hz if self._meter else None

    def failure(self) -> str | None:
        """What went wrong in the emulator or on its event line, if anything."""
        if self.emulator is not None and (why := self.emulator.failure()):
            return why
        return self.events.error

    def close(self) -> None:
        if self._meter is not None:
            self._meter.close()
        if self.emulator is not None:
            self.emulator.close()
        self.events.close()

    def __enter__(self) -> EmulatedLab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
