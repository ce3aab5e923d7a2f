"""Benchmark: per-operator instruction costs of our firmware under QEMU, for the virtual lab.

The virtual lab's DUT takes as long per inference as our own firmware would: each operator
type costs so many instructions per MAC, and a convolution so many more per kernel position,
fitted (least squares, :mod:`tinypower.dut.latency_model`) to the instructions per inference
the benchmark firmware actually executes under QEMU's instruction counter for the MLPerf Tiny
reference models (measured as
``benchmarks/bench_firmware.py`` does: the real runner, performance mode, the firmware's own
timer at ``-icount shift=N``). The firmware gets faster (issue 15): run this again and commit
the file it writes, ``host/dut/firmware_costs.json``, which the virtual lab reads.

Prints per model the measured and the modelled instructions and their ratio, then the costs.

Run: ``.venv/bin/python benchmarks/bench_latency_model.py [SUITE ...] [--iterations 3]``.
Needs arm-none-eabi-gcc, qemu-system-arm and the shared models (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench_firmware import BOARD, SHARED, SUITES

from tinypower.boards import load_board
from tinypower.dut.latency_model import COSTS_FILE, FirmwareCosts, fit_costs
from tinypower.emulator import emulator_config
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs
from tinypower.suites.model_info import macs_by_op


def instructions_per_inference(suite_name: str, iterations: int, folder: Path) -> float:
    """What the virtual lab must reproduce: the firmware's own timer in MLPerf Tiny
    performance mode (harness included), read through the real runner on the emulated board,
    as instructions (QEMU runs one instruction per 2^shift ns)."""
    board = load_board(BOARD)
    suite = get_suite(suite_name)
    model = resolve_model(suite, str(SHARED / suite.reference_model))
    outcome = run(RunRequest(board=board, suite=suite, model=model,
                             dataset=synthetic_inputs(suite, 1), mode="performance",
                             runs_dir=folder / "runs", iterations=iterations, warmups=0))
    if outcome.error is not None or outcome.result is None:
        raise SystemExit(f"{suite_name}: the run failed: {outcome.error}")
    latency_ms = outcome.result.extras["latency_ms"]
    return latency_ms * 1e6 / 2 ** emulator_config(board).icount_shift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"any of {', '.join(SUITES)} (default: all four, needed to fit)")
    parser.add_argument("--iterations", type=int, default=3,
                        help="inferences per timed window (default 3)")
    parser.add_argument("--out", type=Path, default=COSTS_FILE,
                        help=f"where to write the costs (default {COSTS_FILE})")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"the MLPerf Tiny reference models are not at {SHARED}")
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        for name in args.suites or SUITES:
            instructions = instructions_per_inference(name, args.iterations, Path(folder))
            data = (SHARED / get_suite(name).reference_model).read_bytes()
            measured[name] = {"instructions": round(instructions),
                              "ops": macs_by_op(data)}
    costs = fit_costs(measured)
    shift = emulator_config(load_board(BOARD)).icount_shift
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    document = {
        "generated_by": "benchmarks/bench_latency_model.py",
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "firmware_commit": commit, "board": BOARD, "icount_shift": shift,
        "costs": costs.record(), "measured": measured,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    model = FirmwareCosts.from_record(costs.record())
    print("model | measured instr | modelled instr | modelled/measured")
    print("--- | --- | --- | ---")
    for name, m in measured.items():
        predicted = model.instructions(m["ops"])
        print(f"{name} | {m['instructions']:,} | {predicted:,.0f} | "
              f"{predicted / m['instructions']:.3f}")
    print(f"\ncosts (instructions): {json.dumps(costs.record())}")
    print(f"written to {args.out} (firmware {commit}, QEMU icount shift {shift})")


if __name__ == "__main__":
    main()
