"""The virtual lab's devices as a standalone bench: a software DUT and a simulated energy
monitor on one virtual clock, each on its own pty, for a labgrid exporter to publish.

In the in-process virtual lab the runner opens the DUT and the monitor itself; a farm reaches
a bench only through its exporter, so here the two devices run in their own process (as a
board and its monitor sit on an exporter's host) and write the exporter configuration that
shares their ptys through ser2net::

    python -m tinypower.farm.virtual_bench --exporter-config bench.yaml --group sim-bench

It serves until SIGTERM or Ctrl-C. The software DUT answers tinypower's ``mode`` command, so
one bench serves every mode (the runner switches it, as it does tinypower's firmware).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator
from energy_monitor.sim.ppk2_sim import Ppk2Simulator
from tinypower.boards import BoardError, load_board
from tinypower.dut.software_dut import SoftwareDut
from tinypower.models import ModelResolutionError, resolve_model
from tinypower.suites.benchmarks import SUITES, get_suite

# The monitors on a serial port (which ser2net can share), by the simulator that plays them.
SERIAL_MONITORS = {"lpm01a": Lpm01aSimulator, "ppk2": Ppk2Simulator}


def exporter_config(group: str, dut_path: str, monitor_path: str) -> str:
    """A labgrid exporter configuration sharing the two ptys as ``dut`` and ``monitor``."""
    return (
        f"{group}:\n"
        f"  dut:\n    cls: RawSerialPort\n    port: {dut_path}\n    speed: 115200\n"
        f"  monitor:\n    cls: RawSerialPort\n    port: {monitor_path}\n    speed: 115200\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinypower.farm.virtual_bench",
        description="Serve the virtual lab's DUT and energy monitor on ptys for a labgrid "
                    "exporter, until SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--board", default="sim-m4", help="a virtual board (default: sim-m4)")
    parser.add_argument("--suite", default="kws01", choices=sorted(SUITES))
    parser.add_argument("--model", default="synthetic",
                        help="the model the DUT runs: 'synthetic', 'reference' or a .tflite path")
    parser.add_argument("--exporter-config", type=Path, required=True,
                        help="where to write the labgrid exporter configuration")
    parser.add_argument("--group", default="sim-bench",
                        help="the resource group name in that configuration")
    args = parser.parse_args(argv)
    try:
        board = load_board(args.board)
        suite = get_suite(args.suite)
        model = resolve_model(suite, args.model)
    except (BoardError, ModelResolutionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if board.kind != "virtual" or board.energy_model is None:
        print(f"error: {board.name} is a {board.kind} board: the virtual bench simulates "
              "virtual boards (such as sim-m4)", file=sys.stderr)
        return 2
    if board.monitor_kind not in SERIAL_MONITORS:
        print(f"error: {board.name} is measured by a {board.monitor_kind}, which has no serial "
              f"port to share: the virtual bench serves {', '.join(SERIAL_MONITORS)}",
              file=sys.stderr)
        return 2
    timeline = LoadTimeline(VirtualClock(), board.energy_model.idle_current_a)
    dut = SoftwareDut(model=model.data, suite=suite, board=board, timeline=timeline,
                      mode="performance", macs=model.info.macs)
    meter = SERIAL_MONITORS[board.monitor_kind](timeline)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        dut_path = dut.start()
        monitor_path = meter.start()
        args.exporter_config.write_text(exporter_config(args.group, dut_path, monitor_path))
        print(json.dumps({"dut": dut_path, "monitor": monitor_path}), flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        meter.close()
        dut.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
