"""Rescoring speed: published results re-derived per second, with and without CLI start-up.

Rescores every case of ``shared/mlperf-logs`` (the whole folder, one tree walk) three ways,
alternating so drift in the machine's load spreads evenly:

- ``in-process``: :func:`rescore_tree` in this process (CLI start-up excluded);
- ``CLI``: ``tinypower rescore <folder> --json`` as a fresh process (start-up included);
- ``python -c pass``: a bare interpreter start, the anchor for what start-up alone costs.

The table shows the median seconds per run, results per second, and the ratio to the
in-process run. A large whole-repository rescore is dominated by the in-process rate.

    .venv/bin/python benchmarks/bench_rescore.py [--repeats 5] [--folder PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tinypower.results.rescore import rescore_tree

LOGS = Path(__file__).resolve().parents[2] / "shared" / "mlperf-logs"
TINYPOWER = Path(sys.executable).with_name("tinypower")


def in_process(folder: Path) -> int:
    return len(list(rescore_tree(folder)))


def cli(folder: Path) -> int:
    out = subprocess.run([str(TINYPOWER), "rescore", str(folder), "--json"],
                         capture_output=True, text=True, check=False)
    if out.returncode not in (0, 1):
        raise SystemExit(f"tinypower rescore failed ({out.returncode}): {out.stderr.strip()}")
    return len(out.stdout.splitlines())


def bare_python(_folder: Path) -> int:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=LOGS)
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"error: {args.folder} not found (the shared published logs)", file=sys.stderr)
        return 2
    runs = {"in-process": in_process, "CLI": cli, "python -c pass": bare_python}
    times: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    in_process(args.folder)  # warm the file cache and imports once, untimed
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            counts[name] = fn(args.folder)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["in-process"])
    results = counts["in-process"]
    print(f"rescoring {results} results under {args.folder} ({args.repeats} runs each, median)")
    print(f"{'run':<16} {'s/run':>9} {'results/s':>10} {'x in-process':>13}")
    for name in runs:
        med = statistics.median(times[name])
        rate = f"{counts[name] / med:10.1f}" if counts[name] else f"{'-':>10}"
        print(f"{name:<16} {med:9.3f} {rate} {med / base:13.2f}")
    if counts["CLI"] != results:
        print(f"warning: the CLI reported {counts['CLI']} results, in-process {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
