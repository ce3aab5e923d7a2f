"""On a machine with an NVIDIA GPU: does NVML's energy counter agree with power polling?

Runs a short GPU load (matrix products with torch, else cupy; with neither, the GPU idles and
the table says so) while two NVML meters read GPU 0 over the same window: one from the total
energy counter, one polling the power reading. Prints each one's energy and mean power over
the load window (1 s before the load to 1 s after it) and how far apart they are.

    .venv/bin/python benchmarks/gpu_nvml_check.py [--gpu 0] [--load-s 10] [--poll-s 0.05]

Expect agreement within a few percent: on Ampere (except GA100) and newer the power reading is
a one-second average, so polling lags the load's edges; the counter does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energy_monitor.meter import MeterError  # noqa: E402
from energy_monitor.nvml import Nvml  # noqa: E402


def gpu_load(gpu: int) -> tuple[str, Callable[[float], int]]:
    """(description, run(seconds) -> matrix products done) for the first library found."""
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.device(f"cuda:{gpu}")
            a = torch.randn(8192, 8192, device=device, dtype=torch.float16)
            b = torch.randn(8192, 8192, device=device, dtype=torch.float16)

            def run_torch(seconds: float) -> int:
                done, end = 0, time.monotonic() + seconds
                while time.monotonic() < end:
                    for _ in range(20):
                        a @ b
                    torch.cuda.synchronize(device)
                    done += 20
                return done

            return f"torch {torch.__version__} fp16 8192x8192 matmul", run_torch
    except ImportError:
        pass
    try:
        import cupy

        with cupy.cuda.Device(gpu):
            a = cupy.random.random((8192, 8192), dtype=cupy.float32)

        def run_cupy(seconds: float) -> int:
            done, end = 0, time.monotonic() + seconds
            with cupy.cuda.Device(gpu):
                while time.monotonic() < end:
                    for _ in range(5):
                        a @ a
                    cupy.cuda.Device(gpu).synchronize()
                    done += 5
            return done

        return f"cupy {cupy.__version__} fp32 8192x8192 matmul", run_cupy
    except ImportError:
        pass

    def idle(seconds: float) -> int:
        time.sleep(seconds)
        return 0

    return "NO LOAD (neither torch with CUDA nor cupy is installed): the GPU idles", idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--load-s", type=float, default=10.0)
    parser.add_argument("--poll-s", type=float, default=0.05)
    args = parser.parse_args()
    try:
        counter = Nvml(args.gpu, mode="energy", poll_interval_s=args.poll_s)
        polling = Nvml(args.gpu, mode="power", poll_interval_s=args.poll_s)
    except MeterError as exc:
        print(f"gpu_nvml_check: {exc}", file=sys.stderr)
        return 1
    what, run = gpu_load(args.gpu)
    print(f"GPU {args.gpu}: {counter.names[0]} ({counter.uuids[0]}); load: {what}")
    run(1.0)  # warm up (allocations, clocks) before measuring
    counter.start()
    polling.start()
    time.sleep(2.0)
    load_start = time.time()
    products = run(args.load_s)
    load_end = time.time()
    time.sleep(2.0)
    energy_series = counter.stop()
    power_series = polling.stop()
    counter.close()
    polling.close()

    start, end = load_start - 1.0, load_end + 1.0
    max_gap_s = max(5 * args.poll_s, 0.5)
    rows = []
    for name, series in (("energy counter", energy_series), ("power polling", power_series)):
        result = series.energy(start, end, max_gap_s=max_gap_s)
        rows.append((name, result.energy_j, result.mean_power_w, result.readings,
                     result.coverage))
    reference = rows[0][1]
    print(f"window {end - start:.2f} s (load {load_end - load_start:.2f} s, "
          f"{products} matrix products), readings every {args.poll_s:g} s")
    print(f"{'method':<16} {'energy J':>12} {'mean W':>10} {'readings':>9} {'coverage':>9} "
          f"{'vs counter':>11}")
    for name, energy_j, power_w, readings, coverage in rows:
        diff = (energy_j - reference) / reference * 100 if reference else float("nan")
        print(f"{name:<16} {energy_j:>12.3f} {power_w:>10.3f} {readings:>9d} {coverage:>9.3f} "
              f"{diff:>+10.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
