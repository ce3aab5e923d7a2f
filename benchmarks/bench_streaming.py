"""Benchmark: each simulated instrument streamed at its top rate into its real driver.

For every meter in the simulator registry, in its own process (so peak RSS is its own): the
simulator streams 60 s of instrument time at the instrument's top rate while the DUT's load
toggles once a second; the real driver ingests it, writing samples to disk. Prints samples/s
ingested (must be >= the instrument's rate to keep up in real time), the ratio to that rate,
peak RSS (target < 200 MB) and samples dropped (target 0).

Run: ``.venv/bin/python benchmarks/bench_streaming.py [KIND ...] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.registry import SIMULATED_METERS, start_simulated_meter

VOLTAGE_V = 1.8


def measure(kind: str, seconds: int) -> dict:
    clock = VirtualClock()
    timeline = LoadTimeline(clock, 0.001)
    sim = start_simulated_meter(kind, timeline)
    meter = sim.connect(measured_as="simulated")
    rate = sim.max_sample_rate_hz
    try:
        meter.identify()
        meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=rate)
        with tempfile.TemporaryDirectory() as folder:
            meter.start(Path(folder))
            t0 = time.perf_counter()
            for s in range(seconds):
                with timeline.lock:
                    t = clock.now()
                    timeline.set_current(t, 0.010 if s % 2 else 0.002)
                    timeline.add_edge(t + 0.25, "fall")
                    timeline.add_edge(t + 0.2501, "rise")
                    clock.advance(1.0)
                deadline = time.monotonic() + 30
                # Whole periods only: the last sample of each second may still be in flight.
                while meter.sample_count() < (s + 1) * rate - 1:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{kind}: driver fell 30 s behind the simulator")
                    time.sleep(0.001)
            # Virtual time also runs with the wall clock, so the last edge may lie a little past
            # the samples awaited above: wait for it too.
            meter.wait_for_events(seconds, 30)
            trace = meter.stop()
            wall = time.perf_counter() - t0
            samples = len(trace)
            drops = sum(d.missing for d in trace.drops)
            events = len(trace.events)
    finally:
        meter.close()
        sim.close()
    return {
        "kind": kind,
        "rate_hz": rate,
        "instrument_s": seconds,
        "samples": samples,
        "ingest_per_s": samples / wall,
        "ratio": samples / wall / rate,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "drops": drops,
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=sorted(SIMULATED_METERS))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.kinds[0], args.seconds)))
        return
    print(f"{'meter':<12}{'rate (S/s)':>12}{'ingested (S/s)':>16}{'ratio':>8}"
          f"{'peak RSS (MB)':>15}{'drops':>7}{'edges':>7}")
    for kind in args.kinds:
        proc = subprocess.run(
            [sys.executable, __file__, kind, "--seconds", str(args.seconds), "--child"],
            capture_output=True, text=True,
        )
        if proc.returncode:
            print(f"{kind:<12} failed: {proc.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(proc.stdout)
        print(f"{kind:<12}{r['rate_hz']:>12,.0f}{r['ingest_per_s']:>16,.0f}{r['ratio']:>7.1f}x"
              f"{r['peak_rss_mb']:>15.1f}{r['drops']:>7}{r['events']:>7}")


if __name__ == "__main__":
    main()
