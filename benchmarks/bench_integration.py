"""Benchmark: trace-integration throughput and the wall time of the default run.

Prints a table. Targets (issue 2): integration of a 10^8-sample trace at >= 100x the fastest
LPM01A rate (100 kS/s, so >= 10^7 samples/s), and the default `tinypower measure` well under
2 minutes. Run: ``.venv/bin/python benchmarks/bench_integration.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from energy_monitor.trace import Trace, Window, integrate

SAMPLES = 100_000_000
RATE_HZ = 100_000.0
WINDOWS = 5
REPEATS = 5
LPM01A_MAX_RATE = 100_000


def integration_rate() -> list[float]:
    """Samples per second integrating five windows that together cover the whole trace."""
    energy = np.random.default_rng(1).random(SAMPLES)  # float64, 800 MB
    trace = Trace(sample_rate_hz=RATE_HZ, energy_j=energy)
    bounds = np.linspace(0, SAMPLES, WINDOWS + 1, dtype=np.int64)
    windows = [
        Window(0, 0, 1, "bench", 1 / RATE_HZ, start_index=int(a), end_index=int(b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for w in windows:
            integrate(trace, w)
        rates.append(SAMPLES / (time.perf_counter() - t0))
    return rates


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
    rates = integration_rate()
    runs = default_run_seconds()
    median_rate = statistics.median(rates)
    print(f"{'measure':<46} {'median':>14} {'target':>14} {'ratio':>8}")
    print(
        f"{'trace integration, 1e8 samples (samples/s)':<46} {median_rate:>14.3e} "
        f"{100 * LPM01A_MAX_RATE:>14.3e} {median_rate / (100 * LPM01A_MAX_RATE):>7.1f}x"
    )
    print(
        f"{'default measure, perf + energy (wall s)':<46} {statistics.median(runs):>14.2f} "
        f"{120:>14.2f} {120 / statistics.median(runs):>7.1f}x"
    )
    print(f"integration runs: {', '.join(f'{r:.3e}' for r in rates)}")
    print(f"default runs (s): {', '.join(f'{r:.2f}' for r in runs)}")


if __name__ == "__main__":
    main()
