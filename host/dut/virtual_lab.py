"""The virtual lab: a software DUT and a simulated LPM01A on one virtual clock, in one process.

Both sit on real ptys, so the runner reaches them through the real protocol client and the real
LPM01A driver, exactly as it reaches hardware. The shared :class:`VirtualClock` lets a 10 s
inference window pass in milliseconds of wall time. The timeline also gives tests the exact
energy the simulated supply delivered (the ground truth).
"""

from __future__ import annotations

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator, SimFaults
from tinypower.boards import Board
from tinypower.dut.software_dut import SoftwareDut
from tinypower.suites.benchmarks import Suite


class VirtualLab:
    """Start with :meth:`start`; ``dut_url`` and ``meter_url`` are the ptys to open."""

    def __init__(
        self, *, board: Board, suite: Suite, model: bytes, macs: int, mode: str,
        meter_faults: SimFaults | None = None, corrupt_download_byte: int | None = None,
    ) -> None:
        if board.energy_model is None or board.cycle_model is None:
            raise ValueError(f"board {board.name} has no cycle and energy model to simulate")
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, board.energy_model.idle_current_a)
        self.dut = SoftwareDut(
            model=model, suite=suite, board=board, timeline=self.timeline, mode=mode, macs=macs,
            corrupt_download_byte=corrupt_download_byte,
        )
        self.meter = Lpm01aSimulator(self.timeline, faults=meter_faults)
        self.dut_url = ""
        self.meter_url = ""

    def start(self) -> VirtualLab:
        self.meter_url = self.meter.start()
        self.dut_url = self.dut.start()
        return self

    def close(self) -> None:
        self.dut.close()
        self.meter.close()

    def __enter__(self) -> VirtualLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
