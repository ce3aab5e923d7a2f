"""Measurement overhead on the workload: LoadGen throughput with and without the meters polling.

The workload (the MLPerf Tiny KWS model under LoadGen, as `tinypower measure --sut local` runs
it) runs as a child process; in the "meters polling" runs this process meanwhile runs what
the local setup runs beside it: the PTDaemon simulator sampling at 1 Hz, the real PTD driver
polling it (``RL`` every second) and, where readable, RAPL polled every second; "fast polling"
samples at 20 Hz and polls every 0.1 s. Runs alternate (baseline, polling, fast, ...) so
drift in the machine's load spreads evenly; the table shows the median throughput of each and
the slowdown against the baseline (target: under 1%). On a busy machine the throughput varies
run to run by more than the target, so the table also gives a noise-free bound: the CPU time
the meters used (this process) as a share of the CPU time the workload used (the child), which
is the most the meters can take from a workload that keeps every core busy.

    .venv/bin/python benchmarks/bench_overhead.py [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from energy_monitor.meter import MeterError
from energy_monitor.ptd import Ptd
from energy_monitor.sim.ptd_sim import PtdSimulator, cpu_utilisation_power
from tinypower.scale import workload as wl

MODEL = Path(__file__).resolve().parents[2] / "shared/models/mlperf-tiny/kws_ref_model.tflite"
THROUGHPUT_KEYS = {"Offline": "result_samples_per_second",
                   "SingleStream": "result_qps_with_loadgen_overhead"}


@contextlib.contextmanager
def meters_polling(sample_period_s: float, poll_interval_s: float, folder: Path):
    """The director's side of a local measurement, running while the workload runs."""
    with PtdSimulator(cpu_utilisation_power(), sample_period_s=sample_period_s) as sim:
        ptd = Ptd(sim.address, measured_as="simulated", poll_interval_s=poll_interval_s)
        rapl = None
        try:
            from energy_monitor.series_meters import connect_series_meter
            rapl = connect_series_meter("rapl", None, poll_interval_s=poll_interval_s)
            rapl.start(None)
        except (MeterError, OSError, ValueError, ImportError):
            rapl = None  # not readable here: the PTD path alone
        ptd.start(folder)
        try:
            yield "ptd+rapl" if rapl else "ptd"
        finally:
            ptd.stop()
            ptd.close()
            if rapl is not None:
                rapl.stop()
                rapl.close()


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def throughput(scenario: str, seconds: float, folder: Path) -> tuple[float, float]:
    """(throughput, CPU seconds of this process / CPU seconds of the workload) for one run."""
    spec = wl.LoadGenSpec(MODEL, scenario, min_duration_s=seconds, min_query_count=1)
    log_dir, output = folder / "log", folder / "workload.log"
    t0 = time.time()
    self0, child0 = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    proc = wl.start(spec, log_dir, output)
    proc.wait()
    self_s = _cpu_s(resource.RUSAGE_SELF) - self0
    child_s = _cpu_s(resource.RUSAGE_CHILDREN) - child0
    run = wl.finish(spec, proc, log_dir, output, t0, time.time())
    return float(run.log[THROUGHPUT_KEYS[scenario]]), self_s / child_s  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="LoadGen min duration per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if not MODEL.is_file():
        print(f"the KWS reference model is not at {MODEL}", file=sys.stderr)
        return 2
    configs = {"baseline": None, "meters polling (1 Hz)": (1.0, 1.0),
               "fast polling (20 Hz)": (0.05, 0.1)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in THROUGHPUT_KEYS:
            results: dict[str, list[float]] = {name: [] for name in configs}
            cpu: dict[str, list[float]] = {name: [] for name in configs}
            labels: dict[str, str] = {}
            for rep in range(args.repeats):
                for name, polling in configs.items():
                    folder = Path(tmp) / f"{scenario}-{rep}-{len(results[name])}-{name[:4]}"
                    folder.mkdir()
                    if polling is None:
                        rate, share = throughput(scenario, args.seconds, folder)
                        labels[name] = "-"
                    else:
                        with meters_polling(*polling, folder) as meters:
                            labels[name] = meters
                            rate, share = throughput(scenario, args.seconds, folder)
                    results[name].append(rate)
                    cpu[name].append(share)
            base = statistics.median(results["baseline"])
            for name, values in results.items():
                median = statistics.median(values)
                rows.append((scenario, name, labels[name], median, min(values), max(values),
                             (base - median) / base * 100,
                             (statistics.median(cpu[name]) - statistics.median(cpu["baseline"]))
                             * 100))
    unit = {"Offline": "samples/s", "SingleStream": "queries/s"}
    print(f"LoadGen throughput, KWS model, {args.seconds:g} s runs, median of {args.repeats} "
          "(alternating)")
    print(f"{'scenario':<13} {'configuration':<22} {'meters':<9} {'median':>10} {'min':>10} "
          f"{'max':>10} {'unit':<10} {'slowdown':>9} {'meter CPU':>10}")
    for scenario, name, meters, median, lo, hi, slow, meter_cpu in rows:
        print(f"{scenario:<13} {name:<22} {meters:<9} {median:>10.1f} {lo:>10.1f} {hi:>10.1f} "
              f"{unit[scenario]:<10} {slow:>8.2f}% {meter_cpu:>9.2f}%")
    print("meter CPU: the meters' CPU time as a share of the workload's, above the baseline "
          "(the bound on the slowdown of a CPU-bound workload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
