"""tinypower from Python: an MLPerf Tiny measurement, then the energy of a block of code.

    python docs/examples/python_api.py [--runs-dir DIR] [--ptd HOST:PORT]

Without --ptd the block is measured with this machine's RAPL and NVML (whichever can be read);
with it, through SPEC PTDaemon (or tinypower's PTDaemon simulator) at HOST:PORT.
tests/test_api.py runs this file as it is.
"""

from __future__ import annotations

import argparse
import time

import tinypower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--ptd", metavar="HOST:PORT")
    args = parser.parse_args()

    # 1. Energy per inference of kws01 on the virtual lab, under the MLPerf Tiny rules.
    record = tinypower.measure(board="sim-m4", suite="kws01", model="synthetic", mode="energy",
                               runs_dir=args.runs_dir)
    print(f"kws01 energy: {record.value:.1f} {record.unit}, valid={record.valid}, "
          f"{record.measured_as}, session {record.source}")

    # 2. The energy of a block of code, Zeus-style.
    monitor = (tinypower.EnergyMonitor.remote("ptd", args.ptd, poll_interval_s=0.05)
               if args.ptd else tinypower.EnergyMonitor())
    with monitor:
        monitor.begin_window("sum")
        total = sum(i * i for i in range(2_000_000))
        window = monitor.end_window("sum")
        print(f"sum={total}: {window.energy_j:.3f} J in {window.duration_s:.3f} s "
              f"({window.mean_power_w:.1f} W, {window.readings} readings, "
              f"{window.measured_as})")
        with monitor.window("sleep") as block:
            time.sleep(0.3)
        print(f"sleep: {block.result.energy_j:.3f} J over {block.result.duration_s:.3f} s")
        monitor.begin_window("blink")  # far shorter than the meter's reading interval
        window = monitor.end_window("blink")
        print(f"blink: {window.energy_j:.6f} J, interpolated={window.interpolated}: "
              f"{window.note}")


if __name__ == "__main__":
    main()
