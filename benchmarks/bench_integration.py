"""Benchmark: trace-integration speed against a bandwidth probe, and tinypower's start-up.

Integration: for each trace kind (energy, power, current x voltage in float64, the
Joulescope's float32 current x voltage, and the PPK2's current at one fixed voltage)
:func:`integrate` runs over five windows covering a 5e7-sample trace, side by side in the same
loop with the *bandwidth probe*: a bare ``np.sum`` over every column the trace stores, i.e.
reading the same bytes once. Target (issue 18): each kind within 1.25x the probe.
Start-up (issue 16): `tinypower --help` under 0.3 s and the default `tinypower measure` under
1.5 s wall on a 2-core machine, printed beside `python -c "import numpy"` timed in the same run
(the ratio is what survives a loaded machine).
Run: ``.venv/bin/python benchmarks/bench_integration.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from unittest.mock import patch

import numpy as np

from energy_monitor import trace as trace_module
from energy_monitor.trace import Trace, Window, float32_kernel, integrate

SAMPLES = 50_000_000
RATE_HZ = 100_000.0
WINDOWS = 5
REPEATS = 7
TARGET_RATIO = 1.25
FLOAT32_KIND = "current x voltage, float32 (Joulescope)"


def traces() -> dict[str, tuple[Trace, list[np.ndarray]]]:
    """One trace per kind, with the columns the probe reads."""
    rng = np.random.default_rng(1)
    energy = rng.random(SAMPLES)
    current = rng.random(SAMPLES) * 1e-3
    voltage = 1.8 + rng.random(SAMPLES) * 1e-3
    current32, voltage32 = current.astype(np.float32), voltage.astype(np.float32)
    return {
        "energy, float64 (LPM01A energy mode)": (
            Trace(RATE_HZ, energy_j=energy), [energy]),
        "power, float64": (Trace(RATE_HZ, power_w=energy), [energy]),
        "current x voltage, float64 (Otii)": (
            Trace(RATE_HZ, current_a=current, voltage_v=voltage), [current, voltage]),
        FLOAT32_KIND: (
            Trace(RATE_HZ, current_a=current32, voltage_v=voltage32), [current32, voltage32]),
        "current at a fixed voltage, float64 (PPK2)": (
            Trace(RATE_HZ, current_a=current,
                  voltage_v=np.broadcast_to(np.float64(1.8), current.shape)), [current]),
    }


def integration_seconds(trace: Trace, columns: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Wall time of integrating five windows over the whole trace, and of the probe, each
    repeat timing both back to back so machine load hits them alike."""
    bounds = np.linspace(0, len(trace), WINDOWS + 1, dtype=np.int64)
    windows = [
        Window(0, 0, 1, "bench", 1 / RATE_HZ, start_index=int(a), end_index=int(b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    ours, probe = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for w in windows:
            integrate(trace, w)
        t1 = time.perf_counter()
        for c in columns:
            np.sum(c)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        probe.append(t2 - t1)
    return ours, probe


STARTUP_REPEATS = 7
STARTUP_TARGETS_S = {"tinypower --help": 0.3, "default measure (perf + energy)": 1.5}


def startup_seconds() -> dict[str, list[float]]:
    """Wall seconds of `python -c "import numpy"` (the anchor), `tinypower --help` and the
    default run, interleaved in each repeat so machine load falls on all three alike."""
    cli = [sys.executable, "-m", "tinypower.cli"]
    times: dict[str, list[float]] = {"python -c 'import numpy'": [], "tinypower --help": [],
                                     "default measure (perf + energy)": []}
    for _ in range(STARTUP_REPEATS):
        with tempfile.TemporaryDirectory() as runs:
            for name, command in zip(times, (
                [sys.executable, "-c", "import numpy"], [*cli, "--help"],
                [*cli, "measure", "--runs-dir", runs, "--json"],
            ), strict=True):
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    return times


def print_row(name: str, ours: list[float], probe: list[float]) -> None:
    o, p = statistics.median(ours), statistics.median(probe)
    print(f"{name:<44} {o * 1e3:>9.1f} {p * 1e3:>9.1f} {o / p:>6.2f}x "
          f"{TARGET_RATIO:>6.2f}x {SAMPLES / o:>10.2e}")


def main() -> None:
    print(f"{'trace kind (5e7 samples)':<44} {'ours ms':>9} {'probe ms':>9} {'ratio':>7} "
          f"{'target':>7} {'samples/s':>10}")
    kinds = traces()
    for name, (trace, columns) in kinds.items():
        print_row(name, *integration_seconds(trace, columns))
    if float32_kernel():  # the same float32 trace as a machine without a C compiler runs it
        with patch.object(trace_module, "_f32_dot", None):
            print_row("  the same, numpy einsum (no compiled kernel)",
                      *integration_seconds(*kinds[FLOAT32_KIND]))
    print("probe: a bare np.sum over every column the trace stores (the same bytes, read once);"
          " medians of paired repeats")
    kernel = float32_kernel()
    print(f"float32 x float32: {f'compiled _f32dot ({kernel})' if kernel else 'numpy einsum'}"
          " (the compiled kernel is optional: setup.py)")
    startup = startup_seconds()
    numpy_s = statistics.median(startup["python -c 'import numpy'"])
    print(f"\n{'start-up (wall s, median of ' + str(STARTUP_REPEATS) + ')':<44} {'median':>9} "
          f"{'target':>9} {'x numpy':>8}")
    for name, runs in startup.items():
        target = STARTUP_TARGETS_S.get(name)
        print(f"{name:<44} {statistics.median(runs):>9.3f} "
              f"{f'{target:.2f}' if target else '-':>9} {statistics.median(runs) / numpy_s:>7.1f}x")


if __name__ == "__main__":
    main()
