"""Benchmark: our firmware kernels against CMSIS-NN, layer by layer, under the same QEMU count.

For each MLPerf Tiny reference model (kws01, vww01, ic01, ad01 from
``../shared/models/mlperf-tiny/``) two images are built for ``qemu-an386`` (Cortex-M4F,
``tinypower.codegen.arm_flags``, -O2) around the same program (``firmware_anchor/
bench_main.c``) and the same arena plan:

- **ours**: the C ``tinypower.codegen`` generates, with our kernels (``firmware/nn``);
- **CMSIS-NN**: the same layers, weights and parameters through Arm's CMSIS-NN, compiled from
  ``../shared/oracles/CMSIS-NN/`` (never copied into the project) and called as TFLite Micro's
  CMSIS-NN kernels call it (``cmsis_anchor.py``). Skipped, with a message, when absent.

Both run under ``qemu-system-arm -M mps2-an386 -icount shift=3``: every guest instruction takes
2^3 ns of virtual time, so TIMER0 (25 MHz), read after every operator with interrupts masked,
counts instructions (5 per tick; QEMU models no cycles: an instruction count, not Cortex-M4
cycles). Each image then runs ``--inputs`` random int8 inputs (default 50), and every output
must equal tflite-micro's, byte for byte, for ours and for CMSIS-NN (the accuracy check the
issue asks for, vww included); a mismatch fails the benchmark.

Prints per layer (operators with MACs) and per model: MACs, our instructions per MAC,
CMSIS-NN's, the ratio; flash of both images (without the test inputs compiled into them);
arena of both (CMSIS-NN's adds its largest scratch buffer) and tflite-micro's smallest arena.

``--runner-accuracy`` also runs MLPerf Tiny accuracy mode through the host runner and the
harness firmware on the emulated board, on ``--inputs`` synthetic inputs per model, and prints
its agreement with the host reference.

Run: ``.venv/bin/python benchmarks/bench_firmware.py [SUITE ...] [--inputs 50]
[--runner-accuracy]``. Needs arm-none-eabi-gcc, qemu-system-arm, the shared models; ~1-3
minutes per model.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinypower import codegen
from tinypower.boards import load_board
from tinypower.emulator import emulator_config
from tinypower.firmware import CORTEX_M_DIR, HARNESS_DIR, LINK_FLAGS, PORTS_DIR
from tinypower.firmware_nn import SOURCE_DIR, PreparedGraph, PreparedOp, prepare
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmsis_anchor import CMSIS_DIR, SCRATCH_CAPACITY, cmsis_sources, generate_cmsis  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"
ANCHOR_DIR = Path(__file__).resolve().parent / "firmware_anchor"
SUITES = ("kws01", "vww01", "ic01", "ad01")
BOARD = "qemu-an386"
TICK_NS = 40  # TIMER0 at 25 MHz
PORT_SOURCES = (PORTS_DIR / BOARD / "startup.c", PORTS_DIR / BOARD / "port.c",
                CORTEX_M_DIR / "reset.c", CORTEX_M_DIR / "rx_ring.c", HARNESS_DIR / "th_format.c")
SEED = 15


@dataclass(frozen=True)
class Run:
    """One image's run: instructions per operator of the first inference, every output."""

    instructions: tuple[float, ...]
    outputs: tuple[bytes, ...]
    scratch: int
    flash: int  # text + data of the image, less the test inputs

    @property
    def total(self) -> float:
        return sum(self.instructions)


@dataclass(frozen=True)
class Model:
    suite: str
    graph: PreparedGraph
    macs: tuple[int, ...]  # per operator
    ours: Run
    cmsis: Run | None
    arena: int
    tflm_arena: int
    agree: int  # inputs where ours equals tflite-micro (CMSIS-NN too when present)
    inputs: int


def op_macs(graph: PreparedGraph, op: PreparedOp) -> int:
    """Multiply-accumulates of one operator (NHWC activations, TFLite filter layouts)."""
    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return 0
    out = math.prod(graph.tensors[op.writes[0]].shape)
    filt = graph.tensors[op.reads[1]].shape
    if op.name == "CONV_2D":
        return out * filt[1] * filt[2] * filt[3]
    if op.name == "DEPTHWISE_CONV_2D":
        return out * filt[1] * filt[2]
    return out * filt[-1]


def describe(graph: PreparedGraph, op: PreparedOp) -> str:
    x = graph.tensors[op.reads[0]].shape
    y = graph.tensors[op.writes[0]].shape
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        k = graph.tensors[op.reads[1]].shape
        stride = dict(dict(op.args[0].fields))["stride_h"]
        kind = "conv" if op.name == "CONV_2D" else "dw"
        return f"{kind} {k[1]}x{k[2]}/{stride} {x[1]}x{x[2]}x{x[3]}->{y[3]}"
    if op.name == "FULLY_CONNECTED":
        return f"fc {graph.tensors[op.reads[1]].shape[-1]}->{y[-1]}"
    return op.name.lower()


def header(graph: PreparedGraph, inputs: int) -> str:
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    return f"""\
#ifndef BENCH_MODEL_H
#define BENCH_MODEL_H
#include <stdint.h>
#define BENCH_OPS {len(graph.ops)}
#define BENCH_INPUTS {inputs}
#define BENCH_INPUT_BYTES {x.size}
#define BENCH_OUTPUT_BYTES {y.size}
uint32_t bench_setup(void); /* returns scratch bytes the kernels need beyond the arena */
int8_t *bench_input(void);
const int8_t *bench_output(void);
void bench_invoke(void);
extern const int8_t bench_inputs[BENCH_INPUTS][BENCH_INPUT_BYTES];
#endif
"""


OURS_GLUE = """\
#include "bench_model.h"
#include "tp_model.h"
uint32_t bench_setup(void) { return 0; }
int8_t *bench_input(void) { return tp_model_input(); }
const int8_t *bench_output(void) { return tp_model_output(); }
void bench_invoke(void) { tp_model_invoke(); }
"""


def write_common(folder: Path, graph: PreparedGraph, inputs: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_model.h").write_text(header(graph, len(inputs)))
    rows = ",\n".join("{" + ", ".join(map(str, x.tolist())) + "}" for x in inputs)
    (folder / "bench_inputs.c").write_text(
        '#include "bench_model.h"\n'
        f"const int8_t bench_inputs[BENCH_INPUTS][BENCH_INPUT_BYTES] = {{\n{rows}\n}};\n")


def compile_image(folder: Path, sources: list[Path], includes: list[Path],
                  extra_flags: tuple[str, ...] = ()) -> Path:
    board = load_board(BOARD)
    flags = codegen.arm_flags(board.core)
    objects = []
    for source in sources:
        obj = folder / f"{source.parent.name}-{source.stem}.o"
        # CMSIS-NN and the anchor's generated calls are not ours to hold to -Werror.
        anchor = CMSIS_DIR in source.parents or source.name == "cm_model.c"
        strict = () if anchor else codegen.WARN_FLAGS
        command = ["arm-none-eabi-gcc", *strict, *flags, *extra_flags,
                   "-include", str(ANCHOR_DIR / "bench_profile.h"),
                   *(f"-I{i}" for i in includes), "-c", str(source), "-o", str(obj)]
        subprocess.run(command, check=True)
        objects.append(str(obj))
    elf = folder / "bench.elf"
    script = PORTS_DIR / BOARD / "mps2-an386.ld"
    subprocess.run(["arm-none-eabi-gcc", *flags, *objects, "-T", str(script),
                    f"-L{CORTEX_M_DIR}", *LINK_FLAGS, "-o", str(elf)], check=True)
    return elf


def flash_bytes(elf: Path, inputs_bytes: int) -> int:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    text, data, _ = (int(v) for v in out.splitlines()[1].split()[:3])
    return text + data - inputs_bytes


def run_image(elf: Path, ops: int, shift: int, inputs_bytes: int, timeout_s: float) -> Run:
    command = ["qemu-system-arm", "-M", "mps2-an386", "-display", "none", "-monitor", "none",
               "-serial", "stdio", "-serial", "null", "-semihosting", "-kernel", str(elf),
               "-icount", f"shift={shift},align=off,sleep=off"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                            check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or "done" not in lines:
        raise SystemExit(f"{elf}: QEMU exited {result.returncode}:\n{result.stdout[-2000:]}"
                         f"\n{result.stderr[-2000:]}")
    fields = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines
              if line.startswith(("scratch ", "start ", "marks "))}
    start = int(fields["start"])
    marks = [start, *map(int, fields["marks"].split())]
    if len(marks) != ops + 1:
        raise SystemExit(f"{elf}: expected {ops} operator marks, got {len(marks) - 1}")
    per_tick = TICK_NS / 2**shift
    instructions = tuple((a - b) * per_tick for a, b in zip(marks, marks[1:], strict=False))
    outputs = tuple(bytes.fromhex(line[4:]) for line in lines if line.startswith("out "))
    return Run(instructions, outputs, int(fields["scratch"]), flash_bytes(elf, inputs_bytes))


def reference_outputs(model: bytes, inputs: list[np.ndarray]) -> list[bytes]:
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=4 << 20)
    shape = interpreter.get_input_details(0)["shape"]
    outputs = []
    for x in inputs:
        interpreter.set_input(x.reshape(shape), 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).astype(np.int8).tobytes())
    return outputs


def measure(suite_name: str, count: int, folder: Path, with_cmsis: bool) -> Model:
    board = load_board(BOARD)
    shift = emulator_config(board).icount_shift
    model = (SHARED / get_suite(suite_name).reference_model).read_bytes()
    graph = prepare(model)
    x = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(SEED)
    inputs = [rng.integers(-128, 128, x.size, dtype=np.int8) for _ in range(count)]
    expected = reference_outputs(model, inputs)
    common = folder / suite_name
    write_common(common, graph, inputs)
    base = [ANCHOR_DIR / "bench_main.c", common / "bench_inputs.c", *PORT_SOURCES]
    includes = [common, ANCHOR_DIR, HARNESS_DIR, PORTS_DIR / BOARD, CORTEX_M_DIR]
    timeout = 900.0

    ours_dir = folder / f"{suite_name}-ours"
    generated = codegen.generate(model, ours_dir)
    (ours_dir / "bench_ours.c").write_text(OURS_GLUE)
    elf = compile_image(ours_dir, [*base, ours_dir / "bench_ours.c", generated.source,
                                   *sorted(SOURCE_DIR.glob("*.c"))],
                        [ours_dir, SOURCE_DIR, *includes])
    ours = run_image(elf, len(graph.ops), shift, count * x.size, timeout)
    agree = sum(a == b for a, b in zip(ours.outputs, expected, strict=True))

    cmsis = None
    if with_cmsis:
        cm_dir = folder / f"{suite_name}-cmsis"
        cm_dir.mkdir()
        source = generate_cmsis(graph, generated.arena, cm_dir)
        elf = compile_image(cm_dir, [*base, source, *cmsis_sources()],
                            [cm_dir, CMSIS_DIR / "Include", *includes])
        cmsis = run_image(elf, len(graph.ops), shift, count * x.size, timeout)
        if cmsis.scratch > SCRATCH_CAPACITY:
            raise SystemExit(f"{suite_name}: CMSIS-NN asks for {cmsis.scratch} bytes of scratch")
        if list(cmsis.outputs) != expected:
            bad = sum(a != b for a, b in zip(cmsis.outputs, expected, strict=True))
            raise SystemExit(f"{suite_name}: CMSIS-NN differs from tflite-micro on {bad} inputs: "
                             "the anchor is not computing the same layers")
    return Model(suite_name, graph, tuple(op_macs(graph, op) for op in graph.ops), ours, cmsis,
                 generated.arena.size, codegen.tflm_arena_bytes(model), agree, count)


def runner_accuracy(suite_name: str, count: int, folder: Path) -> str:
    """MLPerf Tiny accuracy mode through the real host runner on the emulated board (the
    harness firmware, its input conversion, the protocol): the share of ``count`` synthetic
    inputs whose results agree with the host reference."""
    suite = get_suite(suite_name)
    model = resolve_model(suite, str(SHARED / suite.reference_model))
    outcome = run(RunRequest(board=load_board(BOARD), suite=suite, model=model,
                             dataset=synthetic_inputs(suite, count), mode="accuracy",
                             runs_dir=folder / "runs"))
    if outcome.error is not None or outcome.result is None:
        raise SystemExit(f"{suite_name}: the accuracy run failed: {outcome.error}")
    result = outcome.result
    return (f"  {suite_name}: accuracy mode ({outcome.measured_as}) agrees with the host "
            f"reference on {result.value:.1f} % of {result.extras['inferences']} inferences")


def _ratio(a: float, b: float | None) -> str:
    return "-" if not b else f"{a / b:.2f}x"


def _per_mac(instructions: float, macs: int) -> str:
    return f"{instructions / macs:.2f}" if macs else f"({instructions:,.0f} instr)"


def layer_table(m: Model) -> str:
    head = ("op", "layer", "MACs", "ours instr", "ours instr/MAC", "CMSIS-NN instr/MAC", "ratio")
    lines = [f"{m.suite} layers", " | ".join(head), " | ".join("---" for _ in head)]
    for op, macs, ours in zip(m.graph.ops, m.macs, m.ours.instructions, strict=True):
        cm = m.cmsis.instructions[op.index] if m.cmsis else None
        lines.append(" | ".join((
            str(op.index), describe(m.graph, op), f"{macs:,}" if macs else "-", f"{ours:,.0f}",
            _per_mac(ours, macs), _per_mac(cm, macs) if cm is not None else "-",
            _ratio(ours, cm))))
    return "\n".join(lines)


def model_table(models: list[Model], shift: int) -> str:
    head = ("model", "MACs", "ours instr", "ours instr/MAC", "CMSIS-NN instr",
            "CMSIS-NN instr/MAC", "ratio", "flash ours", "flash CMSIS-NN", "arena ours",
            "arena CMSIS-NN", "arena TFLM", "ours/TFLM", "bit-exact")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for m in models:
        macs = sum(m.macs)
        cm = m.cmsis
        lines.append(" | ".join((
            m.suite, f"{macs:,}", f"{m.ours.total:,.0f}", f"{m.ours.total / macs:.2f}",
            f"{cm.total:,.0f}" if cm else "-", f"{cm.total / macs:.2f}" if cm else "-",
            _ratio(m.ours.total, cm.total if cm else None), f"{m.ours.flash:,}",
            f"{cm.flash:,}" if cm else "-", f"{m.arena:,}",
            f"{m.arena + cm.scratch:,}" if cm else "-", f"{m.tflm_arena:,}",
            f"{m.arena / m.tflm_arena:.2f}", f"{m.agree}/{m.inputs}")))
    lines += ["", f"Emulated ({BOARD}, QEMU -icount shift={shift}: instructions, not cycles). "
              "Flash: the linked benchmark image (harness port, kernels, model) without its test "
              "inputs. Arena CMSIS-NN: the same tensor plan plus its largest scratch buffer. "
              "bit-exact: inputs whose output equals tflite-micro's byte for byte (CMSIS-NN's "
              "always must)."]
    return "\n".join(lines)


def verdicts(models: list[Model]) -> str:
    lines = ["Targets:"]
    for m in models:
        macs = sum(m.macs)
        worst = "-"
        if m.cmsis:
            ratios = [(o / c, m.graph.ops[i]) for i, (o, c, n) in enumerate(
                zip(m.ours.instructions, m.cmsis.instructions, m.macs, strict=True)) if n]
            r, op = max(ratios, key=lambda t: t[0])
            worst = f"worst layer {op.index} {describe(m.graph, op)} at {r:.2f}x " + (
                "(<= 1.5x: met)" if r <= 1.5 else "(> 1.5x: NOT met)")
            per_model = "met" if m.ours.total <= m.cmsis.total else "NOT met"
            lines.append(f"  {m.suite}: at or below CMSIS-NN per inference: {per_model}; "
                         f"{worst}")
            others = [(o / c, o, c, m.graph.ops[i]) for i, (o, c, n) in enumerate(
                zip(m.ours.instructions, m.cmsis.instructions, m.macs, strict=True)) if not n]
            if others:
                r, o, c, op = max(others, key=lambda t: t[0])
                lines.append(f"  {m.suite}: operators without MACs: worst {op.index} "
                             f"{describe(m.graph, op)} at {r:.2f}x ({o:,.0f} vs {c:,.0f} "
                             "instructions)")
        if m.suite == "kws01":
            per_mac = m.ours.total / macs
            lines.append(f"  kws01 at or below 2.5 instr/MAC: "
                         f"{'met' if per_mac <= 2.5 else 'NOT met'} ({per_mac:.2f})")
        lines.append(f"  {m.suite}: arena no larger than TFLM's: "
                     f"{'met' if m.arena <= m.tflm_arena else 'NOT met'}; bit-exact on "
                     f"{m.agree}/{m.inputs} inputs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"any of {', '.join(SUITES)} (default: all four)")
    parser.add_argument("--inputs", type=int, default=50,
                        help="random int8 inputs each image runs and checks (default 50)")
    parser.add_argument("--runner-accuracy", action="store_true",
                        help="also run accuracy mode through the host runner on as many "
                             "synthetic inputs per model (minutes per model)")
    args = parser.parse_args()
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}: use {', '.join(SUITES)}")
    if args.inputs < 1:
        parser.error("--inputs must be at least 1")
    if not SHARED.is_dir():
        sys.exit(f"the MLPerf Tiny reference models are not at {SHARED}")
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install gcc-arm-none-eabi and qemu-system-arm")
    with_cmsis = (CMSIS_DIR / "Source").is_dir()
    if not with_cmsis:
        print(f"CMSIS-NN is not at {CMSIS_DIR}: the anchor columns are skipped")
    shift = emulator_config(load_board(BOARD)).icount_shift
    models = []
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as folder:
        for suite in args.suites or SUITES:
            models.append(measure(suite, args.inputs, Path(folder), with_cmsis))
            print(layer_table(models[-1]), end="\n\n", flush=True)
        accuracy = ([runner_accuracy(m.suite, args.inputs, Path(folder)) for m in models]
                    if args.runner_accuracy else [])
    print(model_table(models, shift))
    print()
    print(verdicts(models))
    if accuracy:
        print("\n".join(["Accuracy mode:", *accuracy]))
    if any(m.agree != m.inputs for m in models):
        sys.exit("our firmware's outputs differ from tflite-micro's: see the bit-exact column")


if __name__ == "__main__":
    main()
