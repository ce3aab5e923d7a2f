"""Benchmark: the benchmark firmware on the four MLPerf Tiny reference models under QEMU icount.

For each model (kws01, vww01, ic01, ad01 from ``../shared/models/mlperf-tiny/``), the firmware
is built for ``qemu-an386`` and run through the real host runner in performance mode (a fixed,
small iteration count: the windows are too short to be a valid MLPerf Tiny result, which does
not matter here). Under ``-icount shift=N`` every guest instruction takes 2^N ns of firmware
time, so the firmware's own latency converts exactly to instructions per inference (QEMU models
no cycles: this is an instruction count, not a Cortex-M4 cycle count). Prints per model:

- MACs per inference (``tinypower.suites.model_info``), instructions per inference and per MAC;
- the tensor arena ours (planned by ``tinypower.codegen``) and the smallest one the tflite-micro
  interpreter accepts (the issue's target: ours no larger, for every model);
- the linked firmware image's flash (text + data) and RAM (data + bss, without the stack).

Run: ``.venv/bin/python benchmarks/bench_firmware.py [SUITE ...] [--iterations 3]``.
Needs arm-none-eabi-gcc, qemu-system-arm and the shared models. Takes 2-4 minutes, vww01
the longest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tinypower import codegen
from tinypower.boards import load_board
from tinypower.emulator import emulator_config
from tinypower.firmware import build_firmware
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import Dataset, Sample, synthetic_inputs
from tinypower.suites.model_info import read_model_info

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"
SUITES = ("kws01", "vww01", "ic01", "ad01")
BOARD = "qemu-an386"
SAMPLES = {  # a real input where the shared folder has one; vww01 gets a synthetic image
    "kws01": "kws01_sample0.bin",
    "ic01": "ic01_sample0.bin",
    "ad01": "ad01_normal_id_01_00000000_hist_librosa.bin",
}


@dataclass(frozen=True)
class Row:
    suite: str
    macs: int
    latency_ms: float
    instructions: float
    arena_bytes: int
    tflm_arena_bytes: int
    flash_bytes: int
    ram_bytes: int
    wall_s: float

    @property
    def instructions_per_mac(self) -> float:
        return self.instructions / self.macs


def first_input(suite_name: str) -> bytes:
    suite = get_suite(suite_name)
    name = SAMPLES.get(suite_name)
    if name is None:
        return synthetic_inputs(suite, 1).samples[0].data
    return suite.windows_of((SHARED / "samples" / name).read_bytes())[0]


def elf_sizes(elf: Path) -> tuple[int, int]:
    """(flash, RAM) of a linked image from arm-none-eabi-size: text + data, data + bss."""
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text + data, data + bss


def measure(suite_name: str, iterations: int, folder: Path) -> Row:
    start = time.monotonic()
    board = load_board(BOARD)
    suite = get_suite(suite_name)
    model_path = SHARED / suite.reference_model
    model = resolve_model(suite, str(model_path))
    built = codegen.build(model_path, board, folder / f"{suite_name}-lib")
    firmware = build_firmware(board, suite, model.data, cache_dir=folder / "firmware")
    flash_bytes, ram_bytes = elf_sizes(firmware.elf)
    dataset = Dataset("files", [Sample(f"{suite_name}.bin", first_input(suite_name), None)], 1)
    outcome = run(RunRequest(board=board, suite=suite, model=model, dataset=dataset,
                             mode="performance", runs_dir=folder / "runs",
                             iterations=iterations, warmups=0))
    if outcome.error is not None or outcome.result is None:
        raise SystemExit(f"{suite_name}: the run failed: {outcome.error}")
    assert outcome.measured_as == "emulated"
    latency_ms = outcome.result.extras["latency_ms"]
    shift = emulator_config(board).icount_shift
    instructions = latency_ms * 1e6 / 2**shift  # one instruction per 2^shift ns
    return Row(suite_name, read_model_info(model.data).macs, latency_ms, instructions,
               built.arena_bytes, built.tflm_arena_bytes, flash_bytes, ram_bytes,
               time.monotonic() - start)


def table(rows: list[Row], shift: int) -> str:
    header = ("model", "MACs", "latency ms", "instr/inference", "instr/MAC", "arena ours",
              "arena tflm", "ours/tflm", "flash", "RAM", "wall s")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        lines.append(" | ".join((
            r.suite, f"{r.macs:,}", f"{r.latency_ms:.3f}", f"{r.instructions:,.0f}",
            f"{r.instructions_per_mac:.2f}", f"{r.arena_bytes:,}", f"{r.tflm_arena_bytes:,}",
            f"{r.arena_bytes / r.tflm_arena_bytes:.2f}", f"{r.flash_bytes:,}",
            f"{r.ram_bytes:,}", f"{r.wall_s:.1f}")))
    worst = max(rows, key=lambda r: r.arena_bytes / r.tflm_arena_bytes)
    verdict = ("met" if worst.arena_bytes <= worst.tflm_arena_bytes else "NOT met")
    lines.append("")
    lines.append(f"Emulated ({BOARD}, QEMU -icount shift={shift}: 1 instruction = {2**shift} ns); "
                 "instructions, not cycles. Flash and RAM: the linked firmware image (harness, "
                 "port, kernels, model), RAM without the stack.")
    lines.append(f"Target 'arena no larger than tflite-micro's for every model': {verdict} "
                 f"(largest ratio {worst.arena_bytes / worst.tflm_arena_bytes:.2f}, "
                 f"{worst.suite}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"any of {', '.join(SUITES)} (default: all four)")
    parser.add_argument("--iterations", type=int, default=3,
                        help="inferences per timed window (default 3)")
    args = parser.parse_args()
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}: use {', '.join(SUITES)}")
    if not SHARED.is_dir():
        sys.exit(f"the MLPerf Tiny reference models are not at {SHARED}")
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as folder:
        rows = [measure(s, args.iterations, Path(folder)) for s in args.suites or SUITES]
    print(table(rows, emulator_config(load_board(BOARD)).icount_shift))


if __name__ == "__main__":
    main()
