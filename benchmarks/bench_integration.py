"""Benchmark: trace-integration speed against a bandwidth probe, and the default run's wall time.

Integration: for each trace kind (energy, power, current x voltage in float64, and the
Joulescope's float32 current x voltage) :func:`integrate` runs over five windows covering a
5e7-sample trace, side by side in the same loop with the *bandwidth probe*: a bare ``np.sum``
over every column the trace stores, i.e. reading the same bytes once. Target (issue 18): each
kind within 1.25x the probe. The default `tinypower measure` should stay well under 2 minutes.
Run: ``.venv/bin/python benchmarks/bench_integration.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from energy_monitor.trace import Trace, Window, integrate

SAMPLES = 50_000_000
RATE_HZ = 100_000.0
WINDOWS = 5
REPEATS = 7
TARGET_RATIO = 1.25


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
        "current x voltage, float64 (PPK2, Otii)": (
            Trace(RATE_HZ, current_a=current, voltage_v=voltage), [current, voltage]),
        "current x voltage, float32 (Joulescope)": (
            Trace(RATE_HZ, current_a=current32, voltage_v=voltage32), [current32, voltage32]),
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


def default_run_seconds() -> list[float]:
    times = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as runs:
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tinypower.cli", "measure", "--runs-dir", runs, "--json"],
                check=True, capture_output=True,
            )
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    print(f"{'trace kind (5e7 samples)':<42} {'ours ms':>9} {'probe ms':>9} {'ratio':>7} "
          f"{'target':>7} {'samples/s':>10}")
    for name, (trace, columns) in traces().items():
        ours, probe = integration_seconds(trace, columns)
        o, p = statistics.median(ours), statistics.median(probe)
        print(f"{name:<42} {o * 1e3:>9.1f} {p * 1e3:>9.1f} {o / p:>6.2f}x "
              f"{TARGET_RATIO:>6.2f}x {SAMPLES / o:>10.2e}")
    runs = default_run_seconds()
    print(f"{'default measure, perf + energy (wall s)':<42} {statistics.median(runs):>9.2f} "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)})")
    print("probe: a bare np.sum over every column the trace stores (the same bytes, read once);"
          " medians of paired repeats")


if __name__ == "__main__":
    main()
