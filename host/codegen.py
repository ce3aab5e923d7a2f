"""Turn a .tflite model into C for the benchmark firmware, and build it for a board.

The firmware does not carry an interpreter: ``generate`` prints the model as C, with weights
as constant arrays, every prepare-time parameter (Q31 multipliers and shifts, clamps, padding)
already computed, one ``tp_nn`` kernel call per operator in execution order, and one static
tensor arena laid out ahead of time from tensor lifetimes. The parameters come from
``tinypower.firmware_nn.prepare``, the same step the host's ctypes runner uses, which the tests
check bit-identical to tflite-micro; what the board runs is therefore what was verified.

``build`` then compiles the generated C and the kernels into ``libtp_model.a`` for the board's
core, reports its flash and RAM from ``size``, and measures, for comparison, the smallest arena
the tflite-micro interpreter accepts for the same model.

The C API the harness links against (``tp_model.h``) is fixed:
``TP_MODEL_INPUT_BYTES``, ``TP_MODEL_OUTPUT_BYTES``, ``TP_ARENA_BYTES``,
``tp_model_input_scale/zero_point``, ``tp_model_output_scale/zero_point``,
``tp_model_input()``, ``tp_model_output()``, ``tp_model_invoke()``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinypower.boards import Board, load_board
from tinypower.firmware_nn import (
    SOURCE_DIR,
    Int32Array,
    KernelModelError,
    PackedArray,
    PreparedGraph,
    PreparedOp,
    Scratch,
    Struct,
    TensorArg,
    TensorInfo,
    prepare,
)
from tinypower.suites.model_info import ModelError, ModelInfo, read_model_info

ALIGNMENT = 16  # bytes, for every arena tensor and constant array (TFLite Micro's alignment)
TOOLCHAINS = ("arm", "host")
# Per core in boards/*.toml: the arm-none-eabi-gcc target flags (the harness must use the same
# float ABI to link).
CORE_FLAGS: dict[str, tuple[str, ...]] = {
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m3": ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m4f": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m7f": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m33f": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
}
# -falign-loops=64 keeps hot loops off QEMU's 1 KB translation-page boundaries (3x wall time).
# -fno-tree-loop-distribute-patterns: GCC must not turn the kernels' copy and fill loops into
# memcpy/memset calls, as the library links without a libc.
OPT_FLAGS = ("-O2", "-ffunction-sections", "-fdata-sections", "-falign-loops=64",
             "-fno-tree-loop-distribute-patterns")
WARN_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
LIBRARY = "libtp_model.a"
ARM_INSTALL = "install gcc-arm-none-eabi and libnewlib-arm-none-eabi (Debian)"

# Kernels tp_nn_fast.h defines inline: called as <name>_inline, so the compiler specialises
# each call with its layer's constant parameters.
INLINE_KERNELS = frozenset({"tp_conv2d_gemm_s8", "tp_fully_connected_gemm_s8",
                            "tp_depthwise_conv2d_dm1_s8"})
_C_TYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
            "float32": "float"}
_VALUES_PER_LINE = 24


class BuildError(RuntimeError):
    """The generated model could not be compiled or measured; the message says what to fix."""


class MemoryFitError(BuildError):
    """The model's constants or arena exceed the board's ``[memory]``: refused before compiling."""


# What a caller (the CLI) reports as one message: a bad or unsupported model, a failed build.
BUILD_ERRORS = (BuildError, KernelModelError, ModelError)


# ---- arena planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """One tensor's place in the arena and the span of operators it must survive.

    ``first_op`` is -1 for the model input (written before ``tp_model_invoke``); ``last_op`` is
    the number of operators for the input and the output (both outlive the invocation).
    """

    tensor: int
    name: str
    offset: int
    size: int
    first_op: int
    last_op: int

    def live_with(self, other: Allocation) -> bool:
        return self.first_op <= other.last_op and other.first_op <= self.last_op


@dataclass(frozen=True)
class ArenaPlan:
    size: int  # bytes, a multiple of ALIGNMENT
    allocations: tuple[Allocation, ...]

    @property
    def tensor_bytes(self) -> int:
        """What the arena would need with every tensor in its own place."""
        return sum(a.size for a in self.allocations)

    def of(self, tensor: int) -> Allocation:
        return next(a for a in self.allocations if a.tensor == tensor)


def plan_arena(graph: PreparedGraph) -> ArenaPlan:
    """Place every non-constant tensor the model touches, first fit, largest first.

    A tensor is live from the operator that writes it to the last operator that reads it; two
    tensors may share bytes only if their lives do not meet. Kernels never run in place, so an
    operator's inputs and outputs, both live at that operator, always get separate bytes. The
    model input lives through the whole invocation (the harness loads it once and may invoke
    many times, as MLPerf Tiny's ``infer N`` does), the output until the next invocation. A
    kernel's scratch buffer (im2col) is planned like a tensor live at its operator only,
    under the key ``scratch_key(op)``.
    """
    count = len(graph.ops)
    first: dict[int, int] = {i: -1 for i in graph.inputs}
    last: dict[int, int] = {}
    for op in graph.ops:
        for i in (*op.reads, *op.writes):
            if graph.tensors[i].data is None:
                first.setdefault(i, op.index)
                last[i] = op.index
    for i in (*graph.inputs, *graph.outputs):
        first.setdefault(i, count)
        last[i] = count
    sizes = {i: (graph.tensors[i].name, graph.tensors[i].nbytes) for i in first}
    for op in graph.ops:  # a kernel's scratch: live during its operator only
        for arg in op.args:
            if isinstance(arg, Scratch):
                key = scratch_key(op.index)
                first[key] = last[key] = op.index
                sizes[key] = (f"scratch of op {op.index}", arg.nbytes)
    order = sorted(first, key=lambda i: (-sizes[i][1], first[i], i))
    placed: list[Allocation] = []
    for i in order:
        name, nbytes = sizes[i]
        candidate = Allocation(i, name, 0, nbytes, first[i], last[i])
        live = sorted((a for a in placed if a.live_with(candidate)), key=lambda a: a.offset)
        offset = 0
        for other in live:
            if offset + nbytes <= other.offset:
                break
            offset = max(offset, _align(other.offset + other.size))
        placed.append(Allocation(i, name, offset, nbytes, first[i], last[i]))
    size = _align(max((a.offset + a.size for a in placed), default=0))
    return ArenaPlan(size, tuple(sorted(placed, key=lambda a: (a.first_op, a.tensor))))


def scratch_key(op_index: int) -> int:
    """The arena plan's key for an operator's scratch buffer (tensors have keys >= 0)."""
    return -1 - op_index


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


# ---- C generation -------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedModel:
    header: Path  # tp_model.h
    source: Path  # tp_model.c
    arena: ArenaPlan
    input_bytes: int
    output_bytes: int
    constant_bytes: int  # weights, biases and precomputed parameter arrays
    ops: tuple[str, ...]
    info: ModelInfo


def generate(model: bytes, out_dir: Path) -> GeneratedModel:
    """Write ``tp_model.h`` and ``tp_model.c`` for ``model`` into ``out_dir``.

    Raises ModelError for bytes that are not a TFLite model and KernelModelError naming the
    operator the kernels do not implement, or a model whose input or output is not one int8
    tensor (the C API's contract).
    """
    info = read_model_info(model)
    graph = prepare(model)
    for kind, indices in (("input", graph.inputs), ("output", graph.outputs)):
        if len(indices) != 1:
            raise KernelModelError(
                f"the model has {len(indices)} {kind}s; the firmware API takes exactly one"
            )
        tensor = graph.tensors[indices[0]]
        if tensor.dtype != np.int8:
            raise KernelModelError(
                f"model {kind} {tensor.name!r} is {tensor.type_name}; the firmware API takes "
                f"int8 {kind}s: export the model with int8 {kind} quantization"
            )
    plan = plan_arena(graph)
    emitter = _Emitter(graph, plan)
    source = emitter.source(info)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header_path, source_path = out_dir / "tp_model.h", out_dir / "tp_model.c"
    x, y = (graph.tensors[indices[0]] for indices in (graph.inputs, graph.outputs))
    header_path.write_text(_header(info, x, y, plan), encoding="utf-8")
    source_path.write_text(source, encoding="utf-8")
    return GeneratedModel(header_path, source_path, plan, x.nbytes, y.nbytes,
                          emitter.constant_bytes, tuple(op.name for op in graph.ops), info)


def _header(info: ModelInfo, x: TensorInfo, y: TensorInfo, plan: ArenaPlan) -> str:
    return f"""\
/*
 * tp_model.h: generated by tinypower codegen. Do not edit; regenerate with `tinypower build`.
 * Model sha256 {info.sha256}, {info.size_bytes} bytes, {info.macs} MACs per inference.
 * Input {_comment(x.name)} {list(x.shape)}, output {_comment(y.name)} {list(y.shape)}, int8.
 */
#ifndef TP_MODEL_H
#define TP_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define TP_MODEL_INPUT_BYTES  {x.size}
#define TP_MODEL_OUTPUT_BYTES {y.size}
#define TP_ARENA_BYTES        {plan.size}

extern const float   tp_model_input_scale;
extern const int32_t tp_model_input_zero_point;
extern const float   tp_model_output_scale;
extern const int32_t tp_model_output_zero_point;

int8_t *tp_model_input(void);          /* where the harness writes the int8 input */
const int8_t *tp_model_output(void);   /* valid after tp_model_invoke() */
void tp_model_invoke(void);

#ifdef __cplusplus
}}
#endif

#endif /* TP_MODEL_H */
"""


class _Emitter:
    """Prints the prepared graph as C: constants once each, then the invoke function."""

    def __init__(self, graph: PreparedGraph, plan: ArenaPlan) -> None:
        self._graph, self._plan = graph, plan
        self._constants: list[str] = []  # declarations of tensors the kernels read
        self._emitted: set[int] = set()
        self.constant_bytes = 0

    def source(self, info: ModelInfo) -> str:
        graph, plan = self._graph, self._plan
        x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
        ops: list[str] = []
        calls: list[str] = []
        for op in graph.ops:
            declarations, call = self._op(op)
            ops.extend(declarations)
            calls.append(f"    /* {op.index}: {op.name} {self._describe(op)} */\n    {call}\n"
                         f"    TP_PROFILE_OP({op.index});")
        layout = "\n".join(
            f" *   {a.offset:>8} +{a.size:<8} ops {a.first_op:>3}..{a.last_op:<3} "
            f"{_comment(a.name)}" for a in sorted(plan.allocations, key=lambda a: a.offset)
        )
        return f"""\
/*
 * tp_model.c: generated by tinypower codegen from the model with sha256
 * {info.sha256}. Do not edit; regenerate with `tinypower build`.
 *
 * {len(graph.ops)} operators run through the tp_nn kernels; every prepare-time parameter is
 * precomputed below. Arena: {plan.size} bytes for {plan.tensor_bytes} bytes of tensors
 * (offset, size, live from/to op, tensor):
{layout}
 */
#include "tp_model.h"
#include "tp_nn.h"
#include "tp_nn_fast.h" /* the heavy layers' kernels, specialised here with the constants */

/* Called after each operator with its index; empty unless a profiler (the firmware
   benchmark) defines it to read a timer. */
#ifndef TP_PROFILE_OP
#define TP_PROFILE_OP(index) ((void)0)
#endif

#if defined(__GNUC__)
#define TP_ALIGNED(n) __attribute__((aligned(n)))
#else
#define TP_ALIGNED(n)
#endif

const float tp_model_input_scale = {_c_float(x.scale)};
const int32_t tp_model_input_zero_point = {_c_int(x.zero_point)};
const float tp_model_output_scale = {_c_float(y.scale)};
const int32_t tp_model_output_zero_point = {_c_int(y.zero_point)};

static int8_t tp_arena[TP_ARENA_BYTES] TP_ALIGNED({ALIGNMENT});

/* ---- weights and biases ---- */

{chr(10).join(self._constants)}
/* ---- operator parameters ---- */

{chr(10).join(ops)}
int8_t *tp_model_input(void)
{{
    return tp_arena + {plan.of(x.index).offset};
}}

const int8_t *tp_model_output(void)
{{
    return tp_arena + {plan.of(y.index).offset};
}}

void tp_model_invoke(void)
{{
{chr(10).join(calls)}
}}
"""

    def _describe(self, op: PreparedOp) -> str:
        def name(i: int) -> str:
            t = self._graph.tensors[i]
            return f"{_comment(t.name)} {list(t.shape)}"

        activations = [i for i in op.reads if self._graph.tensors[i].data is None]
        return f"{', '.join(map(name, activations))} -> {', '.join(map(name, op.writes))}"

    def _op(self, op: PreparedOp) -> tuple[list[str], str]:
        declarations: list[str] = []
        names: set[str] = set()

        def unique(base: str) -> str:
            name, n = f"tp_op{op.index}_{base}", 1
            while name in names:
                n += 1
                name = f"tp_op{op.index}_{base}_{n}"
            names.add(name)
            return name

        def value(arg: object, field: str) -> str:
            if isinstance(arg, Struct):
                inner = ", ".join(f".{k} = {value(v, k)}" for k, v in arg.fields)
                return f"{{{inner}}}"
            if isinstance(arg, Int32Array):
                name = unique(field)
                self.constant_bytes += 4 * len(arg.values)
                declarations.append(
                    f"static const int32_t {name}[{len(arg.values)}] = {{\n"
                    f"{_wrap(', '.join(map(_c_int, arg.values)))}\n}};"
                )
                return name
            if isinstance(arg, tuple):
                return f"{{{', '.join(map(_c_int, arg))}}}"
            return self._scalar(arg)

        args = []
        for arg in op.args:
            if isinstance(arg, Struct):
                name = unique(arg.ctype.removeprefix("tp_").removesuffix("_t").rstrip("4"))
                body = ", ".join(f".{k} = {value(v, k)}" for k, v in arg.fields)
                declarations.append(f"static const {arg.ctype} {name} = {{\n{_wrap(body)}\n}};")
                args.append(f"&{name}")
            elif isinstance(arg, PackedArray):
                name = unique("packed")
                self.constant_bytes += arg.data.nbytes
                declarations.append(
                    f"static const {_C_TYPES[arg.data.dtype.name]} {name}[{arg.data.size}] "
                    f"TP_ALIGNED({ALIGNMENT}) = {{\n{_c_values(arg.data)}\n}};")
                args.append(name)
            elif isinstance(arg, Int32Array):
                args.append(value(arg, "bias"))
            elif isinstance(arg, Scratch):
                args.append(f"(tp_arena + {self._plan.of(scratch_key(op.index)).offset})")
            else:
                args.append(self._scalar(arg))
        kernel = f"{op.kernel}_inline" if op.kernel in INLINE_KERNELS else op.kernel
        return declarations, f"{kernel}({', '.join(args)});"

    def _scalar(self, arg: object) -> str:
        if arg is None:
            return "NULL"
        if isinstance(arg, TensorArg):
            return self._tensor(arg.index)
        if isinstance(arg, float):
            return _c_float(arg)
        if isinstance(arg, int):
            return _c_int(arg)
        raise TypeError(f"cannot print kernel argument {arg!r} as C")

    def _tensor(self, index: int) -> str:
        """A pointer expression for a tensor: its constant array, or its place in the arena."""
        tensor = self._graph.tensors[index]
        ctype = _C_TYPES[tensor.dtype.name]
        if tensor.data is None:
            where = f"tp_arena + {self._plan.of(index).offset}"
            return f"({where})" if ctype == "int8_t" else f"({ctype} *)(void *)({where})"
        name = f"tp_t{index}"
        if index not in self._emitted:
            self._emitted.add(index)
            self.constant_bytes += tensor.nbytes
            self._constants.append(
                f"/* {_comment(tensor.name)}: {tensor.type_name} {list(tensor.shape)} */\n"
                f"static const {ctype} {name}[{max(tensor.size, 1)}] TP_ALIGNED({ALIGNMENT}) = "
                f"{{\n{_c_values(tensor.data)}\n}};\n"
            )
        return name


def _c_int(value: int) -> str:
    value = int(value)
    if value == -(1 << 31):
        return "(-2147483647 - 1)"  # 2147483648 alone is not an int literal
    if value < -(1 << 31) or value >= 1 << 31:
        raise KernelModelError(f"value {value} does not fit the kernels' int32 parameters")
    return str(value)


def _c_float(value: float) -> str:
    """A float literal that reads back as exactly this float32 (shortest round-trip digits)."""
    return np.format_float_scientific(np.float32(value), unique=True, trim="-") + "f"


def _c_values(data: np.ndarray) -> str:
    flat = data.reshape(-1)
    if flat.dtype == np.float32:
        items = [_c_float(v) for v in flat.tolist()]
    elif flat.dtype == np.int32:
        items = [_c_int(v) for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.tolist()]
    lines = (", ".join(items[i:i + _VALUES_PER_LINE])
             for i in range(0, len(items), _VALUES_PER_LINE))
    return "    " + ",\n    ".join(lines)


def _wrap(text: str) -> str:
    """A comma-separated initializer list, indented and wrapped at 100 columns."""
    return textwrap.fill(text, 100, initial_indent="    ", subsequent_indent="    ",
                         break_long_words=False, break_on_hyphens=False)


def _comment(text: str) -> str:
    """A tensor name for a C block comment: TensorFlow's fused names (``a;b;c``) cut to their
    first part, at most 60 characters, printable ASCII, no comment terminator."""
    text = text.split(";")[0]
    text = text if len(text) <= 60 else text[:57] + "..."
    return re.sub(r"[^\x20-\x7e]", "?", text).replace("*/", "*_/")


# ---- building for a board -----------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    model_path: Path
    board: str
    core: str
    toolchain: str  # "arm" or "host"
    compiler: str  # the compiler's --version first line
    out_dir: Path
    library: Path  # libtp_model.a: the generated model and the kernels
    generated: GeneratedModel
    text_bytes: int  # .text + .rodata (weights live here), from size
    data_bytes: int
    bss_bytes: int  # includes the arena
    tflm_arena_bytes: int  # smallest arena the tflite-micro interpreter accepts

    @property
    def flash_bytes(self) -> int:
        """Code, constants and the load image of initialised data."""
        return self.text_bytes + self.data_bytes

    @property
    def ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes

    @property
    def arena_bytes(self) -> int:
        return self.generated.arena.size

    def table(self) -> str:
        g = self.generated
        rows = [
            ("model", f"{self.model_path.name} (sha256 {g.info.sha256[:12]}, "
                      f"{g.info.macs:,} MACs, {len(g.ops)} ops)"),
            ("board", f"{self.board} ({self.core}), {self.compiler}"),
            ("library", str(self.library)),
            ("flash", f"{self.flash_bytes:,} B (text+rodata {self.text_bytes:,}, "
                      f"data {self.data_bytes:,}; weights and parameters "
                      f"{g.constant_bytes:,})"),
            ("RAM", f"{self.ram_bytes:,} B (data {self.data_bytes:,} + bss "
                    f"{self.bss_bytes:,}; arena {self.arena_bytes:,})"),
            ("arena", f"{self.arena_bytes:,} B planned (tensors {g.arena.tensor_bytes:,} B); "
                      f"tflite-micro interpreter needs {self.tflm_arena_bytes:,} B"),
        ]
        width = max(len(k) for k, _ in rows)
        note = "sizes are of the library before link-time garbage collection"
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + f"\n({note})"


def arm_flags(core: str) -> tuple[str, ...]:
    """arm-none-eabi-gcc flags for a board's core: target, then optimisation."""
    try:
        return (*CORE_FLAGS[core], *OPT_FLAGS)
    except KeyError:
        raise BuildError(
            f"no Arm compiler flags for core {core!r}: use one of {', '.join(CORE_FLAGS)} in "
            "the board file, or add the core to tinypower.codegen.CORE_FLAGS"
        ) from None


def build(
    model_path: Path, board: Board | str, out_dir: Path, toolchain: str = "arm"
) -> BuildResult:
    """Generate C for the model, compile it with the kernels into ``out_dir/libtp_model.a``.

    ``toolchain="arm"`` cross-compiles for the board's core with arm-none-eabi-gcc; ``"host"``
    builds the same library with the host gcc (for host-side harness tests).
    """
    if toolchain not in TOOLCHAINS:
        raise BuildError(f"unknown toolchain {toolchain!r}: use one of {', '.join(TOOLCHAINS)}")
    board = load_board(board) if isinstance(board, str) else board
    model_path = Path(model_path)
    if toolchain == "arm":
        prefix, flags = "arm-none-eabi-", arm_flags(board.core)
        missing = f"{ARM_INSTALL} to build firmware for {board.name}"
    else:
        prefix, flags = "", OPT_FLAGS
        missing = "install a C compiler and binutils (e.g. apt-get install gcc binutils)"
    tools = {}
    for tool in ("gcc", "ar", "size"):
        tools[tool] = shutil.which(prefix + tool)
        if tools[tool] is None:
            raise BuildError(f"{prefix}{tool} not found on PATH: {missing}")
    try:
        model = model_path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read the model {model_path}: {exc.strerror}") from exc
    try:
        generated = generate(model, out_dir)
    except ModelError as exc:
        raise ModelError(f"{model_path}: {exc}") from exc
    check_fits(generated, board, model_path.name)
    out_dir = Path(out_dir)
    objects = []
    for source in (generated.source, *sorted(SOURCE_DIR.glob("*.c"))):
        obj = out_dir / f"{source.stem}.o"
        _run([tools["gcc"], *WARN_FLAGS, *flags, "-I", str(SOURCE_DIR), "-c", str(source),
              "-o", str(obj)], "compile")
        objects.append(str(obj))
    library = out_dir / LIBRARY
    library.unlink(missing_ok=True)
    _run([tools["ar"], "rcsD", str(library), *objects], "archive")
    text, data, bss = _sizes(_run([tools["size"], str(library)], "measure"))
    version = _run([tools["gcc"], "--version"], "identify").splitlines()[0]
    return BuildResult(model_path, board.name, board.core, toolchain, version, out_dir, library,
                       generated, text, data, bss, tflm_arena_bytes(model))


def check_fits(generated: GeneratedModel, board: Board, model_name: str) -> None:
    """Refuse a model whose constants exceed the board's flash or whose arena exceeds its RAM.

    Both are lower bounds of what the image needs (code, the harness's buffers and the stack
    come on top; the linker script catches those), so a refusal here is certain, and comes
    before any compiling. A board without ``[memory]`` is not checked.
    """
    needs = (("flash", "weights and constants take", generated.constant_bytes,
              board.flash_bytes),
             ("RAM", "tensor arena takes", generated.arena.size, board.ram_bytes))
    for memory, what, need, have in needs:
        if have is not None and need > have:
            raise MemoryFitError(
                f"{model_name} does not fit board {board.name}: its {what} {need:,} bytes "
                f"of {memory}, the board has {have:,} ([memory] {memory.lower()}_bytes in "
                f"{board.path or 'its board file'}); use a board with more {memory} or a "
                "smaller model"
            )


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"failed to {what} ({' '.join(command)}):\n{result.stderr.strip()}")
    return result.stdout


def _sizes(report: str) -> tuple[int, int, int]:
    """Sum the text, data and bss columns of ``size``'s Berkeley table over all objects."""
    totals = [0, 0, 0]
    for line in report.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and all(f.isdigit() for f in fields[:3]):
            for k in range(3):
                totals[k] += int(fields[k])
    return totals[0], totals[1], totals[2]


# ---- the interpreter's arena, for comparison ----------------------------------------------


def tflm_arena_bytes(model: bytes, limit: int = 64 << 20) -> int:
    """The smallest ``arena_size`` with which tflite-micro's interpreter allocates the model.

    Allocation either fits or raises, and more arena never makes it fail, so a doubling search
    then a bisection finds the exact byte count (each try takes milliseconds). TFLite Micro
    prints every failed allocation on the C stderr, which is silenced meanwhile.
    """
    from tflite_micro import runtime

    def fits(size: int) -> bool:
        try:
            runtime.Interpreter.from_bytes(model, arena_size=size)
        except RuntimeError:
            return False
        return True

    with _quiet_stderr():
        low, high = 0, 1024  # low: a size known to fail
        while not fits(high):
            if high >= limit:
                raise BuildError(f"tflite-micro cannot allocate the model in {limit} bytes")
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle
    return high


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C code's messages bypass sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
