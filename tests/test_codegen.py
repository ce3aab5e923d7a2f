"""Generated model C against the tflite-micro runtime, and the firmware build around it.

The board runs the C that ``tinypower.codegen`` prints, not the host's ctypes runner, so that
C itself is compiled here (host gcc, as a shared library reached through the fixed C API) and
its outputs are compared bit for bit with tflite-micro on the MLPerf Tiny reference models, the
synthetic KWS model and a small graph using the remaining kernels. The arena plan is checked
for overlaps from its own numbers, and the Arm build is checked to produce a library a bare-metal
harness links, for the board's core and float ABI.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from tinypower import codegen
from tinypower.boards import load_board
from tinypower.firmware_nn import SOURCE_DIR, KernelModelError, Scratch, prepare
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.model_info import ModelError
from tinypower.suites.synthetic import synthetic_kws_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
REFERENCE = [  # (file, suite, sample file)
    ("kws_ref_model.tflite", "kws01", "kws01_sample0.bin"),
    ("vww_96_int8.tflite", "vww01", None),
    ("pretrainedResnet_quant.tflite", "ic01", "ic01_sample0.bin"),
    ("ad01_int8.tflite", "ad01", "ad01_normal_id_01_00000000_hist_librosa.bin"),
]
HOST_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-shared", "-fPIC",
              "-Wl,-Bsymbolic")
CACHE = Path(tempfile.gettempdir()) / "tinypower-codegen"
API_PROBE = """#include "tp_model.h"
const int32_t tp_test_sizes[3] = {TP_MODEL_INPUT_BYTES, TP_MODEL_OUTPUT_BYTES, TP_ARENA_BYTES};
"""
RANDOM_INPUTS = 3
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(tool: str, why: str) -> None:
    """Skip without the tool on a developer's machine; fail in CI, which installs it."""
    if shutil.which(tool) is None:
        message = f"{tool} not found on PATH, needed to {why}"
        if IN_CI:
            pytest.fail(f"CI must install it: {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def models() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"MLPerf Tiny reference models not found at {MODELS} (shared data folder)")
    return MODELS


# ---- the generated C, compiled for the host ------------------------------------------------


class HostModel:
    """The generated C and the kernels as a host shared library, used through tp_model.h."""

    def __init__(self, model: bytes, folder: Path) -> None:
        self.generated = codegen.generate(model, folder)
        probe = folder / "api_probe.c"
        probe.write_text(API_PROBE)
        sources = [self.generated.source, probe, *sorted(SOURCE_DIR.glob("*.c"))]
        digest = hashlib.sha256(" ".join(HOST_FLAGS).encode())
        for path in [*sources, self.generated.header, *sorted(SOURCE_DIR.glob("*.h"))]:
            digest.update(path.read_bytes())
        target = CACHE / f"libtp_model-{digest.hexdigest()[:16]}.so"
        if not target.exists():  # same sources, same library: compile once per machine
            CACHE.mkdir(parents=True, exist_ok=True)
            scratch = folder / "libtp_model.so"
            subprocess.run(["gcc", *HOST_FLAGS, "-I", str(SOURCE_DIR), *map(str, sources),
                            "-o", str(scratch)], check=True)
            os.replace(scratch, target)
        self.lib = ctypes.CDLL(str(target))
        self.lib.tp_model_input.restype = ctypes.POINTER(ctypes.c_int8)
        self.lib.tp_model_output.restype = ctypes.POINTER(ctypes.c_int8)

    def sizes(self) -> tuple[int, int, int]:
        return tuple((ctypes.c_int32 * 3).in_dll(self.lib, "tp_test_sizes"))

    def quantization(self) -> tuple[float, int, float, int]:
        return (ctypes.c_float.in_dll(self.lib, "tp_model_input_scale").value,
                ctypes.c_int32.in_dll(self.lib, "tp_model_input_zero_point").value,
                ctypes.c_float.in_dll(self.lib, "tp_model_output_scale").value,
                ctypes.c_int32.in_dll(self.lib, "tp_model_output_zero_point").value)

    def invoke(self, x: np.ndarray | None) -> np.ndarray:
        """Write ``x`` (None: keep the last input, as ``infer N`` does), invoke, read."""
        if x is not None:
            data = np.ascontiguousarray(x, np.int8).tobytes()
            assert len(data) == self.generated.input_bytes
            ctypes.memmove(self.lib.tp_model_input(), data, len(data))
        self.lib.tp_model_invoke()
        out = np.ctypeslib.as_array(self.lib.tp_model_output(), (self.generated.output_bytes,))
        return out.copy()


def assert_matches_tflite_micro(model: bytes, folder: Path, samples: list[np.ndarray],
                                seed: int) -> HostModel:
    require("gcc", "compile the generated C for the host")
    ours = HostModel(model, folder)
    reference = runtime.Interpreter.from_bytes(model, arena_size=max(10 * len(model), 1 << 20))
    details = [reference.get_input_details(0), reference.get_output_details(0)]
    expected_quantization = []
    for d in details:
        q = d["quantization_parameters"]
        expected_quantization += [np.float32(q["scales"][0]), int(q["zero_points"][0])]
    assert ours.quantization() == tuple(expected_quantization)
    shape = tuple(details[0]["shape"])
    assert ours.sizes() == (int(np.prod(shape)), int(np.prod(details[1]["shape"])),
                            ours.generated.arena.size)
    rng = np.random.default_rng(seed)
    inputs = [*samples, *(rng.integers(-128, 128, shape, dtype=np.int8)
                          for _ in range(RANDOM_INPUTS))]
    outputs = set()
    for run, x in enumerate(inputs):
        reference.set_input(x.reshape(shape), 0)
        reference.invoke()
        expected = reference.get_output(0).reshape(-1)
        np.testing.assert_array_equal(ours.invoke(x), expected, err_msg=f"input {run}")
        np.testing.assert_array_equal(ours.invoke(None), expected, err_msg=f"again {run}")
        outputs.add(expected.tobytes())
    assert len(outputs) > 1, "every input gave the same output: the comparison shows nothing"
    return ours


def suite_samples(suite: str, model: bytes, path: Path | None) -> list[np.ndarray]:
    if path is None or not path.exists():
        return []
    graph = prepare(model)
    details = graph.tensors[graph.inputs[0]]
    s = get_suite(suite)
    return [s.to_tensor(w, details.scale, details.zero_point)
            for w in s.windows_of(path.read_bytes())[:1]]


@pytest.mark.parametrize(("file", "suite", "sample"), REFERENCE)
def test_reference_model_bit_identical(
    models: Path, tmp_path: Path, file: str, suite: str, sample: str | None
) -> None:
    model = (models / file).read_bytes()
    samples = suite_samples(suite, model, models / "samples" / sample if sample else None)
    assert_matches_tflite_micro(model, tmp_path, samples, seed=3)


def test_synthetic_kws_bit_identical(tmp_path: Path) -> None:
    model = synthetic_kws_model()
    sample = MODELS / "samples" / "kws01_sample0.bin"
    assert_matches_tflite_micro(model, tmp_path, suite_samples("kws01", model, sample), seed=5)


# ---- a small graph for the kernels the reference models do not use ------------------------


def graph_model(tensors: list[dict], ops: list[tuple], inputs: list[int],
                outputs: list[int]) -> bytes:
    """A .tflite model from tensor specs (shape, type, scale, zero_point, data) and ops
    (builtin, inputs, outputs, options type, options)."""
    model = S.ModelT()
    model.version, model.buffers = 3, [S.BufferT()]
    graph = S.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = [], [], inputs, outputs
    for n, spec in enumerate(tensors):
        t = S.TensorT()
        t.name, t.shape, t.type = f"t{n}", list(spec["shape"]), spec.get("type", S.TensorType.INT8)
        buffer = S.BufferT()
        if "data" in spec:
            buffer.data = np.frombuffer(spec["data"].tobytes(), np.uint8)
        model.buffers.append(buffer)
        t.buffer = len(model.buffers) - 1
        if "scale" in spec:
            t.quantization = S.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [spec["scale"]], [spec["zp"]]
        graph.tensors.append(t)
    codes = []
    for builtin, op_inputs, op_outputs, options_type, options in ops:
        if builtin not in codes:
            codes.append(builtin)
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(builtin), op_inputs, op_outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        graph.operators.append(op)
    model.operatorCodes = []
    for builtin in codes:
        code = S.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        model.operatorCodes.append(code)
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def small_graph(float_input: bool = False) -> bytes:
    """int8 -> DEQUANTIZE -> float -> QUANTIZE -> ADD (a broadcast constant, RELU) ->
    QUANTIZE (int8 requantisation): float tensors in the arena, float and broadcast arguments."""
    op = S.BuiltinOperator
    shape = (1, 4, 5, 3)
    add = S.AddOptionsT()
    add.fusedActivationFunction = S.ActivationFunctionType.RELU
    tensors = [
        {"shape": shape, "scale": 0.05, "zp": 7},
        {"shape": shape, "type": S.TensorType.FLOAT32},
        {"shape": shape, "scale": 0.04, "zp": -3},
        {"shape": (3,), "scale": 0.02, "zp": 10, "data": np.array([-90, 4, 100], np.int8)},
        {"shape": shape, "scale": 0.06, "zp": -20},
        {"shape": shape, "scale": 0.03, "zp": 5},
    ]
    ops = [
        (op.DEQUANTIZE, [0], [1], 0, None),
        (op.QUANTIZE, [1], [2], 0, None),
        (op.ADD, [2, 3], [4], S.BuiltinOptions.AddOptions, add),
        (op.QUANTIZE, [4], [5], 0, None),
    ]
    if float_input:
        return graph_model(tensors, ops[1:], [1], [5])
    return graph_model(tensors, ops, [0], [5])


def test_small_graph_bit_identical(tmp_path: Path) -> None:
    ours = assert_matches_tflite_micro(small_graph(), tmp_path, [], seed=9)
    source = ours.generated.source.read_text()
    for kernel in ("tp_dequantize_s8_f32", "tp_quantize_f32_s8", "tp_add_broadcast_s8",
                   "tp_requantize_s8"):
        assert f"{kernel}(" in source


# ---- the arena plan -----------------------------------------------------------------------


def assert_valid_plan(model: bytes) -> codegen.ArenaPlan:
    graph = prepare(model)
    plan = codegen.plan_arena(graph)
    allocations = plan.allocations
    for i, a in enumerate(allocations):
        assert a.offset % codegen.ALIGNMENT == 0 and a.offset + a.size <= plan.size
        if a.tensor >= 0:
            assert a.size == graph.tensors[a.tensor].nbytes
        else:  # a kernel's scratch, live at its operator only, as large as it asked
            op = graph.ops[-1 - a.tensor]
            assert a.tensor == codegen.scratch_key(op.index)
            assert (a.first_op, a.last_op) == (op.index, op.index)
            assert [s.nbytes for s in op.args if isinstance(s, Scratch)] == [a.size]
        for b in allocations[i + 1:]:
            live_together = a.first_op <= b.last_op and b.first_op <= a.last_op
            share_bytes = a.offset < b.offset + b.size and b.offset < a.offset + a.size
            assert not (live_together and share_bytes), f"{a} overlaps {b}"
    # Every operand that is not a constant has a place, live at every op that touches it.
    for op in graph.ops:
        for t in (*op.reads, *op.writes):
            if graph.tensors[t].data is None:
                a = plan.of(t)
                assert a.first_op <= op.index <= a.last_op
    # The input survives invocations (infer N on one load), the output until the next one.
    assert (plan.of(graph.inputs[0]).first_op, plan.of(graph.inputs[0]).last_op) == (
        -1, len(graph.ops))
    assert plan.of(graph.outputs[0]).last_op == len(graph.ops)
    assert plan.size <= plan.tensor_bytes
    return plan


@pytest.mark.parametrize(("file", "suite", "sample"), REFERENCE)
def test_arena_plan_is_valid(models: Path, file: str, suite: str, sample: str | None) -> None:
    assert_valid_plan((models / file).read_bytes())


def test_arena_plan_of_a_chain_is_its_two_largest_neighbours() -> None:
    """KWS is a chain of 25x5x64 activations: each op's input and output must both be live, and
    nothing more, so the plan is exactly two of them plus the kept model input (490 bytes,
    aligned to 496) and the pointwise layers' scratch (two rows of 64 inputs widened to
    int16: 256 bytes), where TFLite Micro needs more."""
    plan = assert_valid_plan(synthetic_kws_model())
    assert plan.size == 2 * 25 * 5 * 64 + 496 + 2 * 64 * 2
    assert plan.size < codegen.tflm_arena_bytes(synthetic_kws_model())


def test_arena_plan_keeps_a_skip_connection_alive(models: Path) -> None:
    """ResNet's ADD reads a tensor produced several ops earlier: it must keep its bytes."""
    model = (models / "pretrainedResnet_quant.tflite").read_bytes()
    graph = prepare(model)
    plan = assert_valid_plan(model)
    add = next(op for op in graph.ops if op.name == "ADD")
    spans = [plan.of(t) for t in add.reads if graph.tensors[t].data is None]
    assert any(a.last_op - a.first_op > 1 for a in spans)


# ---- building -----------------------------------------------------------------------------


def kws_file(tmp_path: Path) -> Path:
    """The reference KWS model where the shared folder has it, else the synthetic one."""
    path = MODELS / "kws_ref_model.tflite"
    if path.exists():
        return path
    path = tmp_path / "synthetic_kws.tflite"
    path.write_bytes(synthetic_kws_model())
    return path


LINK_PROBE = """#include "tp_model.h"
volatile int8_t sink;
void probe_entry(void)
{
    tp_model_input()[0] = (int8_t)tp_model_input_zero_point;
    tp_model_invoke();
    sink = tp_model_output()[TP_MODEL_OUTPUT_BYTES - 1];
    for (;;) {
    }
}
"""


def test_arm_build_of_kws(tmp_path: Path) -> None:
    require("arm-none-eabi-gcc", "cross-compile the generated model")
    model_path = kws_file(tmp_path)
    out = tmp_path / "build"
    result = codegen.build(model_path, "sim-m4", out)
    assert result.library == out / "libtp_model.a"
    assert result.library.read_bytes().startswith(b"!<arch>\n")
    # The weights are in flash, the arena (and nothing else) in RAM.
    assert result.text_bytes > result.generated.constant_bytes > 22_000
    assert result.data_bytes == 0 and result.bss_bytes == result.arena_bytes == 16_752
    assert result.tflm_arena_bytes > result.arena_bytes
    table = result.table()
    for number in (result.flash_bytes, result.ram_bytes, result.tflm_arena_bytes):
        assert f"{number:,}" in table
    # The C API the harness links against, for the board's core and hard-float ABI.
    symbols = subprocess.run(["arm-none-eabi-nm", "-g", "--defined-only", str(result.library)],
                             capture_output=True, text=True, check=True).stdout
    for name in ("tp_model_input", "tp_model_output", "tp_model_invoke", "tp_model_input_scale",
                 "tp_model_input_zero_point", "tp_model_output_scale",
                 "tp_model_output_zero_point", "tp_conv2d_s8"):
        assert f" {name}\n" in symbols
    attributes = subprocess.run(["arm-none-eabi-readelf", "-A", str(out / "tp_model.o")],
                                capture_output=True, text=True, check=True).stdout
    assert 'Tag_CPU_name: "7E-M"' in attributes
    assert "Tag_ABI_VFP_args: VFP registers" in attributes
    # The library is self-contained: a bare-metal program using the API links with no libc.
    probe = tmp_path / "probe.c"
    probe.write_text(LINK_PROBE)
    elf = tmp_path / "probe.elf"
    subprocess.run(["arm-none-eabi-gcc", *codegen.arm_flags("cortex-m4f"), "-I", str(out),
                    "-nostdlib", "-Wl,--gc-sections", "-Wl,-e,probe_entry", str(probe),
                    str(result.library), "-lgcc", "-o", str(elf)], check=True)
    assert elf.stat().st_size > result.generated.constant_bytes


@pytest.mark.parametrize(("core", "dsp"), [("cortex-m4f", True), ("cortex-m7f", True),
                                         ("cortex-m33f", True), ("cortex-m0plus", False)])
def test_board_core_chooses_the_dsp_or_the_plain_c_kernels(tmp_path: Path, core: str,
                                                           dsp: bool) -> None:
    """The core in the board file picks the kernels' path at build time: SMLAD on cores with
    the DSP extension, plain C (no DSP instruction at all) on the Cortex-M0+, both built with
    the strict flags."""
    require("arm-none-eabi-gcc", "cross-compile the generated model")
    board = tmp_path / "boards" / "core-probe.toml"
    board.parent.mkdir()
    board.write_text((Path(codegen.__file__).parents[1] / "boards" / "sim-m4.toml").read_text()
                     .replace('core = "cortex-m4f"', f'core = "{core}"'))
    result = codegen.build(kws_file(tmp_path), load_board(str(board)), tmp_path / "build")
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(result.library)],
                             capture_output=True, text=True, check=True).stdout
    used = {m for m in ("smlad", "smlabb", "smlatt", "sxtb16", "sxtab16")
            if f"\t{m}\t" in listing}
    assert used == ({"smlad", "smlabb", "smlatt", "sxtb16", "sxtab16"} if dsp else set())


HOST_MAIN = """#include <stdio.h>
#include "tp_model.h"
int main(void)
{
    int i;
    int8_t *in = tp_model_input();
    for (i = 0; i < TP_MODEL_INPUT_BYTES; ++i) {
        in[i] = (int8_t)((i * 37) % 256 - 128);
    }
    tp_model_invoke();
    for (i = 0; i < TP_MODEL_OUTPUT_BYTES; ++i) {
        printf("%d\\n", tp_model_output()[i]);
    }
    return 0;
}
"""


def test_host_build_links_into_a_program(tmp_path: Path) -> None:
    """The host toolchain's library, linked with a main through tp_model.h alone, computes what
    tflite-micro computes; the reported tflite-micro arena is the exact minimum."""
    require("gcc", "build the generated model for the host")
    model = synthetic_kws_model()
    model_path = tmp_path / "kws.tflite"
    model_path.write_bytes(model)
    out = tmp_path / "build"
    result = codegen.build(model_path, load_board("sim-m4"), out, toolchain="host")
    (tmp_path / "main.c").write_text(HOST_MAIN)
    program = tmp_path / "model"
    subprocess.run(["gcc", "-I", str(out), str(tmp_path / "main.c"), str(result.library),
                    "-o", str(program)], check=True)
    got = [int(v) for v in subprocess.run([str(program)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    x = ((np.arange(490) * 37) % 256 - 128).astype(np.int8).reshape(1, 49, 10, 1)
    reference = runtime.Interpreter.from_bytes(model, arena_size=1 << 20)
    reference.set_input(x, 0)
    reference.invoke()
    assert got == reference.get_output(0).reshape(-1).tolist()
    runtime.Interpreter.from_bytes(model, arena_size=result.tflm_arena_bytes)
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(model, arena_size=result.tflm_arena_bytes - 1)


def test_missing_arm_toolchain_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(codegen.shutil, "which",
                        lambda name: None if name.startswith("arm-") else real_which(name))
    with pytest.raises(codegen.BuildError,
                       match=r"arm-none-eabi-gcc not found.*install gcc-arm-none-eabi and "
                             r"libnewlib-arm-none-eabi \(Debian\)"):
        codegen.build(kws_file(tmp_path), "sim-m4", tmp_path / "out")


def test_unknown_core_is_named(tmp_path: Path) -> None:
    board = dataclasses.replace(load_board("sim-m4"), core="riscv32")
    with pytest.raises(codegen.BuildError, match="core 'riscv32'"):
        codegen.build(kws_file(tmp_path), board, tmp_path / "out")


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(codegen.BuildError, match="cannot read the model .*nope.tflite"):
        codegen.build(tmp_path / "nope.tflite", "sim-m4", tmp_path / "out", toolchain="host")


# ---- models the firmware cannot run -------------------------------------------------------


def mutated_kws(change) -> bytes:
    model = S.ModelT.InitFromPackedBuf(synthetic_kws_model(), 0)
    change(model)
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    def to_max_pool(model: S.ModelT) -> None:
        for code in model.operatorCodes:
            if code.builtinCode == S.BuiltinOperator.AVERAGE_POOL_2D:
                code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.MAX_POOL_2D

    with pytest.raises(KernelModelError, match="operator 9 is MAX_POOL_2D, which the firmware "
                                               "kernels do not implement"):
        codegen.generate(mutated_kws(to_max_pool), tmp_path)
    assert not (tmp_path / "tp_model.c").exists()


def test_unsupported_tensor_type_names_the_op(tmp_path: Path) -> None:
    def int16_weights(model: S.ModelT) -> None:
        graph = model.subgraphs[0]
        graph.tensors[graph.operators[0].inputs[1]].type = S.TensorType.INT16

    with pytest.raises(KernelModelError, match=r"operator 0 \(CONV_2D\): .*INT16"):
        codegen.generate(mutated_kws(int16_weights), tmp_path)


def test_float_input_does_not_fit_the_api(tmp_path: Path) -> None:
    with pytest.raises(KernelModelError, match="model input 't1' is FLOAT32; the firmware API "
                                               "takes int8 inputs"):
        codegen.generate(small_graph(float_input=True), tmp_path)


def test_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        codegen.generate(b"\x00" * 64, tmp_path)


# ---- models the board cannot hold ---------------------------------------------------------


@pytest.mark.parametrize("memory, needed", [
    ("flash_bytes = 16_384\nram_bytes = 1_000_000", "weights and constants take [\\d,]+ bytes "
                                                    "of flash, the board has 16,384"),
    ("flash_bytes = 1_000_000\nram_bytes = 4_096", "tensor arena takes 16,752 bytes of RAM, "
                                                   "the board has 4,096"),
])
def test_model_that_does_not_fit_the_board_is_refused_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: str, needed: str
) -> None:
    require("gcc", "build the generated model for the host")
    boards = tmp_path / "boards"
    boards.mkdir()
    text = (Path(codegen.__file__).parents[1] / "boards" / "sim-m4.toml").read_text()
    text = text.replace('name = "sim-m4"', 'name = "tiny-mcu"')
    text = re.sub(r"flash_bytes = .*\nram_bytes = .*", memory, text)
    (boards / "tiny-mcu.toml").write_text(text)
    monkeypatch.setenv("TINYPOWER_BOARDS", str(boards))
    model_path = tmp_path / "kws.tflite"
    model_path.write_bytes(synthetic_kws_model())
    out = tmp_path / "out"
    with pytest.raises(codegen.MemoryFitError,
                       match=f"kws.tflite does not fit board tiny-mcu: its {needed} "
                             r"\(\[memory\] .*tiny-mcu.toml\)") as exc:
        codegen.build(model_path, "tiny-mcu", out, toolchain="host")
    assert "use a board with more" in str(exc.value)
    assert not list(out.glob("*.o"))  # refused before compiling
